//! Every kind of broken configuration gives an error naming file:line:col,
//! and all errors of a file set are collected in one pass.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::path::Path;

use postern_conf::Config;
use tempfile::TempDir;

/// Writes `files` into a fresh directory, loads the first, and returns the
/// errors as text with the directory replaced by `DIR`.
fn errors(files: &[(&str, &str)]) -> Vec<String> {
    let dir = TempDir::new().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    let top = dir.path().join(files[0].0);
    let errs = Config::load(&top).expect_err("the configuration should be invalid");
    let prefix = dir.path().display().to_string();
    errs.iter()
        .map(|e| e.to_string().replace(&prefix, "DIR"))
        .collect()
}

fn one(text: &str) -> String {
    let e = errors(&[("p.conf", text)]);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.into_iter().next().unwrap()
}

#[test]
fn unclosed_brace() {
    assert_eq!(
        one("Gateway = 10.0.0.1\nDomain example.com {\n  Delivery_Method = LMTP\n"),
        "DIR/p.conf:2:1: expected \"}\" closing this stanza, found end of file"
    );
}

#[test]
fn unterminated_string() {
    let e = one("Hostname = mx.example.com\nGateway = \"10.0.0.1\n");
    assert!(e.starts_with("DIR/p.conf:2:11: unterminated string"), "{e}");
}

#[test]
fn unknown_option_with_suggestion() {
    assert_eq!(
        one("Domain example.com {\n    Gatway = 10.0.0.1\n}\n"),
        "DIR/p.conf:2:5: unknown option \"Gatway\" (did you mean \"Gateway\"?)"
    );
}

#[test]
fn option_in_the_wrong_scope() {
    assert_eq!(
        one("Binding b1 {\n  Routes = ( \"__mx__\" )\n}\n"),
        "DIR/p.conf:2:3: option \"Routes\" is not valid in a Binding stanza (valid in: global, Domain)"
    );
    let e = one("Domain x.example { Relay_Domains = ( a.example ) }");
    assert!(
        e.starts_with("DIR/p.conf:1:20: option \"Relay_Domains\" is not valid in a Domain stanza"),
        "{e}"
    );
}

#[test]
fn gateway_and_routes_in_one_scope() {
    assert_eq!(
        one("Domain d.example {\n  Gateway = 10.0.0.1\n  Routes = ( __mx__ )\n}\n"),
        "DIR/p.conf:3:3: \"Gateway\" and \"Routes\" are both set in this scope (the other at DIR/p.conf:2:3); use one"
    );
}

#[test]
fn gateway_and_routes_in_different_scopes_are_fine() {
    let dir = TempDir::new().unwrap();
    let p = dir.path().join("ok.conf");
    fs::write(
        &p,
        "Routes = ( __mx__ )\nDomain d.example { Gateway = 10.0.0.1 }\n",
    )
    .unwrap();
    Config::load(&p).unwrap();
}

#[test]
fn bad_route_url() {
    assert_eq!(
        one("Routes = (\n  \"__mx__\"\n  \"smtp://relay.example:25?port=26\"\n)\n"),
        "DIR/p.conf:3:3: invalid value for \"Routes\": the port is given both as \":PORT\" and as \"port=\"; give it once"
    );
    let e = one("Routes = ( \"smtp://relay.example?prf=1\" )");
    assert!(
        e.starts_with(
            "DIR/p.conf:1:12: invalid value for \"Routes\": unknown route parameter \"prf\""
        ),
        "{e}"
    );
}

#[test]
fn missing_include() {
    let e = one("Hostname = a.example\n  include \"conf.d/missing.conf\"\n");
    assert!(
        e.starts_with("DIR/p.conf:2:11: cannot read DIR/conf.d/missing.conf:"),
        "{e}"
    );
}

#[test]
fn include_cycle() {
    let e = errors(&[
        ("p.conf", "include \"q.conf\"\n"),
        ("q.conf", "Hostname = a.example\ninclude \"p.conf\"\n"),
    ]);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(
        e[0],
        "DIR/q.conf:2:9: include cycle: DIR/p.conf is already being read"
    );
}

#[test]
fn unknown_auth_name() {
    assert_eq!(
        one("Routes = ( \"smtps://relay.example?auth=relay9\" )\n"),
        "DIR/p.conf:1:10: auth=relay9 names no Auth stanza (define: Auth relay9 { Type = PLAIN User = \"...\" Password = \"...\" })"
    );
}

#[test]
fn bad_regex() {
    let e = one("Domain /exa(mple/ { }\n");
    assert!(
        e.starts_with("DIR/p.conf:1:8: invalid regex /exa(mple/:"),
        "{e}"
    );
}

