//! HTTP injection (`POST /api/inject/v1`, KumoMTA's schema) into the real
//! daemon, with Python's standard library as the client: raw and builder
//! content, substitutions per recipient, each class of bad request, the
//! token, a full spool, and kill -9 right after a 200.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{ClosedPort, Setup, codes, fixture, free_addr, inject, wait_until};
use postern_testkit::dns::DnsServer;
use postern_testkit::sink::Sink;
use postern_testkit::tmpfs::Tmpfs;
use serde_json::{Value, json};

/// Posts `spec` (see `tests/fixtures/http_inject.py`); the status and the
/// answer.
fn post(port: u16, spec: Value) -> (u16, Value) {
    let mut spec = spec;
    spec["port"] = json!(port);
    let v = fixture("http_inject.py", &spec).remove(0);
    (
        u16::try_from(v["status"].as_u64().unwrap()).unwrap(),
        v["body"].clone(),
    )
}

/// A daemon with an HTTP listener on `http`, delivering to `sink`.
fn setup(dns: &DnsServer, sink: SocketAddr, http: SocketAddr, extra: &str) -> Setup {
    Setup::new(
        dns,
        &format!(
            "Gateway = \"{sink}\"\nRetry_Interval = 2\nHost_Failure_Retry = 1\n\
             HTTP_Listener {{\n  Listen \"{http}\" {{ }}\n  Relay_Hosts = ( \"127.0.0.1/32\" )\n{extra}\n}}"
        ),
    )
}

fn body_of(sink: &Sink, rcpt: &str) -> String {
    sink.messages()
        .iter()
        .find(|m| m.rcpt_to.iter().any(|r| r == rcpt))
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .unwrap_or_default()
}

