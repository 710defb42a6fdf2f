//! Adaptive delivery over real TCP: sinks that refuse connections beyond
//! a limit or messages beyond a rate, reply rules that suspend or bounce,
//! and deferrals that cost no attempt.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_precision_loss
)]

mod common;

use std::time::{Duration, Instant};

use common::{TestEngine, block_on, delivered, engine, message, sinks, wait_reports};
use mail_parser::MessageParser;
use postern_smtp::client::Outcome;
use postern_testkit::dns::DnsServer;
use postern_testkit::sink::{Sink, SinkBuilder};

fn one_mx(addr: &str) -> DnsServer {
    DnsServer::builder()
        .mx("adaptive.test", 10, "mx.adaptive.test")
        .a("mx.adaptive.test", addr.parse().unwrap())
        .start()
        .unwrap()
}

fn submit(e: &TestEngine, ids: std::ops::Range<u64>) {
    for id in ids {
        e.submit(message(
            id,
            "default",
            "adaptive.test",
            &["r@adaptive.test"],
        ));
    }
}

fn start(addr: &str, sink: SinkBuilder, conf: &str) -> (Sink, DnsServer, TestEngine) {
    let (port, mut s) = sinks(vec![(addr, sink)]);
    let dns = one_mx(addr);
    let e = engine(&dns, &format!("Remote_SMTP_Port = {port}\n{conf}"));
    (s.remove(0), dns, e)
}

/// The effective connection limit of the domain's MX host.
fn limit_now(e: &TestEngine) -> Option<u64> {
    let view = block_on(e.queue("default", "adaptive.test"))?;
    view.hosts.first()?.limit_now
}

#[test]
fn a_host_allowing_two_connections_is_learnt_and_refusals_stop() {
    let (sink, _dns, e) = start(
        "127.0.2.10",
        Sink::builder()
            .refuse_beyond(2)
            .delay(Duration::from_millis(2)),
        "Max_Retries = 3\nMax_Deliveries_Per_Connection = 20\n\
         Domain \"adaptive.test\" { Max_Outbound_Connections = 20 }",
    );
    submit(&e, 0..2000);
    let first = wait_reports(&e, 1000, Duration::from_secs(120), delivered);
    let (connections, refused) = (sink.connections(), sink.refused());
    let rest = wait_reports(&e, 1000, Duration::from_secs(120), delivered);
    assert!(refused > 0, "the sink refused nothing: no test");
    let all: Vec<_> = first.iter().chain(&rest).collect();
    assert!(
        all.iter().all(|r| delivered(r) && r.attempt == 1),
        "an attempt was counted"
    );
    assert_eq!(sink.message_count(), 2000);
    let new = sink.connections() - connections;
    let refused_late = sink.refused() - refused;
    assert!(
        new >= 20 && (refused_late as f64) < 0.05 * new as f64,
        "after convergence {refused_late} of {new} new connections were refused"
    );
    assert_eq!(limit_now(&e), Some(2));
}

#[test]
fn a_rate_limit_of_fifty_a_second_is_found_and_kept() {
    let (sink, _dns, e) = start(
        "127.0.2.11",
        Sink::builder().rate_limit(50),
        "Max_Retries = 2",
    );
    submit(&e, 0..800);
    let reports = wait_reports(&e, 800, Duration::from_secs(120), delivered);
    assert!(reports.iter().all(|r| delivered(r) && r.attempt == 1));
    assert!(sink.rate_limited() > 0, "the sink limited nothing: no test");
    let at: Vec<Instant> = sink.messages().iter().map(|m| m.at).collect();
    let span = at[799].duration_since(at[400]).as_secs_f64();
    let rate = 399.0 / span;
    assert!(
        (40.0..=52.0).contains(&rate),
        "after convergence {rate:.1} messages a second against an allowance of 50"
    );
}

