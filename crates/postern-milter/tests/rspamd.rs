//! The milter client against a real rspamd (the testkit's, Debian's
//! package in milter mode): GTUBE refused with rspamd's reply, a clean
//! message accepted with its scan header and score, a medium message
//! scored as such, and a scanner that is gone is an error, not a verdict.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use postern_milter::{Decision, Envelope, Message, ScanError, scan};
use postern_testkit::rspamd::{GTUBE, MEDIUM_SUBJECT, RspamdServer};

fn message(subject: &str, body: &str) -> Message {
    let text = format!(
        "Received: from client.example (client.example [192.0.2.10])\r\n\tby postern.test with ESMTP; Tue, 01 Dec 2026 08:00:00 +0000\r\n\
         From: Alice <alice@example.org>\r\nTo: bob@inbound.test\r\nSubject: {subject}\r\n\
         Date: Tue, 01 Dec 2026 08:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    );
    Message::parse(text.as_bytes())
}

async fn ask(
    server: std::net::SocketAddr,
    m: &Message,
) -> Result<postern_milter::Verdict, ScanError> {
    let rcpts = vec!["bob@inbound.test".to_owned()];
    let envelope = Envelope {
        client: "192.0.2.10:40000".parse().unwrap(),
        client_name: None,
        helo: "client.example",
        sender: "alice@example.org",
        recipients: &rcpts,
        hostname: "postern.test",
        queue_id: "test1",
    };
    scan(server, Duration::from_secs(30), &envelope, m).await
}

#[tokio::test(flavor = "multi_thread")]
async fn rspamd_refuses_gtube_scores_the_rest_and_its_absence_is_an_error() {
    let mut rspamd = RspamdServer::start().unwrap();

    let spam = ask(
        rspamd.addr(),
        &message("hello", &format!("Here it is:\r\n{GTUBE}\r\n")),
    )
    .await
    .unwrap();
    let reply = spam.decision.reply().expect("refused");
    assert!(
        matches!(spam.decision, Decision::Reject(Some(_))),
        "{spam:?}"
    );
    assert_eq!(reply.code, 554, "{reply}");
    assert_eq!(
        reply.status.map(|s| s.to_string()).as_deref(),
        Some("5.7.1"),
        "{reply}"
    );
    assert!(
        reply.text().to_ascii_lowercase().contains("gtube"),
        "rspamd's own words: {reply}"
    );

    let clean = ask(
        rspamd.addr(),
        &message("Lunch on Friday", "Shall we meet at noon?\r\nBob"),
    )
    .await
    .unwrap();
    assert_eq!(clean.decision, Decision::Accept, "{clean:?}");
    let score = clean.score().expect("X-Spamd-Result carries a score");
    assert!(score < 6.0, "{score} {clean:?}");
    let mut m = message("Lunch on Friday", "Shall we meet at noon?\r\nBob");
    clean.apply(&mut m);
    assert!(m.header("X-Spamd-Result").is_some(), "{m:?}");

    let medium = ask(rspamd.addr(), &message(MEDIUM_SUBJECT, "Buy now.\r\n"))
        .await
        .unwrap();
    assert_eq!(medium.decision, Decision::Accept, "{medium:?}");
    let score = medium.score().unwrap();
    assert!((9.0..15.0).contains(&score), "{score}");

    let addr = rspamd.addr();
    rspamd.stop();
    let gone = ask(addr, &message("x", "y")).await;
    assert!(matches!(gone, Err(ScanError::Io(_))), "{gone:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rspamd_asks_to_quarantine_what_it_would_reject_when_told_to() {
    let rspamd = RspamdServer::start_quarantining().unwrap();
    let held = ask(
        rspamd.addr(),
        &message("hello", &format!("Here it is:\r\n{GTUBE}\r\n")),
    )
    .await
    .unwrap();
    assert!(held.quarantine.is_some(), "{held:?}");
    assert!(!matches!(held.decision, Decision::Reject(_)), "{held:?}");
}