#[test]
fn raw_and_builder_messages_are_delivered_one_per_recipient_with_their_own_values() {
    let sink = Sink::builder().start().unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let http = free_addr("127.0.0.1");
    let s = setup(&dns, sink.addr(), http, "");
    let daemon = s.start();
    let (status, answer) = post(
        http.port(),
        json!({"body": {
            "envelope_sender": "sender@example.org",
            "recipients": [{"email": "a@one.test"}, {"email": "b@one.test"}, {"email": "c@two.test"}],
            "content": "From: s@example.org\r\nSubject: raw\r\n\r\nHello.\r\n"
        }}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["success_count"], 3);
    assert_eq!(answer["fail_count"], 0);
    let (status, answer) = post(
        http.port(),
        json!({"body": {
            "envelope_sender": "news@example.org",
            "substitutions": {"shop": "Acme"},
            "recipients": [
                {"email": "ann@three.test", "name": "Ann", "substitutions": {"code": "A-111"}},
                {"email": "bob@three.test", "substitutions": {"code": "B-222"}}
            ],
            "content": {
                "from": {"email": "news@example.org", "name": "{{ shop }} News"},
                "subject": "Your code {{ code }}",
                "text_body": "Hello, your code is {{ code }}.",
                "headers": {"X-Campaign": "spring"}
            }
        }}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["success_count"], 2);
    assert!(sink.wait_for(5, Duration::from_secs(30)));
    let ann = body_of(&sink, "ann@three.test");
    let bob = body_of(&sink, "bob@three.test");
    assert!(
        ann.contains("Subject: Your code A-111") && ann.contains("A-111."),
        "{ann}"
    );
    assert!(
        bob.contains("Subject: Your code B-222") && bob.contains("B-222."),
        "{bob}"
    );
    assert!(!ann.contains("B-222") && !bob.contains("A-111"));
    assert!(
        ann.contains("Acme News") && ann.contains("X-Campaign: spring"),
        "{ann}"
    );
    assert!(
        ann.contains("@postern.test>"),
        "the Message-ID names Hostname: {ann}"
    );
    let raw = body_of(&sink, "c@two.test");
    assert!(
        raw.contains("with HTTP id") && raw.contains("Subject: raw"),
        "{raw}"
    );
    assert_eq!(
        sink.messages()
            .iter()
            .map(|m| m.mail_from.as_str())
            .filter(|f| *f == "sender@example.org")
            .count(),
        3
    );
    let log = s.log();
    let receptions: Vec<&Value> = log.iter().filter(|r| r["event"] == "reception").collect();
    assert_eq!(receptions.len(), 5);
    assert!(
        receptions.iter().all(|r| r["protocol"] == "http"),
        "{receptions:?}"
    );
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn bad_requests_get_400_naming_the_field_and_store_nothing() {
    let sink = Sink::builder().start().unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let http = free_addr("127.0.0.1");
    let s = setup(&dns, sink.addr(), http, "");
    let daemon = s.start();
    let ok = |extra: Value| {
        let mut body = json!({"envelope_sender": "s@example.org",
            "recipients": [{"email": "a@one.test"}], "content": "Subject: x\r\n\r\nx\r\n"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (json!({"raw": "{not json"}), ""),
        (
            json!({"body": {"recipients": [{"email": "a@one.test"}], "content": "x"}}),
            "envelope_sender",
        ),
        (
            json!({"body": ok(json!({"recipients": [{"email": "no-at-sign"}]}))}),
            "recipients[0].email",
        ),
        (json!({"body": ok(json!({"recipients": []}))}), "recipients"),
        (
            json!({"body": ok(json!({"envelope_sender": "a b@x.test"}))}),
            "envelope_sender",
        ),
        (json!({"body": ok(json!({"binding": "nope"}))}), "binding"),
        (
            json!({"body": ok(json!({"content": {"from": {"email": "f@x.test"}}}))}),
            "content",
        ),
        (
            json!({"body": ok(json!({"recipients": [{"email": "a@one.test", "mail": 1}]}))}),
            "recipients[0]",
        ),
    ];
    for (spec, field) in cases {
        let (status, answer) = post(http.port(), spec.clone());
        assert_eq!(status, 400, "{spec}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
        if !field.is_empty() {
            assert!(
                answer["field"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with(field),
                "{spec}: {answer}"
            );
        }
    }
    // GET is not injection.
    let (status, _) = post(
        http.port(),
        json!({"body": ok(json!({})), "path": "/api/inject/v2"}),
    );
    assert_eq!(status, 404);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.message_count(), 0);
    assert!(s.log().iter().all(|r| r["event"] != "reception"));
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn the_token_and_relay_hosts_decide_who_may_inject() {
    let sink = Sink::builder().start().unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let http = free_addr("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("inject.token");
    std::fs::write(&token_file, "  s3cret-token\n").unwrap();
    let s = setup(
        &dns,
        sink.addr(),
        http,
        &format!("  Auth_Token_File = \"{}\"", token_file.display()),
    );
    let daemon = s.start();
    let body = json!({"envelope_sender": "s@example.org",
        "recipients": [{"email": "a@one.test"}], "content": "Subject: x\r\n\r\nx\r\n"});
    let (status, _) = post(http.port(), json!({"body": body}));
    assert_eq!(status, 401);
    let (status, _) = post(http.port(), json!({"body": body, "token": "wrong"}));
    assert_eq!(status, 403);
    let (status, _) = post(
        http.port(),
        json!({"body": body, "token": "s3cret-token", "source": "127.0.0.2"}),
    );
    assert_eq!(status, 403, "127.0.0.2 is not in Relay_Hosts");
    let (status, answer) = post(http.port(), json!({"body": body, "token": "s3cret-token"}));
    assert_eq!(status, 200, "{answer}");
    assert!(sink.wait_for(1, Duration::from_secs(30)));
    // The admin API's control endpoints ask for the same token; the
    // console sends it (it reads the same configuration).
    let flush = "/api/flush?domain=one.test";
    let (status, _) = post(s.metrics.port(), json!({"raw": "", "path": flush}));
    assert_eq!(status, 401);
    let (status, _) = post(
        s.metrics.port(),
        json!({"raw": "", "path": flush, "token": "s3cret-token"}),
    );
    assert_eq!(status, 202);
    let config = s.config();
    let out = postern_e2e::postern(&["flush", "one.test", "--config", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn a_full_spool_answers_503_and_stores_nothing_of_the_request() {
    let Some(fs) = Tmpfs::mount("6m") else {
        return;
    };
    let dns = DnsServer::builder().start().unwrap();
    let destination = ClosedPort::new("127.0.0.1");
    let sink_addr = destination.addr;
    let http = free_addr("127.0.0.1");
    let s = setup(&dns, sink_addr, http, "");
    let text = std::fs::read_to_string(s.config()).unwrap();
    std::fs::write(
        s.config(),
        format!("{text}\nSpool_Segment_Size = 262144\nSpool_Reserve = 262144\n"),
    )
    .unwrap();
    std::os::unix::fs::symlink(fs.path(), s.dir.path().join("spool")).unwrap();
    let daemon = s.start();
    // The destination is down: fill the spool over SMTP.
    let first = inject(json!({"port": s.listen.port(), "count": 1200, "size": 8000,
        "rcpts": ["r@dest.example"]}));
    assert!(codes(&first).contains(&452), "the disk never filled");
    let accepted = codes(&first).iter().filter(|c| **c == 250).count();
    let recipients: Vec<Value> = (0..50)
        .map(|i| json!({"email": format!("http{i}@dest.example")}))
        .collect();
    let (status, answer) = post(
        http.port(),
        json!({"body": {"envelope_sender": "s@example.org", "recipients": recipients,
            "content": format!("Subject: big\r\n\r\n{}\r\n", "y".repeat(8000))}}),
    );
    assert_eq!(status, 503, "{answer}");
    // The destination comes up: the SMTP messages arrive, none of the
    // HTTP request's.
    let sink = destination.open(Sink::builder());
    assert!(sink.wait_for(accepted, Duration::from_secs(120)));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.message_count(), accepted);
    assert!(
        sink.messages()
            .iter()
            .all(|m| m.rcpt_to.iter().all(|r| !r.starts_with("http")))
    );
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn every_message_of_a_200_survives_kill_9() {
    let dns = DnsServer::builder().start().unwrap();
    let destination = ClosedPort::new("127.0.0.1");
    let sink_addr = destination.addr;
    let http = free_addr("127.0.0.1");
    let s = setup(&dns, sink_addr, http, "");
    let daemon = s.start();
    let recipients: Vec<Value> = (0..20)
        .map(|i| json!({"email": format!("r{i}@dest.example"), "substitutions": {"n": i}}))
        .collect();
    let (status, answer) = post(
        http.port(),
        json!({"body": {"envelope_sender": "s@example.org", "recipients": recipients,
            "content": "Subject: number {{ n }}\r\n\r\nn={{ n }}\r\n"}}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["success_count"], 20);
    daemon.kill_9();
    let sink = destination.open(Sink::builder());
    let daemon = s.start();
    assert!(sink.wait_for(20, Duration::from_secs(60)));
    for i in 0..20 {
        let body = body_of(&sink, &format!("r{i}@dest.example"));
        assert!(body.contains(&format!("Subject: number {i}\r\n")), "{body}");
    }
    wait_until(Duration::from_secs(10), "no duplicates", || {
        sink.message_count() == 20
    });
    assert_eq!(daemon.terminate(), Some(0));
}