#[test]
fn bad_values_point_at_the_value_or_the_list_item() {
    assert_eq!(
        one("Max_Outbound_Connections = lots\n"),
        "DIR/p.conf:1:28: invalid value for \"Max_Outbound_Connections\": \"lots\" is not a whole number"
    );
    let e = one(
        "ESMTP_Listener {\n  Listen \"127.0.0.1:2525\" { }\n  Relay_Hosts = ( \"127.0.0.0/8\"\n    \"10.0.0.0/33\" )\n}\n",
    );
    assert!(
        e.starts_with("DIR/p.conf:4:5: invalid value for \"Relay_Hosts\""),
        "{e}"
    );
    let e = one("Gateway = ( a.example b.example )\n");
    assert!(e.contains("expected one value"), "{e}");
    let e = one("Relay_Hosts = ( 127.0.0.0/8 )\n");
    assert!(e.contains("must be double-quoted"), "{e}");
    let e = one("Gateway = fe80::a00\n");
    assert!(e.contains("brackets"), "{e}");
}

#[test]
fn duplicate_option_in_one_scope() {
    assert_eq!(
        one(
            "Domain a.example { Retry_Interval = 1 }\nDomain a.example {\n  retry_interval = 2\n}\n"
        ),
        "DIR/p.conf:3:3: option \"Retry_Interval\" is already set in this scope at DIR/p.conf:1:20"
    );
}

#[test]
fn stanzas_in_the_wrong_place_or_unknown() {
    assert_eq!(
        one("Binding b { Binding_Group g { } }\n"),
        "DIR/p.conf:1:13: stanza \"Binding_Group\" is not allowed in a Binding stanza"
    );
    assert_eq!(
        one("Bindng b { }\n"),
        "DIR/p.conf:1:1: unknown stanza \"Bindng\" (did you mean \"Binding\"?)"
    );
    assert_eq!(
        one("Binding { }\n"),
        "DIR/p.conf:1:1: stanza \"Binding\" needs a label"
    );
    assert_eq!(
        one("Resolver x { }\n"),
        "DIR/p.conf:1:1: stanza \"Resolver\" takes no label"
    );
    assert!(one("Binding /b/ { }\n").contains("only a Domain stanza takes a /regex/ label"));
    let e = one("Binding_Group g1 { Binding b { } }\nBinding_Group g2 {\n  Binding b { }\n}\n");
    assert!(
        e.starts_with("DIR/p.conf:3:11: binding \"b\" is already in binding group \"g1\""),
        "{e}"
    );
}

#[test]
fn listener_and_auth_stanzas_are_checked() {
    let e = one("ESMTP_Listener { Listen \"127.0.0.1\" { } }\n");
    assert!(
        e.starts_with("DIR/p.conf:1:25: invalid value for \"Listen\""),
        "{e}"
    );
    let e = one("ESMTP_Listener { Relay_Hosts = ( ::1 ) }\n");
    assert!(e.contains("has no Listen address"), "{e}");
    let e = one("ESMTP_Listener { Listen \"[::1]:25\" { TLS_Key = k.pem } }\n");
    assert!(e.contains("TLS_Certificate and TLS_Key go together"), "{e}");
    let e = one("ESMTP_Listener { Default_Binding = b9\n Listen \"[::1]:25\" { } }\n");
    assert!(e.contains("binding \"b9\", which is not configured"), "{e}");
    let e = one("Auth r { Password = x }\n");
    assert_eq!(e, "DIR/p.conf:1:1: Auth r: User is required");
    let e = one("Auth r { User = u }\n");
    assert!(e.ends_with("Password or Password_File is required"), "{e}");
}

#[test]
fn all_errors_of_all_files_come_in_one_pass() {
    let e = errors(&[
        (
            "p.conf",
            "Gatway = 1.2.3.4\ninclude \"conf.d\"\nBinding b { Routes = ( __mx__ ) }\n",
        ),
        ("conf.d/10-a.conf", "Max_Retries = often\n"),
        ("conf.d/20-b.conf", "Domain x.example {\n  TLS = always\n"),
        ("conf.d/.hidden.conf", "this is not read\n"),
    ]);
    assert_eq!(
        e,
        vec![
            "DIR/p.conf:1:1: unknown option \"Gatway\" (did you mean \"Gateway\"?)".to_owned(),
            "DIR/conf.d/10-a.conf:1:15: invalid value for \"Max_Retries\": \"often\" is not a whole number".into(),
            "DIR/conf.d/20-b.conf:1:1: expected \"}\" closing this stanza, found end of file".into(),
            "DIR/p.conf:3:13: option \"Routes\" is not valid in a Binding stanza (valid in: global, Domain)".into(),
        ]
    );
}

