//! Property tests: no input makes the parser or the loader panic, and a
//! parsed file printed back parses to the same tree.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use postern_conf::{Config, parse};
use proptest::prelude::*;

/// Fragments that make the grammar's interesting cases likely.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Domain".to_owned()),
        Just("Binding_Group".to_owned()),
        Just("Binding".to_owned()),
        Just("Host".to_owned()),
        Just("ESMTP_Listener".to_owned()),
        Just("Listen".to_owned()),
        Just("Auth".to_owned()),
        Just("Gateway".to_owned()),
        Just("Routes".to_owned()),
        Just("include".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("=".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just("/".to_owned()),
        Just("/*".to_owned()),
        Just("*/".to_owned()),
        Just("#".to_owned()),
        Just("\n".to_owned()),
        Just("\"smtp://a.example:25?pref=1&auth=x\"".to_owned()),
        Just("\"[::1]:2525\"".to_owned()),
        Just("/^a\\.b$/".to_owned()),
        "[a-z_.0-9]{1,8}",
        "\"[ -~]{0,8}\"",
    ]
}

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..40).prop_map(|v| v.join(" "))
}

fn quote(raw: &str) -> String {
    format!("\"{}\"", raw.replace('\\', "\\\\").replace('"', "\\\""))
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9.:_@+-]{1,10}",
        "[ -~]{0,10}".prop_map(|s| quote(&s)),
    ]
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9_]{0,10}".prop_filter("not the include keyword", |n| {
        !n.eq_ignore_ascii_case("include")
    })
}

/// Well-formed documents: options, lists, includes and nested stanzas.
fn document() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        (name(), scalar()).prop_map(|(k, v)| format!("{k} = {v}")),
        (name(), prop::collection::vec(scalar(), 0..4))
            .prop_map(|(k, v)| format!("{k} = (\n {} )", v.join("\n "))),
        scalar().prop_map(|p| format!("include {p}")),
    ];
    let item = leaf.prop_recursive(3, 40, 6, |inner| {
        (
            name(),
            prop_oneof![
                Just(String::new()),
                scalar(),
                "[a-z.^$]{1,6}".prop_map(|r| format!("/{r}/")),
            ],
            prop::collection::vec(inner, 0..6),
        )
            .prop_map(|(n, label, body)| format!("{n} {label} {{ # c\n{}\n}}", body.join("\n")))
    });
    prop::collection::vec(item, 0..8).prop_map(|v| v.join("\n/* block */\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_text_never_panics(text in any::<String>()) {
        let _ = parse(&text);
        let _ = Config::from_text(&text, Path::new("/nonexistent/p.conf"));
    }

    #[test]
    fn grammar_soup_never_panics(text in soup()) {
        let _ = Config::from_text(&text, Path::new("/nonexistent/p.conf"));
    }

    #[test]
    fn well_formed_documents_parse_and_round_trip(text in document()) {
        let doc = parse(&text).map_err(|e| TestCaseError::fail(format!("{e:?} in {text}")))?;
        let printed = doc.to_string();
        let again = parse(&printed).expect("printed text parses");
        prop_assert_eq!(again.to_string(), printed);
    }

    #[test]
    fn printing_round_trips(text in soup()) {
        if let Ok(doc) = parse(&text) {
            let printed = doc.to_string();
            let again = parse(&printed).expect("printed text parses");
            prop_assert_eq!(again.to_string(), printed);
            prop_assert_eq!(again.items.len(), doc.items.len());
        }
    }
}
