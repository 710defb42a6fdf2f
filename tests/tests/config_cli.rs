//! The real `postern` binary on the shipped configurations and on broken
//! ones: exit codes, file:line:col on stderr, and the effective view.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::path::PathBuf;

use postern_e2e::{postern, workspace_root};
use tempfile::TempDir;

fn shipped_configs() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = vec![root.join("conf/postern.conf")];
    let mut examples: Vec<PathBuf> = fs::read_dir(root.join("conf/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    examples.sort();
    files.extend(examples);
    files
}

#[test]
fn every_shipped_configuration_is_valid() {
    let files = shipped_configs();
    assert!(
        files.len() >= 8,
        "the default and one example per seed scenario: {files:?}"
    );
    for file in files {
        let out = postern(&["check-config", file.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", file.display());
        assert!(stdout.contains(": OK ("), "{stdout}");
    }
}

#[test]
fn check_config_defaults_to_the_shipped_file() {
    let out = postern(&["check-config"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "conf/postern.conf: OK (1 file read)\n"
    );
}

/// Writes `text` as `broken.conf` (plus `extra` files) and runs
/// check-config on it; returns stderr with the directory shown as `DIR`.
fn check_broken(text: &str, extra: &[(&str, &str)]) -> String {
    let dir = TempDir::new().unwrap();
    fs::write(dir.path().join("broken.conf"), text).unwrap();
    for (name, body) in extra {
        fs::write(dir.path().join(name), body).unwrap();
    }
    let file = dir.path().join("broken.conf");
    let out = postern(&["check-config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    String::from_utf8_lossy(&out.stderr).replace(&dir.path().display().to_string(), "DIR")
}

#[test]
fn broken_files_exit_2_naming_file_line_and_column() {
    let cases: &[(&str, &str)] = &[
        (
            "Gateway = 10.10.10.50\nDomain local.example.com {\n  Gateway = 10.10.10.20\n",
            "DIR/broken.conf:2:1: expected \"}\" closing this stanza, found end of file",
        ),
        (
            "Hostname = \"mx.example.com\n",
            "DIR/broken.conf:1:12: unterminated string",
        ),
        (
            "# comment\nMax_Outbound_Conections = 4\n",
            "DIR/broken.conf:2:1: unknown option \"Max_Outbound_Conections\" (did you mean \"Max_Outbound_Connections\"?)",
        ),
        (
            "Binding b {\n  Host_Failure_Retry = 60\n}\n",
            "DIR/broken.conf:2:3: option \"Host_Failure_Retry\" is not valid in a Binding stanza (valid in: global, Domain)",
        ),
        (
            "Gateway = 10.0.0.1\nRoutes = ( \"__mx__\" )\n",
            "DIR/broken.conf:2:1: \"Gateway\" and \"Routes\" are both set in this scope (the other at DIR/broken.conf:1:1); use one",
        ),
        (
            "Routes = ( \"smtp://relay.example?pref=high\" )\n",
            "DIR/broken.conf:1:12: invalid value for \"Routes\": pref=high: expected a whole number",
        ),
        (
            "\n\n   include \"missing.conf\"\n",
            "DIR/broken.conf:3:12: cannot read DIR/missing.conf: No such file or directory",
        ),
    ];
    for (text, expected) in cases {
        let stderr = check_broken(text, &[]);
        assert!(
            stderr.starts_with(expected),
            "expected {expected:?}\n got {stderr:?}"
        );
        assert!(stderr.ends_with("DIR/broken.conf: 1 error\n"), "{stderr}");
    }
}

#[test]
fn every_error_is_listed_in_one_run() {
    let stderr = check_broken(
        "Gatway = 10.0.0.1\ninclude \"more.conf\"\nDomain d.example { TLS = sometimes }\n",
        &[("more.conf", "Binding b { Relay_Domains = ( x.example ) }\n")],
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    assert!(lines[0].starts_with("DIR/broken.conf:1:1: unknown option \"Gatway\""));
    assert!(lines[1].starts_with("DIR/more.conf:1:13: option \"Relay_Domains\" is not valid"));
    assert!(lines[2].starts_with("DIR/broken.conf:3:26: invalid value for \"TLS\""));
    assert_eq!(lines[3], "DIR/broken.conf: 3 errors");
}

#[test]
fn a_missing_file_exits_2() {
    let out = postern(&["check-config", "/nonexistent/postern.conf"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("/nonexistent/postern.conf: cannot read /nonexistent/postern.conf:"),
        "{stderr}"
    );
}

#[test]
fn effective_shows_each_value_and_where_it_came_from() {
    let out = postern(&[
        "config",
        "effective",
        "--domain",
        "LOCAL.example.com",
        "conf/examples/domain-gateway-lmtp.conf",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} line in\n{stdout}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("Delivery_Method"),
        "Delivery_Method = LMTP # Domain \"local.example.com\" (conf/examples/domain-gateway-lmtp.conf:12:3)"
    );
    assert_eq!(
        line("Gateway"),
        "Gateway = \"10.10.10.20\" # Domain \"local.example.com\" (conf/examples/domain-gateway-lmtp.conf:10:3)"
    );
    assert_eq!(
        line("Max_Outbound_Connections"),
        "Max_Outbound_Connections = 32 # default"
    );
    assert!(
        stdout.contains("# Bind_Address"),
        "unset options are commented out"
    );
    assert!(stdout.contains("# routing: Gateway \"10.10.10.20\" from Domain"));

    let out = postern(&[
        "config",
        "effective",
        "--domain",
        "other.example",
        "conf/examples/domain-gateway-lmtp.conf",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("# routing: Gateway \"10.10.10.50\" from global"),
        "{stdout}"
    );
}

#[test]
fn effective_masks_passwords_and_refuses_unknown_bindings() {
    let conf = "conf/examples/round-robin-gateways-auth-tls.conf";
    let out = postern(&["config", "effective", "--domain", "partner.example", conf]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Outbound_SMTP_AUTH_Pass"), "{stdout}");
    assert!(!stdout.contains("change-me-too"), "{stdout}");
    assert!(stdout.contains("\"********\""));

    let out = postern(&[
        "config",
        "effective",
        "--domain",
        "a.example",
        "--binding",
        "nope",
        conf,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("binding \"nope\" is not configured"));
}

#[test]
fn the_config_reference_document_matches_the_code() {
    let out = postern(&["config", "reference"]);
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let committed = fs::read_to_string(workspace_root().join("docs/config-reference.md")).unwrap();
    assert!(
        generated == committed,
        "docs/config-reference.md is out of date: run `cargo run -q -p postern -- config reference > docs/config-reference.md`"
    );
}
