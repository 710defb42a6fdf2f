//! `postern verify-gateway`: the real binary against testkit sinks, with
//! the testkit's DNS server and CA.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use postern_e2e::postern;
use postern_testkit::dns::DnsServer;
use postern_testkit::sink::Sink;
use postern_testkit::tls::TestCa;
use tempfile::TempDir;

struct Setup {
    _dir: TempDir,
    config: PathBuf,
    _dns: DnsServer,
}

fn setup(ca: &TestCa, password: &str) -> Setup {
    let dns = DnsServer::builder()
        .a("relay.test", "127.0.0.1".parse().unwrap())
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca(dir.path()).unwrap();
    let config = dir.path().join("postern.conf");
    let text = format!(
        r#"Hostname = "postern.test"
TLS_CA = "{}"
Resolver {{ Nameservers = ( "{}" ) Timeout = 2 }}
Auth relay {{ Type = PLAIN User = "user" Password = "{password}" }}
"#,
        ca_file.display(),
        dns.addr()
    );
    std::fs::write(&config, text).unwrap();
    Setup {
        _dir: dir,
        config,
        _dns: dns,
    }
}

fn run(setup: &Setup, url: &str) -> (Option<i32>, String) {
    let out = postern(&[
        "verify-gateway",
        url,
        "--config",
        setup.config.to_str().unwrap(),
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The (RESULT, STEP) columns of the step table.
fn steps(output: &str) -> Vec<(String, String)> {
    output
        .lines()
        .skip_while(|l| !l.starts_with("RESULT"))
        .skip(1)
        .take_while(|l| !l.starts_with("all steps") && !l.starts_with("failed"))
        .map(|l| {
            let cells: Vec<&str> = l
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            (cells[0].to_owned(), cells[1].to_owned())
        })
        .collect()
}

fn tls_auth_sink(ca: &TestCa) -> Sink {
    Sink::builder()
        .tls(ca.issue(&["relay.test"]).unwrap().server_config().unwrap())
        .auth("user", "s3cret")
        .require_auth()
        .start()
        .unwrap()
}

#[test]
fn every_step_passes_with_tls_and_auth() {
    let ca = TestCa::new().unwrap();
    let sink = tls_auth_sink(&ca);
    let setup = setup(&ca, "s3cret");
    let url = format!(
        "smtp://relay.test:{}?tls=required&tls_verify=host&auth=relay",
        sink.addr().port()
    );
    let (code, out) = run(&setup, &url);
    assert_eq!(code, Some(0), "{out}");
    let want: Vec<(String, String)> = [
        ("ok", format!("connect 127.0.0.1:{}", sink.addr().port())),
        ("ok", "greeting".into()),
        ("ok", "EHLO postern.test".into()),
        ("ok", "STARTTLS".into()),
        ("ok", "TLS handshake".into()),
        ("ok", "EHLO postern.test".into()),
        ("ok", "AUTH PLAIN ****".into()),
        ("ok", "QUIT".into()),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b))
    .collect();
    assert_eq!(steps(&out), want, "{out}");
    assert!(out.contains("235 2.7.0"), "{out}");
    assert!(out.trim_end().ends_with("all steps passed"), "{out}");
    assert!(!out.contains("s3cret"));
    assert_eq!(sink.connections(), 1);
    assert_eq!(sink.message_count(), 0, "nothing is sent");
}

#[test]
fn a_failing_step_exits_1_and_says_why() {
    let ca = TestCa::new().unwrap();
    let sink = tls_auth_sink(&ca);
    let setup = setup(&ca, "wrong");
    let url = format!("smtp://relay.test:{}?auth=relay", sink.addr().port());
    let (code, out) = run(&setup, &url);
    assert_eq!(code, Some(1), "{out}");
    let last = steps(&out).pop().unwrap();
    assert_eq!(
        last,
        ("FAILED".to_owned(), "AUTH PLAIN ****".to_owned()),
        "{out}"
    );
    assert!(
        out.contains("535 5.7.8") && out.contains("failed: AUTH failed"),
        "{out}"
    );

    // TLS required from a host without STARTTLS.
    let plain = Sink::builder().start().unwrap();
    let url = format!("smtp://127.0.0.1:{}?tls=required", plain.addr().port());
    let (code, out) = run(&setup, &url);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("failed: TLS is required and 127.0.0.1 does not offer STARTTLS"),
        "{out}"
    );

    // Nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, out) = run(&setup, &format!("127.0.0.1:{port}"));
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(steps(&out)[0].0, "FAILED", "{out}");

    let (code, out) = run(&setup, "ftp://relay.test");
    assert_eq!(code, Some(2), "{out}");
}
