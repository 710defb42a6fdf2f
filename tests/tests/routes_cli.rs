//! `postern routes`: the real binary resolving against the testkit's DNS
//! server, checked as a person and a script would read it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use postern_e2e::postern;
use postern_testkit::dns::DnsServer;
use tempfile::TempDir;

fn zone() -> DnsServer {
    DnsServer::builder()
        .mx("example.com", 10, "mx1.example.com")
        .mx("example.com", 20, "mx2.example.com")
        .a("mx1.example.com", "127.0.0.2".parse().unwrap())
        .a("mx2.example.com", "127.0.0.3".parse().unwrap())
        .a("my.local.smart.host", "127.0.0.5".parse().unwrap())
        .null_mx("nullmx.example")
        .servfail("broken.example")
        .start()
        .unwrap()
}

/// A config file using `server`, in a directory that lives as long as the
/// returned guard.
fn config(server: &DnsServer, body: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("postern.conf");
    let text = format!(
        "Resolver {{ Nameservers = ( \"{}\" ) Timeout = 1 }}\n{body}\n",
        server.addr()
    );
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

const SEED: &str = r#"
Auth relay { Type = PLAIN User = "u" Password = "secret-password" }
Host "mx1.example.com" { Max_Outbound_Connections = 4 }
Domain "example.com" {
  Max_Outbound_Connections = 12
  Routes = ( "smtp://my.local.smart.host?pref=1&auth=relay&tls=required" "__mx__"
             "smtp://old.relay.example?status=disabled" )
}"#;

#[test]
fn routes_prints_levels_hosts_and_why() {
    let server = zone();
    let (_dir, file) = config(&server, SEED);
    let out = postern(&["routes", "example.com", "--config", file.to_str().unwrap()]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "routes for example.com (binding default)");
    assert!(
        lines[1].starts_with("decided by: Routes in Domain \"example.com\" (")
            && lines[1].ends_with("postern.conf:7:3)"),
        "{}",
        lines[1]
    );
    assert_eq!(
        lines[2],
        "queue limit: 12 connections (Max_Outbound_Connections)"
    );
    assert!(lines[3].starts_with("refresh: in "), "{}", lines[3]);
    let header: Vec<&str> = lines[5]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "LEVEL",
            "HOST",
            "ADDRESS",
            "PROTOCOL",
            "TLS",
            "VERIFY",
            "AUTH",
            "HOST LIMIT",
            "VIA"
        ]
    );
    let rows: Vec<Vec<&str>> = lines[6..9]
        .iter()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        rows[0],
        [
            "1",
            "my.local.smart.host",
            "127.0.0.5:25",
            "ESMTP",
            "required",
            "no",
            "Auth relay",
            "-",
            "smtp://my.local.smart.host?pref=1&tls=required&auth=relay"
        ]
    );
    assert_eq!(rows[1][..3], ["2", "mx1.example.com", "127.0.0.2:25"]);
    assert_eq!(rows[1][7..], ["4", "__mx__ (MX 10)"]);
    assert_eq!(rows[2][..3], ["3", "mx2.example.com", "127.0.0.3:25"]);
    assert_eq!(lines[10], "left out:");
    assert_eq!(
        lines[11],
        "  smtp://old.relay.example?status=disabled: status=disabled"
    );
    assert!(!stdout.contains("secret-password"));
}

#[test]
fn routes_json_is_the_same_table() {
    let server = zone();
    let (_dir, file) = config(&server, SEED);
    let out = postern(&[
        "routes",
        "example.com",
        "--config",
        file.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["domain"], "example.com");
    assert_eq!(v["queue_limit"], 12);
    assert!(v["refresh_in_seconds"].as_u64().unwrap() <= 300);
    let levels = v["levels"].as_array().unwrap();
    let summary: Vec<(u64, &str, &str, u64)> = levels
        .iter()
        .flat_map(|l| {
            l["hosts"].as_array().unwrap().iter().map(move |h| {
                (
                    l["level"].as_u64().unwrap(),
                    h["name"].as_str().unwrap(),
                    h["address"].as_str().unwrap(),
                    h["port"].as_u64().unwrap(),
                )
            })
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "my.local.smart.host", "127.0.0.5", 25),
            (2, "mx1.example.com", "127.0.0.2", 25),
            (3, "mx2.example.com", "127.0.0.3", 25),
        ]
    );
    assert_eq!(levels[0]["hosts"][0]["auth"], "Auth relay");
    assert_eq!(levels[1]["hosts"][0]["host_limit"], 4);
    assert_eq!(v["left_out"][0]["why"], "status=disabled");
}

#[test]
fn routes_for_a_gateway_on_an_ipv6_literal() {
    let server = zone();
    let (_dir, file) = config(&server, r#"Gateway = "[::1]:2601" Delivery_Method = LMTP"#);
    let out = postern(&["routes", "any.example", "--config", file.to_str().unwrap()]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("decided by: Gateway in global ("),
        "{stdout}"
    );
    assert!(stdout.contains("refresh: never (no DNS names)"), "{stdout}");
    let row = stdout.lines().nth(6).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[..4], ["0", "::1", "[::1]:2601", "LMTP"]);
}

#[test]
fn routes_exits_1_naming_the_failure_and_its_class() {
    let server = zone();
    let (_dir, file) = config(&server, "");
    let file = file.to_str().unwrap();
    let cases = [
        ("nullmx.example", "Null MX", "550 5.1.10, permanent"),
        ("nowhere.example", "NXDOMAIN", "550 5.1.2, permanent"),
        ("broken.example", "server failure", "451 4.4.3, transient"),
    ];
    for (domain, what, class) in cases {
        let out = postern(&["routes", domain, "--config", file]);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{domain}: {stderr}");
        assert!(
            stderr.contains(what) && stderr.contains(class),
            "{domain}: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
    let out = postern(&[
        "routes",
        "example.com",
        "--binding",
        "nosuch",
        "--config",
        file,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("binding \"nosuch\" is not configured"));
}
