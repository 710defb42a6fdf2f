//! The configuration reference, generated from the directive table.
//!
//! `docs/config-reference.md` is this text; a test fails when the file and
//! the table differ, so the reference always says what the code accepts.

use std::fmt::Write as _;

use crate::resolve::SCOPE_ORDER;
use crate::schema::{DIRECTIVES, DefaultValue, Section};

const PREAMBLE: &str = "\
# Postern configuration reference

Generated from the directive table in `crates/postern-conf/src/schema.rs`
by `postern config reference`; do not edit by hand (a test compares them).

Syntax: Momentum's `ecelerity.conf`. `Key = value`; lists `Key = ( a \"b c\" )`;
comments `#` and `/* */`; stanzas `Name label { ... }` (repeated stanzas
merge); `include \"file-or-directory\"` (relative to the including file).
Option and stanza names are case-insensitive. A value containing
whitespace or any of `# / \" ' = { } [ ] ( )` must be double-quoted.
Relative paths resolve against the directory of the file that sets them.

Stanzas: `Binding_Group g { }` (top level); `Binding b { }` (top level or in
a group); `Domain d { }` or `Domain /regex/ { }` (top level, binding, group;
exact names beat regexes, regexes are tried in the order written, matched
case-insensitively and unanchored); `Host h { }` (top level, binding,
group; the most specific one applies whole, without inheriting);
`ESMTP_Listener { Listen \"addr:port\" { } }`; `Resolver { }`; `Auth name { }`;
`Cluster { }` and `HTTP_Listener { Listen \"addr:port\" { } }` (top level).

## Which scope's value wins

For mail of binding `b` (in binding group `g`) to domain `d`, the first of
these scopes that sets an option wins; then the default applies. Mail not
assigned to a binding is in the binding `default`.

";

/// The whole reference as Markdown.
pub fn reference_markdown() -> String {
    let mut out = String::from(PREAMBLE);
    for (i, level) in SCOPE_ORDER.iter().enumerate() {
        let _ = writeln!(out, "{}. {}", i + 1, level_text(*level));
    }
    let mut sections: Vec<Section> = DIRECTIVES.iter().map(|s| s.section).collect();
    sections.sort();
    sections.dedup();
    for section in sections {
        let _ = write!(out, "\n## {}\n\n", section.title());
        let _ = writeln!(out, "| Option | Scopes | Type | Default | Meaning |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        for spec in DIRECTIVES.iter().filter(|s| s.section == section) {
            let default = match spec.default {
                DefaultValue::None => "unset".to_owned(),
                DefaultValue::Value("") => "empty".to_owned(),
                DefaultValue::Value(v) => format!("`{v}`"),
                DefaultValue::Computed(how) => how.to_owned(),
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                spec.name,
                spec.scopes,
                spec.kind.describe().replace('|', "\\|"),
                default,
                spec.help.replace('|', "\\|"),
            );
        }
    }
    out
}

fn level_text(level: crate::resolve::Level) -> &'static str {
    use crate::resolve::Level;
    match level {
        Level::DomainInGroupedBinding => "`Domain d` inside `Binding b` inside `Binding_Group g`",
        Level::DomainInBinding => "`Domain d` inside `Binding b`",
        Level::DomainInGroup => "`Domain d` inside `Binding_Group g`",
        Level::Binding => "`Binding b`",
        Level::Group => "`Binding_Group g`",
        Level::Domain => "top-level `Domain d`",
        Level::Global => "global",
    }
}
