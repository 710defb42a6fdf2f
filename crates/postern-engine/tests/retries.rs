//! After an attempt: retries on schedule, the end of retrying, bounces
//! read back by a MIME parser, throttles, suspension and flush.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{block_on, delivered, engine, message, wait_reports, wait_reports_timed};
use mail_parser::{MessageParser, MimeHeaders};
use postern_engine::{Bounce, Report};
use postern_smtp::client::Outcome;
use postern_testkit::dns::DnsServer;
use postern_testkit::sink::Sink;

fn no_dns() -> DnsServer {
    DnsServer::builder().start().unwrap()
}

fn bounce(e: &common::TestEngine, within: Duration) -> Bounce {
    e.bounces().recv_timeout(within).expect("a bounce")
}

/// `a - b`, which must not be negative.
fn since(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b)
        .unwrap_or_else(|_| panic!("{a:?} is before {b:?}"))
}

/// Clocks read a few steps apart inside the engine (the scheduler's
/// instant and the report's wall-clock time) differ by this much at most.
const SKEW: Duration = Duration::from_millis(50);

#[test]
fn two_tempfails_then_delivery_on_the_third_attempt_on_schedule() {
    let sink = Sink::builder().tempfail_first(2).start().unwrap();
    let dns = no_dns();
    let e = engine(
        &dns,
        &format!("Retry_Interval = 1\nGateway = \"{}\"", sink.addr()),
    );
    let t0 = SystemTime::now();
    e.submit(message(1, "default", "retry.example", &["a@retry.example"]));
    let reports = wait_reports_timed(&e, 1, Duration::from_secs(15), delivered);
    let times: Vec<_> = reports
        .iter()
        .map(|(r, _)| (r.attempt, delivered(r)))
        .collect();
    assert_eq!(times, [(1, false), (2, false), (3, true)]);
    // Retry 1 is due Retry_Interval (1 s) after attempt 1, retry 2 twice
    // that after attempt 2: each due time is at most its delay after its
    // report came, at least its delay after what came before, and no
    // attempt is made before it is due.
    let due: Vec<SystemTime> = reports[..2]
        .iter()
        .map(|(r, _)| r.retry_at.unwrap())
        .collect();
    assert!(since(due[0], t0) + SKEW >= Duration::from_secs(1));
    assert!(since(due[0], reports[0].1) <= Duration::from_secs(1));
    assert!(since(due[1], due[0]) + SKEW >= Duration::from_secs(2));
    assert!(since(due[1], reports[1].1) <= Duration::from_secs(2));
    assert!(reports[1].1 + SKEW >= due[0] && reports[2].1 + SKEW >= due[1]);
    assert_eq!(sink.message_count(), 1);
    assert!(e.bounces().try_recv().is_err());
}

