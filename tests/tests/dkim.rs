//! DKIM signing in the real daemon: RSA and Ed25519 signatures that an
//! independent verifier (Python's dkimpy) and mail-auth's verifier accept
//! with the public keys served by the test DNS server; one signature even
//! after a retry and a restart; bounces signed; an unreadable key refused
//! by `check-config` with its place.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{Setup, codes, fixture, inject};
use postern_e2e::workspace_root;
use postern_testkit::dns::DnsServer;
use postern_testkit::sink::Sink;
use serde_json::{Value, json};

fn key(name: &str) -> String {
    workspace_root()
        .join("tests/fixtures/dkim")
        .join(name)
        .display()
        .to_string()
}

fn public(name: &str) -> String {
    std::fs::read_to_string(key(name))
        .unwrap()
        .trim()
        .to_owned()
}

/// The DNS records of both test keys.
fn dns() -> DnsServer {
    DnsServer::builder()
        .txt(
            "s2026._domainkey.example.com",
            &format!("v=DKIM1; k=rsa; p={}", public("rsa2048.pub.b64")),
        )
        .txt(
            "ed._domainkey.example.org",
            &format!("v=DKIM1; k=ed25519; p={}", public("ed25519.pub.b64")),
        )
        .txt(
            "bounces._domainkey.postern.test",
            &format!("v=DKIM1; k=ed25519; p={}", public("ed25519.pub.b64")),
        )
        .start()
        .unwrap()
}

fn stanzas() -> String {
    format!(
        "DKIM_Sign \"example.com\" {{ Selector = \"s2026\" Key_File = \"{}\" }}\n\
         DKIM_Sign \"example.org\" {{ Selector = \"ed\" Key_File = \"{}\" Canonicalization = \"relaxed/simple\" }}\n\
         DKIM_Sign \"postern.test\" {{ Selector = \"bounces\" Key_File = \"{}\" }}",
        key("rsa2048.pem"),
        key("ed25519.pem"),
        key("ed25519.pem"),
    )
}

/// dkimpy's verdict on each signature of `message`.
fn dkimpy(dns: &DnsServer, message: &[u8]) -> Vec<bool> {
    let spec = json!({"dns_port": dns.addr().port(), "message": String::from_utf8_lossy(message)});
    let v = fixture("dkim_verify.py", &spec).remove(0);
    v["verified"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_bool().unwrap())
        .collect()
}

/// mail-auth's verdict, with its resolver pointed at the test DNS server.
fn mail_auth(dns: &DnsServer, message: &[u8]) -> Vec<bool> {
    use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
    let mut ns = NameServerConfig::udp_and_tcp(dns.addr().ip());
    for c in &mut ns.connections {
        c.port = dns.addr().port();
    }
    let config = ResolverConfig::from_name_servers(vec![ns]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let auth = mail_auth::MessageAuthenticator::new(config, ResolverOpts::default()).unwrap();
        let parsed = mail_auth::AuthenticatedMessage::parse(message).unwrap();
        auth.verify_dkim(&parsed)
            .await
            .iter()
            .map(|o| *o.result() == mail_auth::DkimResult::Pass)
            .collect()
    })
}

/// `DKIM-Signature` fields in the message's own header (not in a
/// bounce's copy of the original's headers).
fn signatures(body: &[u8]) -> usize {
    String::from_utf8_lossy(body)
        .lines()
        .take_while(|l| !l.is_empty())
        .filter(|l| l.to_ascii_lowercase().starts_with("dkim-signature:"))
        .count()
}