#[test]
fn when_the_allowance_rises_the_limit_climbs_back_gradually() {
    let (sink, _dns, e) = start(
        "127.0.2.12",
        Sink::builder()
            .refuse_beyond(2)
            .delay(Duration::from_millis(20)),
        "Domain \"adaptive.test\" { Max_Outbound_Connections = 8 }",
    );
    submit(&e, 0..5000);
    let until = Instant::now() + Duration::from_secs(30);
    while sink.refused() == 0 || limit_now(&e) != Some(2) {
        assert!(
            Instant::now() < until,
            "never settled at 2: {:?}",
            limit_now(&e)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sink.set_allowed_connections(Some(8));
    let raised_at = sink.messages().len();
    let mut seen = vec![2];
    let until = Instant::now() + Duration::from_secs(60);
    while seen.last().copied().unwrap_or(0) < 6 {
        assert!(Instant::now() < until, "never climbed: {seen:?}");
        if let Some(l) = limit_now(&e)
            && seen.last() != Some(&l)
        {
            seen.push(l);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let climbed_with = sink.messages().len() - raised_at;
    assert!(
        seen.windows(2).all(|w| w[1] > w[0]),
        "it only climbs: {seen:?}"
    );
    // Additive increase: a connection more for as many deliveries as
    // there are connections, so from 2 to 6 takes 3 + 4 + 5 of them at
    // least (a reset or a doubling would take a few). Counted from the
    // raise, which a late look at the limit only makes more.
    assert!(
        climbed_with >= 10,
        "climbed from 2 to 6 with {climbed_with} deliveries: {seen:?}"
    );
}

#[test]
fn a_suspend_rule_holds_the_queue_for_its_time_then_resumes() {
    let (sink, _dns, e) = start(
        "127.0.2.13",
        Sink::builder().tempfail_first(1),
        "Reply_Rule hold {\n  Match = \"/temporary failure/\"\n  Action = suspend\n  Suspend_For = 2\n}",
    );
    let started = Instant::now();
    submit(&e, 0..1);
    let until = Instant::now() + Duration::from_secs(10);
    while sink.connections() == 0 || started.elapsed() < Duration::from_millis(300) {
        assert!(Instant::now() < until);
        std::thread::sleep(Duration::from_millis(10));
    }
    submit(&e, 1..2);
    let reports = wait_reports(&e, 2, Duration::from_secs(10), delivered);
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "the hold was not kept: {:?}",
        started.elapsed()
    );
    assert!(
        reports.iter().all(|r| delivered(r) && r.attempt == 1),
        "{reports:?}"
    );
    assert_eq!(sink.message_count(), 2);
}

#[test]
fn a_bounce_rule_fails_at_once_with_the_reply_and_class_in_the_dsn() {
    let (_sink, _dns, e) = start(
        "127.0.2.14",
        Sink::builder().tempfail_rcpt("busy@adaptive.test"),
        "Retry_Interval = 1\nReply_Rule busy {\n  Match = \"/mailbox busy/\"\n  Class = mailbox_full\n  Action = bounce\n}",
    );
    e.submit(message(
        1,
        "default",
        "adaptive.test",
        &["busy@adaptive.test"],
    ));
    let r = wait_reports(&e, 1, Duration::from_secs(10), |_| true).remove(0);
    assert!(
        matches!(&r.outcome, Outcome::Permanent(reply) if reply.code == 451),
        "{r:?}"
    );
    assert_eq!(r.class.as_str(), "mailbox_full");
    let bounce = e.bounces().recv_timeout(Duration::from_secs(5)).unwrap();
    let parsed = MessageParser::default().parse(&bounce.body[..]).unwrap();
    let text = String::from_utf8_lossy(parsed.raw_message()).into_owned();
    assert!(
        text.contains("Diagnostic-Code: smtp; 451 4.2.1 mailbox busy"),
        "{text}"
    );
    assert!(text.contains("X-Postern-Class: mailbox_full"), "{text}");
}

#[test]
fn internal_deferrals_cost_no_attempt_and_bounce_nothing() {
    let (sink, _dns, e) = start(
        "127.0.2.15",
        Sink::builder().refuse_beyond(1).rate_limit(40),
        "Max_Retries = 2\nAdaptive_Delivery = false\n\
         Domain \"adaptive.test\" { Max_Outbound_Connections = 10 }",
    );
    submit(&e, 0..300);
    let reports = wait_reports(&e, 300, Duration::from_secs(120), delivered);
    let deferrals = sink.refused() + sink.rate_limited();
    assert!(deferrals >= 50, "only {deferrals} deferrals: no test");
    assert!(
        reports.iter().all(|r| delivered(r) && r.attempt == 1),
        "an attempt was counted"
    );
    assert!(e.bounces().try_recv().is_err(), "a bounce");
    assert_eq!(sink.message_count(), 300);
}