#[test]
fn max_retries_ends_with_a_5_4_7_bounce() {
    let sink = Sink::builder()
        .tempfail_rcpt("busy@x.example")
        .start()
        .unwrap();
    let dns = no_dns();
    let e = engine(
        &dns,
        &format!(
            "Retry_Interval = 1\nMax_Retries = 2\nGateway = \"{}\"",
            sink.addr()
        ),
    );
    e.submit(message(2, "default", "x.example", &["busy@x.example"]));
    let reports = wait_reports(&e, 1, Duration::from_secs(15), |r| r.is_final());
    let last = reports.last().unwrap();
    assert_eq!(last.attempt, 3, "one attempt and two retries");
    match &last.outcome {
        Outcome::Permanent(r) => {
            assert_eq!(r.to_string().get(..9), Some("554 5.4.7"), "{r}");
            assert!(r.text().contains("last: 451 4.2.1"), "{r}");
        }
        other => panic!("{other:?}"),
    }
    let b = bounce(&e, Duration::from_secs(2));
    let text = String::from_utf8_lossy(&b.body);
    assert!(text.contains("Status: 5.4.7"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; busy@x.example"),
        "{text}"
    );
}

#[test]
fn an_expired_message_bounces() {
    let sink = Sink::builder()
        .tempfail_rcpt("slow@x.example")
        .start()
        .unwrap();
    let dns = no_dns();
    let e = engine(
        &dns,
        &format!(
            "Retry_Interval = 1\nMessage_Expiration = 2\nGateway = \"{}\"",
            sink.addr()
        ),
    );
    let m = message(3, "default", "x.example", &["slow@x.example"]);
    let expires = m.received + Duration::from_secs(2);
    e.submit(m);
    let reports = wait_reports_timed(&e, 1, Duration::from_secs(15), Report::is_final);
    let (last, failed) = reports.last().unwrap();
    assert!(
        matches!(&last.outcome, Outcome::Permanent(r) if r.text().contains("expired") && r.code == 554),
        "{last:?}"
    );
    // Attempts at 0 s and 1 s; the retry 2 s after the second would pass
    // the expiry, so the last retry is due at the expiry itself, and the
    // message fails then (that attempt's 451 ending it), not before.
    let second = reports.iter().find(|(r, _)| r.attempt == 2).unwrap();
    let due = second.0.retry_at.unwrap();
    assert!(due <= expires + SKEW && due + SKEW >= expires, "{due:?}");
    assert!(*failed + SKEW >= expires);
    let b = bounce(&e, Duration::from_secs(2));
    assert_eq!(b.recipient, "sender@example.org");
}

#[test]
fn a_550_gives_one_bounce_that_a_mime_parser_reads_back() {
    let sink = Sink::builder()
        .permfail_rcpt("gone1@x.example")
        .permfail_rcpt("gone2@x.example")
        .start()
        .unwrap();
    let dns = no_dns();
    let e = engine(
        &dns,
        &format!(
            "Max_Recipients_Per_Batch = 1\nGateway = \"{}\"",
            sink.addr()
        ),
    );
    e.submit(message(
        4,
        "default",
        "x.example",
        &["gone1@x.example", "ok@x.example", "gone2@x.example"],
    ));
    wait_reports(&e, 3, Duration::from_secs(10), |r| r.is_final());
    let b = bounce(&e, Duration::from_secs(5));
    assert!(
        e.bounces()
            .recv_timeout(Duration::from_millis(500))
            .is_err(),
        "exactly one bounce for the round"
    );
    assert_eq!(b.original_id, 4);
    assert_eq!(b.recipient, "sender@example.org");
    let queued = b.queued(100, 101, String::new());
    assert_eq!((&*queued.sender, &*queued.domain), ("", "example.org"));

    let parsed = MessageParser::default().parse(&b.body).unwrap();
    let ct = parsed.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    assert_eq!(
        parsed.to().unwrap().first().unwrap().address(),
        Some("sender@example.org")
    );
    let id = parsed.message_id().unwrap();
    assert!(
        id.ends_with("@postern.test"),
        "the Message-ID names Hostname: {id}"
    );
    let parts: Vec<(String, String)> = parsed
        .parts
        .iter()
        .skip(1)
        .map(|p| {
            let ct = p.content_type().unwrap();
            let kind = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""));
            let text = String::from_utf8_lossy(p.contents()).into_owned();
            (kind, text)
        })
        .collect();
    let kinds: Vec<&str> = parts.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );
    let status = &parts[1].1;
    assert!(
        status.contains("Reporting-MTA: dns; postern.test"),
        "{status}"
    );
    for r in ["gone1@x.example", "gone2@x.example"] {
        assert!(
            status.contains(&format!("Final-Recipient: rfc822; {r}")),
            "{status}"
        );
    }
    assert!(!status.contains("ok@x.example"));
    assert!(status.contains("Action: failed"));
    assert!(status.contains("Status: 5.1.1"), "{status}");
    assert!(
        status.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user"),
        "{status}"
    );
    assert!(status.contains("Remote-MTA: dns; "), "{status}");
    assert!(
        parts[2].1.contains("Subject: engine test"),
        "{}",
        parts[2].1
    );
}