#[test]
fn rsa_and_ed25519_signatures_verify_once_each_through_a_retry_and_a_restart() {
    let dns = dns();
    // The first delivery is refused for now: the retry comes after a restart.
    let sink = Sink::builder().tempfail_first(1).start().unwrap();
    let setup = Setup::new(
        &dns,
        &format!(
            "Gateway = \"{}\"\nRetry_Interval = 2\n{}",
            sink.addr(),
            stanzas()
        ),
    );
    let daemon = setup.start();
    let send = |from: &str, to: &str, start: usize| {
        let r = inject(
            json!({"port": setup.listen.port(), "count": 1, "start": start,
            "rcpts": [to], "headers": {"From": from, "To": to, "Date": "Tue, 1 Dec 2026 10:00:00 +0000"}}),
        );
        assert_eq!(codes(&r), [250]);
    };
    send("Ann <ann@example.com>", "r1@dest.test", 1);
    send("news@mail.example.org", "r2@dest.test", 2);
    send("someone@other.test", "r3@dest.test", 3);
    // The first message's first attempt was refused; restart before its retry.
    assert!(sink.wait_for(2, Duration::from_secs(30)));
    assert_eq!(daemon.terminate(), Some(0));
    let daemon = setup.start();
    assert!(sink.wait_for(3, Duration::from_secs(60)));
    let body_for = |rcpt: &str| {
        sink.messages()
            .into_iter()
            .find(|m| m.rcpt_to.iter().any(|r| r == rcpt))
            .unwrap()
            .body
    };
    let rsa = body_for("r1@dest.test");
    let ed = body_for("r2@dest.test");
    let plain = body_for("r3@dest.test");
    assert_eq!(signatures(&rsa), 1, "{}", String::from_utf8_lossy(&rsa));
    assert_eq!(signatures(&ed), 1);
    assert_eq!(signatures(&plain), 0, "no stanza for other.test");
    let text = String::from_utf8_lossy(&rsa);
    assert!(
        text.contains("a=rsa-sha256") && text.contains("d=example.com") && text.contains("s=s2026")
    );
    let text = String::from_utf8_lossy(&ed);
    assert!(text.contains("a=ed25519-sha256") && text.contains("d=example.org"));
    assert_eq!(dkimpy(&dns, &rsa), [true]);
    assert_eq!(dkimpy(&dns, &ed), [true]);
    assert_eq!(mail_auth(&dns, &rsa), [true]);
    assert_eq!(mail_auth(&dns, &ed), [true]);
    // The reception log names the signature.
    let log = setup.log();
    let signed: Vec<&Value> = log
        .iter()
        .filter(|r| r["event"] == "reception" && r["dkim_domain"].is_string())
        .collect();
    assert_eq!(signed.len(), 2);
    assert!(
        signed
            .iter()
            .any(|r| r["dkim_domain"] == "example.com" && r["dkim_selector"] == "s2026")
    );
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn bounces_are_signed_and_a_bad_key_is_refused_with_its_place() {
    let dns = dns();
    let sink = Sink::builder()
        .permfail_rcpt("gone@dest.test")
        .start()
        .unwrap();
    let setup = Setup::new(
        &dns,
        &format!("Gateway = \"{}\"\n{}", sink.addr(), stanzas()),
    );
    let daemon = setup.start();
    let r = inject(
        json!({"port": setup.listen.port(), "count": 1, "sender": "ann@example.com",
        "rcpts": ["gone@dest.test"], "headers": {"From": "ann@example.com"}}),
    );
    assert_eq!(codes(&r), [250]);
    assert!(sink.wait_for(1, Duration::from_secs(30)));
    let bounce = sink
        .messages()
        .into_iter()
        .find(|m| m.mail_from.is_empty())
        .unwrap();
    assert_eq!(signatures(&bounce.body), 1);
    let text = String::from_utf8_lossy(&bounce.body).into_owned();
    assert!(text.contains("d=postern.test"), "{text}");
    assert_eq!(dkimpy(&dns, &bounce.body), [true]);
    assert_eq!(daemon.terminate(), Some(0));

    // A key file that is not a key: check-config names Key_File's place.
    let bad = setup.dir.path().join("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let conf = setup.dir.path().join("bad.conf");
    std::fs::write(
        &conf,
        format!(
            "DKIM_Sign \"example.net\" {{\n  Selector = \"x\"\n  Key_File = \"{}\"\n}}\n",
            bad.display()
        ),
    )
    .unwrap();
    let out = postern_e2e::postern(&["check-config", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:3:3: invalid value for \"Key_File\"",
            conf.display()
        )),
        "{stderr}"
    );
    let missing = setup.dir.path().join("missing.conf");
    std::fs::write(
        &missing,
        "DKIM_Sign \"example.net\" { Key_File = \"nope.pem\" }\n",
    )
    .unwrap();
    let out = postern_e2e::postern(&["check-config", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Selector is required"));
}
