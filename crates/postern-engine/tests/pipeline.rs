//! Several messages in one write (`Outbound_Messages_Per_Write`) over real
//! TCP: queued mail of a domain goes to a sink that offers PIPELINING and
//! CHUNKING a few messages a write, each with its own outcome, and a
//! session that breaks inside a write leaves no message without a fate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use common::{TestEngine, delivered, engine, message, sinks, wait_reports};
use postern_engine::QueuedMessage;
use postern_smtp::client::Outcome;
use postern_testkit::dns::DnsServer;
use postern_testkit::sink::{Sink, SinkBuilder};

/// A sink at `addr`, the MX host `mx.pipe.test` of every domain, and an
/// engine with `conf`.
fn setup(
    addr: &str,
    sink: SinkBuilder,
    domains: &[&str],
    conf: &str,
) -> (Sink, DnsServer, TestEngine) {
    let (port, mut s) = sinks(vec![(addr, sink)]);
    let mut dns = DnsServer::builder().a("mx.pipe.test", addr.parse().unwrap());
    for d in domains {
        dns = dns.mx(d, 10, "mx.pipe.test");
    }
    let dns = dns.start().unwrap();
    let e = engine(&dns, &format!("Remote_SMTP_Port = {port}\n{conf}"));
    (s.remove(0), dns, e)
}

fn start(addr: &str, sink: SinkBuilder, conf: &str) -> (Sink, DnsServer, TestEngine) {
    // One connection, so that the mail queues behind it.
    let conf = format!(
        "Retry_Interval = 600\nAdaptive_Delivery = false\n\
         Domain \"pipe.test\" {{ Max_Outbound_Connections = 1 }}\n{conf}"
    );
    setup(addr, sink, &["pipe.test"], &conf)
}

/// `n` messages to pipe.test, one recipient each.
fn messages(n: u64) -> Vec<QueuedMessage> {
    (0..n)
        .map(|id| message(id, "default", "pipe.test", &[&format!("r{id}@pipe.test")]))
        .collect()
}

/// Submits `n` messages one after the other.
fn submit(e: &TestEngine, n: u64) {
    for m in messages(n) {
        e.submit(m);
    }
}

#[test]
fn queued_mail_goes_several_messages_a_write_each_with_its_own_outcome() {
    for per_write in [4, 1] {
        let (sink, _dns, e) = start(
            "127.0.3.1",
            Sink::builder().tempfail_every(3),
            &format!("Outbound_Messages_Per_Write = {per_write}"),
        );
        submit(&e, 24);
        let reports = wait_reports(&e, 24, Duration::from_secs(60), |_| true);
        let received = sink.messages();
        // The sink refused every third message it read; each report says
        // what the sink did with that very message.
        let taken: BTreeSet<String> = received.iter().map(|m| m.rcpt_to[0].clone()).collect();
        let reported: BTreeSet<String> = reports
            .iter()
            .filter(|r| delivered(r))
            .map(|r| r.recipient.clone())
            .collect();
        assert_eq!(taken.len(), 16, "per write {per_write}");
        assert_eq!(reported, taken, "per write {per_write}");
        assert!(reports.iter().all(|r| r.attempt == 1));
        let later = reports.iter().filter(|r| !delivered(r));
        assert!(
            later
                .clone()
                .all(|r| matches!(&r.outcome, Outcome::Transient(x) if x.code == 451)),
            "{reports:?}"
        );
        assert_eq!(later.count(), 8);
        let pipelined = received.iter().filter(|m| m.pipelined).count();
        match per_write {
            1 => assert_eq!(pipelined, 0, "one message a write"),
            _ => assert!(pipelined >= 12, "only {pipelined} of 24 behind another"),
        }
        assert_eq!(sink.connections(), 1);
    }
}

#[test]
fn by_default_a_write_carries_up_to_four_messages() {
    for (conf, behind) in [("", 18), ("Outbound_Messages_Per_Write = 8", 21)] {
        let (sink, _dns, e) = start("127.0.3.4", Sink::builder(), conf);
        e.submit_all(messages(24));
        let reports = wait_reports(&e, 24, Duration::from_secs(60), |_| true);
        assert!(reports.iter().all(delivered), "{reports:?}");
        // The 24 are queued together before the connection asks for any,
        // so each write is full: all but its first message come behind
        // another.
        let pipelined = sink.messages().iter().filter(|m| m.pipelined).count();
        assert_eq!(pipelined, behind, "{conf:?}");
        assert_eq!(sink.connections(), 1);
    }
}

#[test]
fn messages_written_behind_a_broken_one_wait_for_their_retry() {
    // The sink reads the first message, then drops the session without a
    // reply: it may have taken it, and the three written behind it too.
    let (sink, _dns, e) = start(
        "127.0.3.2",
        Sink::builder().drop_after_data(),
        "Outbound_Messages_Per_Write = 4",
    );
    submit(&e, 4);
    let reports = wait_reports(&e, 4, Duration::from_secs(60), |_| true);
    let soon = SystemTime::now() + Duration::from_secs(300);
    for r in &reports {
        assert!(matches!(r.outcome, Outcome::Transient(_)), "{r:?}");
        assert_eq!(r.attempt, 1);
        assert!(
            r.retry_at.is_some_and(|t| t > soon),
            "retried at once: {r:?}"
        );
    }
    assert_eq!(sink.connections(), 1);
}

#[test]
fn domains_that_share_a_host_share_its_writes() {
    let (sink, _dns, e) = setup(
        "127.0.3.3",
        Sink::builder(),
        &["x.pipe.test", "y.pipe.test"],
        "Idle_Timeout = 600\nOutbound_Messages_Per_Write = 4\n\
         Host \"mx.pipe.test\" { Max_Outbound_Connections = 1 }",
    );
    let mail = |id: u64, domain: &str| -> QueuedMessage {
        let to = format!("r{id}@{domain}");
        message(id, "default", domain, &[&to])
    };
    // A message each: the domains have their routes, and the host's one
    // connection is open and waits.
    e.submit(mail(0, "x.pipe.test"));
    e.submit(mail(10, "y.pipe.test"));
    wait_reports(&e, 2, Duration::from_secs(30), delivered);
    // Both domains' mail comes in one submission: the waiting connection
    // takes both domains' batches for its next write.
    let both: Vec<QueuedMessage> = (1..9)
        .map(|id| {
            mail(
                id,
                if id % 2 == 0 {
                    "y.pipe.test"
                } else {
                    "x.pipe.test"
                },
            )
        })
        .collect();
    e.submit_all(both);
    let reports = wait_reports(&e, 8, Duration::from_secs(30), |_| true);
    assert!(reports.iter().all(delivered), "{reports:?}");
    let got = sink.messages();
    assert_eq!(got.len(), 10);
    let first_write: Vec<&str> = got[2..6]
        .iter()
        .map(|m| m.rcpt_to[0].split('@').nth(1).unwrap())
        .collect();
    let pipelined: Vec<bool> = got[2..6].iter().map(|m| m.pipelined).collect();
    assert_eq!(pipelined, [false, true, true, true], "{first_write:?}");
    assert!(
        first_write.contains(&"x.pipe.test") && first_write.contains(&"y.pipe.test"),
        "{first_write:?}"
    );
    assert_eq!(sink.connections(), 1);
}