#[test]
fn no_bounce_for_the_null_sender_or_when_bounces_are_off() {
    let sink = Sink::builder()
        .permfail_rcpt("gone@x.example")
        .start()
        .unwrap();
    let dns = no_dns();
    let e = engine(&dns, &format!("Gateway = \"{}\"", sink.addr()));
    let mut m = message(5, "default", "x.example", &["gone@x.example"]);
    m.sender = Box::default();
    e.submit(m);
    wait_reports(&e, 1, Duration::from_secs(10), |r| r.is_final());
    assert!(
        e.bounces()
            .recv_timeout(Duration::from_millis(500))
            .is_err()
    );

    let e = engine(
        &dns,
        &format!("Generate_Bounces = false\nGateway = \"{}\"", sink.addr()),
    );
    e.submit(message(6, "default", "x.example", &["gone@x.example"]));
    let r = wait_reports(&e, 1, Duration::from_secs(10), |r| r.is_final());
    assert!(matches!(r[0].outcome, Outcome::Permanent(_)));
    assert!(
        e.bounces()
            .recv_timeout(Duration::from_millis(500))
            .is_err()
    );
}

#[test]
fn a_throttle_paces_every_queue_that_shares_it_and_fails_nothing() {
    let sink = Sink::builder().start().unwrap();
    let dns = no_dns();
    let e = engine(
        &dns,
        &format!(
            "Outbound_Throttle_Messages = \"10\"\nGateway = \"{}\"",
            sink.addr()
        ),
    );
    let t0 = Instant::now();
    for id in 0..50 {
        let domain = if id % 2 == 0 {
            "even.example"
        } else {
            "odd.example"
        };
        e.submit(message(id, "default", domain, &["a@x.example"]));
    }
    let reports = wait_reports(&e, 50, Duration::from_secs(20), delivered);
    let elapsed = t0.elapsed();
    assert!(reports.iter().all(delivered), "nothing failed");
    // A burst of 10, then 10 a second, over both queues together.
    assert!(elapsed >= Duration::from_millis(3500), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(6500), "{elapsed:?}");
    assert_eq!(sink.message_count(), 50);
}

#[test]
fn suspension_holds_the_queue_and_resuming_delivers() {
    let sink = Sink::builder().start().unwrap();
    let dns = no_dns();
    let e = engine(
        &dns,
        &format!(
            "Gateway = \"{}\"\nDomain \"held.example\" {{ Suspend_Delivery = true }}",
            sink.addr()
        ),
    );
    for id in 0..3 {
        e.submit(message(id, "default", "held.example", &["a@held.example"]));
    }
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(sink.connections(), 0);
    let view = block_on(e.queue("default", "held.example")).unwrap();
    assert_eq!(view.active, 3);
    assert!(e.reports().try_recv().is_err(), "nothing failed");
    e.resume("default", "held.example");
    wait_reports(&e, 3, Duration::from_secs(10), delivered);

    // Suspended at run time, then resumed.
    e.suspend("default", "other.example");
    e.submit(message(9, "default", "other.example", &["a@other.example"]));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.message_count(), 3);
    e.resume("default", "other.example");
    wait_reports(&e, 1, Duration::from_secs(10), delivered);
    assert_eq!(sink.message_count(), 4);
}

#[test]
fn flush_retries_delayed_mail_now() {
    let sink = Sink::builder().tempfail_first(1).start().unwrap();
    let dns = no_dns();
    let e = engine(
        &dns,
        &format!("Retry_Interval = 3600\nGateway = \"{}\"", sink.addr()),
    );
    e.submit(message(1, "default", "later.example", &["a@later.example"]));
    let first = wait_reports(&e, 1, Duration::from_secs(10), |_| true);
    assert!(matches!(first[0].outcome, Outcome::Transient(_)));
    assert_eq!(
        block_on(e.queue("default", "later.example"))
            .unwrap()
            .delayed,
        1
    );
    e.flush("default", "later.example");
    let again = wait_reports(&e, 1, Duration::from_secs(10), delivered);
    assert_eq!(again[0].attempt, 2);
}