#[test]
fn invalid_utf8_is_located() {
    let dir = TempDir::new().unwrap();
    let p = dir.path().join("bin.conf");
    fs::write(&p, b"Hostname = a.example\nGateway = \"\xff\"\n").unwrap();
    let e = Config::load(&p).unwrap_err().to_string();
    assert!(e.ends_with("bin.conf:2:12: invalid UTF-8"), "{e}");
}

#[test]
fn includes_read_directories_in_name_order_relative_to_the_including_file() {
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("etc/conf.d")).unwrap();
    fs::write(
        root.join("etc/main.conf"),
        "Binding b {\n  include \"conf.d\"\n}\nSpool_Dir = spool\n",
    )
    .unwrap();
    fs::write(
        root.join("etc/conf.d/20-domain.conf"),
        "Domain z.example { Idle_Timeout = 9 }\n",
    )
    .unwrap();
    fs::write(root.join("etc/conf.d/10-gw.conf"), "Gateway = 10.1.1.1\n").unwrap();
    let config = Config::load(root.join("etc/main.conf")).unwrap();
    let names: Vec<String> = config
        .files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["main.conf", "10-gw.conf", "20-domain.conf"]);
    // The included options land in the including stanza's scope.
    assert!(
        config.bindings["b"]
            .options
            .get(postern_conf::Directive::Gateway)
            .is_some()
    );
    assert_eq!(config.bindings["b"].domains.iter().count(), 1);
    // Relative paths resolve against the directory of the setting file.
    let spool = config
        .global
        .get(postern_conf::Directive::SpoolDir)
        .unwrap();
    assert_eq!(
        spool.value,
        postern_conf::Value::Path(root.join("etc/spool"))
    );
    assert!(Path::new(&root.join("etc")).is_dir());
}

#[test]
fn reply_rules_need_a_match_and_an_effect_and_good_values() {
    let e = one("Reply_Rule quota {\n  Class = rate_limited\n}\n");
    assert!(e.starts_with("DIR/p.conf:1:1: "), "{e}");
    assert!(
        e.contains("Reply_Rule quota: Code, Match or For_Class is required"),
        "{e}"
    );
    let e = one("Reply_Rule quota {\n  Match = \"/quota/\"\n}\n");
    assert!(
        e.contains("Reply_Rule quota: Class or Action is required"),
        "{e}"
    );
    let e = one("Reply_Rule quota {\n  Match = \"/(quota/\"\n  Action = bounce\n}\n");
    assert!(e.starts_with("DIR/p.conf:2:11: "), "{e}");
    assert!(e.contains("bad regular expression"), "{e}");
    let e = one("Reply_Rule quota {\n  Code = \"6.1.1\"\n  Class = spam_block\n}\n");
    assert!(e.starts_with("DIR/p.conf:2:10: "), "{e}");
    let e = one("Reply_Rule quota {\n  Code = \"5.1.1\"\n  Class = spamm\n}\n");
    assert!(e.starts_with("DIR/p.conf:3:11: "), "{e}");
    let e = one("Domain example.com {\n  Reply_Rule x {\n  }\n}\n");
    assert!(e.starts_with("DIR/p.conf:2:3: "), "{e}");
}

#[test]
fn milter_stanzas_and_spam_actions_are_checked() {
    let e = errors(&[(
        "p.conf",
        "Milter rspamd { Timeout = 3 }\n\
         Inbound_Milters = ( \"rspamd\" \"clamav\" )\n\
         Domain example.com {\n  Spam_High_Action = quarantine\n}\n\
         Milter other { Address = \"127.0.0.1:11332\" On_Failure = later }\n\
         Spam_Low_Score = lots\n",
    )]);
    assert_eq!(
        e,
        [
            "DIR/p.conf:6:57: invalid value for \"On_Failure\": \"later\" is not one of: tempfail, accept",
            "DIR/p.conf:7:18: invalid value for \"Spam_Low_Score\": \"lots\" is not a score (a decimal number such as 7.5)",
            "DIR/p.conf:1:1: Milter rspamd: Address is required",
            "DIR/p.conf:2:1: invalid value for \"Inbound_Milters\": \"clamav\" names no Milter stanza",
            "DIR/p.conf:4:3: a quarantine action needs Spam_Quarantine (the address quarantined mail goes to)",
        ]
    );
}
