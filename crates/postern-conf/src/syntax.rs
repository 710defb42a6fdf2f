//! The syntax tree of one configuration file, before any meaning is given to
//! it, and its canonical printer.
//!
//! Printing a [`Document`] gives text that parses back to the same tree (the
//! fuzz target and the property tests hold the parser to that), so tools can
//! rewrite a file without changing what it says.

use std::fmt::{self, Write as _};

/// A 1-based line and column inside one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub col: u32,
}

/// A value and the place where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it starts.
    pub pos: Pos,
}

/// One parsed file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Document {
    /// The top-level items in file order.
    pub items: Vec<Item>,
}

/// A line of configuration: an option, a stanza or an include.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `Key = value` or `Key = ( a b c )`.
    Option {
        /// The option name as written.
        key: Spanned<String>,
        /// Its value.
        value: Value,
    },
    /// `Name [label] { items }`.
    Stanza {
        /// The stanza name as written.
        name: Spanned<String>,
        /// The label, if there is one.
        label: Option<Spanned<Label>>,
        /// The items inside the braces.
        items: Vec<Item>,
    },
    /// `include "path"`.
    Include {
        /// The path as written.
        path: Spanned<String>,
    },
}

/// The right-hand side of an option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// One bare or quoted value (quoting carries no meaning once lexed).
    Scalar(Spanned<String>),
    /// `( a b c )`: the position of the opening parenthesis and the items.
    List(Pos, Vec<Spanned<String>>),
}

impl Value {
    /// Where the value starts.
    pub fn pos(&self) -> Pos {
        match self {
            Value::Scalar(s) => s.pos,
            Value::List(p, _) => *p,
        }
    }
}

/// A stanza label: a name (bare or quoted) or a `/regex/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Label {
    /// A name such as a domain, binding or listen address.
    Name(String),
    /// A regular expression, written `/.../` (only `Domain` accepts one).
    Regex(String),
}

fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn print_items(out: &mut String, items: &[Item], depth: usize) {
    for item in items {
        for _ in 0..depth {
            out.push_str("  ");
        }
        match item {
            Item::Option { key, value } => {
                out.push_str(&key.value);
                out.push_str(" = ");
                match value {
                    Value::Scalar(s) => quote(out, &s.value),
                    Value::List(_, list) => {
                        out.push('(');
                        for v in list {
                            out.push(' ');
                            quote(out, &v.value);
                        }
                        out.push_str(" )");
                    }
                }
            }
            Item::Include { path } => {
                out.push_str("include ");
                quote(out, &path.value);
            }
            Item::Stanza { name, label, items } => {
                out.push_str(&name.value);
                match label.as_ref().map(|l| &l.value) {
                    Some(Label::Name(n)) => {
                        out.push(' ');
                        quote(out, n);
                    }
                    Some(Label::Regex(r)) => {
                        let _ = write!(out, " /{}/", r.replace('/', "\\/"));
                    }
                    None => {}
                }
                out.push_str(" {\n");
                print_items(out, items, depth + 1);
                for _ in 0..depth {
                    out.push_str("  ");
                }
                out.push('}');
            }
        }
        out.push('\n');
    }
}

impl fmt::Display for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        print_items(&mut out, &self.items, 0);
        f.write_str(&out)
    }
}
