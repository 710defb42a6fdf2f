//! The engine against the testkit's DNS server and sinks over real TCP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::{
    TestEngine, block_on, dead_port, delivered, engine, ip, message, sinks, wait_reports,
};
use postern_smtp::Reply;
use postern_smtp::client::Outcome;
use postern_smtp::xclient::Xclient;
use postern_testkit::dns::DnsServer;
use postern_testkit::sink::Sink;
use postern_testkit::tls::TestCa;

fn two_mx(domain: &str, better: &str, worse: &str) -> DnsServer {
    DnsServer::builder()
        .mx(domain, 10, "mx10.example.com")
        .mx(domain, 20, "mx20.example.com")
        .a("mx10.example.com", better.parse().unwrap())
        .a("mx20.example.com", worse.parse().unwrap())
        .start()
        .unwrap()
}

#[test]
fn a_worse_mx_is_never_used_while_the_better_one_has_room() {
    let slow = Sink::builder().delay(Duration::from_millis(10));
    let (port, s) = sinks(vec![("127.0.0.10", slow), ("127.0.0.20", Sink::builder())]);
    let dns = two_mx("example.com", "127.0.0.10", "127.0.0.20");
    let e = engine(
        &dns,
        &format!(
            "Remote_SMTP_Port = {port}\nDomain \"example.com\" {{ Max_Outbound_Connections = 4 }}"
        ),
    );
    for id in 0..200 {
        e.submit(message(id, "default", "example.com", &["rcpt@example.com"]));
    }
    wait_reports(&e, 200, Duration::from_secs(60), delivered);
    assert_eq!(s[0].message_count(), 200);
    assert_eq!(s[1].connections(), 0, "the pref-20 host saw a connection");
    assert!(s[0].max_concurrent() <= 4, "{}", s[0].max_concurrent());
    assert!(
        s[0].max_concurrent() >= 2,
        "200 ready messages open more than one connection"
    );
    let summary = block_on(e.summary()).unwrap();
    assert!(
        summary.opened_per_loop.iter().filter(|n| **n > 0).count() >= 2,
        "connections on more than one event loop: {summary:?}"
    );
}

#[test]
fn a_host_limit_sends_the_overflow_to_the_next_preference() {
    let slow = Sink::builder().delay(Duration::from_millis(20));
    let (port, s) = sinks(vec![("127.0.0.11", slow.clone()), ("127.0.0.21", slow)]);
    let dns = two_mx("example.net", "127.0.0.11", "127.0.0.21");
    let e = engine(
        &dns,
        &format!(
            "Remote_SMTP_Port = {port}\nHost \"mx10.example.com\" {{ Max_Outbound_Connections = 2 }}\n\
             Domain \"example.net\" {{ Max_Outbound_Connections = 6 }}"
        ),
    );
    for id in 0..120 {
        e.submit(message(id, "default", "example.net", &["rcpt@example.net"]));
    }
    wait_reports(&e, 120, Duration::from_secs(60), delivered);
    assert!(
        s[0].max_concurrent() <= 2,
        "host limit: {}",
        s[0].max_concurrent()
    );
    assert!(s[1].message_count() > 0, "overflow to pref 20");
    assert_eq!(s[0].message_count() + s[1].message_count(), 120);
    assert!(s[0].message_count() > 0);
}

#[test]
fn equal_hosts_share_connections_evenly() {
    let hosts = [
        "127.0.0.31",
        "127.0.0.32",
        "127.0.0.33",
        "127.0.0.34",
        "127.0.0.35",
    ];
    let slow = Sink::builder().delay(Duration::from_millis(20));
    let (port, s) = sinks(hosts.iter().map(|h| (*h, slow.clone())).collect());
    let mut zone = DnsServer::builder();
    for (i, h) in hosts.iter().enumerate() {
        let name = format!("mx{i}.fair.example");
        zone = zone
            .mx("fair.example", 10, &name)
            .a(&name, h.parse().unwrap());
    }
    let dns = zone.start().unwrap();
    let e = engine(
        &dns,
        &format!(
            "Remote_SMTP_Port = {port}\nDomain \"fair.example\" {{ Max_Outbound_Connections = 10 }}"
        ),
    );
    for id in 0..100 {
        e.submit(message(
            id,
            "default",
            "fair.example",
            &["rcpt@fair.example"],
        ));
    }
    wait_reports(&e, 100, Duration::from_secs(60), delivered);
    for sink in &s {
        assert_eq!(sink.max_concurrent(), 2, "{}", sink.addr());
        let n = sink.message_count();
        assert!((10..=30).contains(&n), "{}: {n} of 100", sink.addr());
    }
}

/// A domain whose better MX (`down`) refuses connections and whose
/// backup (`up`) takes mail, and an engine with `conf` (`Remote_SMTP_Port`
/// is added). Five messages are delivered through the backup, at their
/// first attempt. Returns the common port too.
fn failed_over(down: &str, up: &str, conf: &str) -> (u16, Sink, DnsServer, TestEngine) {
    let port = dead_port(down);
    let backup = Sink::builder().ip(ip(up)).port(port).start().unwrap();
    let dns = two_mx("flaky.example", down, up);
    let e = engine(&dns, &format!("Remote_SMTP_Port = {port}\n{conf}"));
    for id in 0..5 {
        e.submit(message(
            id,
            "default",
            "flaky.example",
            &["r@flaky.example"],
        ));
    }
    let reports = wait_reports(&e, 5, Duration::from_secs(30), delivered);
    assert!(
        reports.iter().all(|r| delivered(r) && r.attempt == 1),
        "failing over cost no attempt: {reports:?}"
    );
    assert_eq!(backup.message_count(), 5);
    (port, backup, dns, e)
}

#[test]
fn a_stopped_host_is_skipped_at_once() {
    // Waiting for the stopped host (its retry time) or for the domain's
    // retry would take ten minutes: far beyond the wait for the reports.
    let (_port, _backup, _dns, e) = failed_over(
        "127.0.0.43",
        "127.0.0.44",
        "Host_Failure_Retry = 600\nRetry_Interval = 600",
    );
    let view = block_on(e.queue("default", "flaky.example")).unwrap();
    let host = view.hosts.iter().find(|h| h.level == 0).unwrap();
    assert!(
        !host.reachable && host.consecutive_failures >= 1,
        "{view:?}"
    );
}

#[test]
fn a_stopped_host_is_used_again_after_the_retry_time() {
    let down = "127.0.0.41";
    let (port, backup, _dns, e) = failed_over(
        down,
        "127.0.0.42",
        "Host_Failure_Retry = 1\nIdle_Timeout = 30",
    );

    // Once the retry time has passed, mail makes a probe go to the better
    // host; only its success opens the host again.
    let revived = Sink::builder().ip(ip(down)).port(port).start().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    e.submit(message(5, "default", "flaky.example", &["r@flaky.example"]));
    wait_reports(&e, 1, Duration::from_secs(10), delivered);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let view = block_on(e.queue("default", "flaky.example")).unwrap();
        if view.hosts.iter().any(|h| h.level == 0 && h.reachable) {
            break;
        }
        assert!(Instant::now() < until, "no probe made it: {view:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(revived.connections(), 1, "one probe");
    let before = revived.message_count();
    for id in 6..11 {
        e.submit(message(
            id,
            "default",
            "flaky.example",
            &["r@flaky.example"],
        ));
    }
    wait_reports(&e, 5, Duration::from_secs(10), delivered);
    assert_eq!(
        revived.message_count(),
        before + 5,
        "the better host is used again"
    );
    assert_eq!(backup.message_count() + revived.message_count(), 11);
}

#[test]
fn lmtp_partial_success_is_reported_per_recipient() {
    let full = Reply::with_status(452, (4, 2, 2), "mailbox full");
    let sink = Sink::builder()
        .lmtp()
        .lmtp_reply("full@lmtp.example", full)
        .permfail_rcpt("nobody@lmtp.example")
        .start()
        .unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let e = engine(
        &dns,
        &format!("Delivery_Method = LMTP\nGateway = \"{}\"", sink.addr()),
    );
    e.submit(message(
        7,
        "default",
        "lmtp.example",
        &[
            "ok@lmtp.example",
            "full@lmtp.example",
            "nobody@lmtp.example",
        ],
    ));
    let reports = wait_reports(&e, 3, Duration::from_secs(10), |_| true);
    let by = |r: &str| {
        reports
            .iter()
            .find(|x| x.recipient == r)
            .unwrap()
            .outcome
            .clone()
    };
    assert!(matches!(by("ok@lmtp.example"), Outcome::Delivered(_)));
    assert!(matches!(by("full@lmtp.example"), Outcome::Transient(r) if r.code == 452));
    assert!(matches!(by("nobody@lmtp.example"), Outcome::Permanent(r) if r.code == 550));
    assert!(reports.iter().all(|r| r.id == 7 && r.attempt == 1));
    assert_eq!(sink.messages()[0].rcpt_to, ["ok@lmtp.example"]);
    let view = block_on(e.queue("default", "lmtp.example")).unwrap();
    assert_eq!(view.delayed, 1, "the 452 recipient waits for a retry");
}

#[test]
fn tls_required_without_starttls_is_transient_4_7_6() {
    let sink = Sink::builder().start().unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let e = engine(
        &dns,
        &format!(
            "TLS = required\nMX_Failures_To_Delay = 1\nGateway = \"{}\"",
            sink.addr()
        ),
    );
    e.submit(message(
        1,
        "default",
        "secure.example",
        &["a@secure.example"],
    ));
    let r = wait_reports(&e, 1, Duration::from_secs(10), |_| true).remove(0);
    match r.outcome {
        Outcome::Transient(reply) => {
            assert_eq!(reply.status.unwrap().to_string(), "4.4.0");
            assert!(reply.text().contains("last: 451 4.7.6"), "{reply}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sink.message_count(), 0);
}

#[test]
fn auth_to_a_gateway_and_the_bind_address() {
    let ca = TestCa::new().unwrap();
    let sink = Sink::builder()
        .ip(ip("127.0.0.61"))
        .tls(ca.issue(&["127.0.0.61"]).unwrap().server_config().unwrap())
        .auth("relay-user", "relay-pass")
        .require_auth()
        .start()
        .unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let e = engine(
        &dns,
        &format!(
            "Binding \"b1\" {{\n  Bind_Address = \"127.0.0.71\"\n  Gateway = \"{}\"\n  \
             Outbound_SMTP_AUTH_User = \"relay-user\"\n  Outbound_SMTP_AUTH_Pass = \"relay-pass\"\n}}",
            sink.addr()
        ),
    );
    e.submit(message(
        3,
        "b1",
        "anywhere.example",
        &["x@anywhere.example", "y@anywhere.example"],
    ));
    wait_reports(&e, 2, Duration::from_secs(10), delivered);
    let got = sink.messages();
    assert_eq!(got[0].auth.as_deref(), Some("relay-user"));
    assert!(got[0].tls);
    assert_eq!(got[0].peer.ip(), ip("127.0.0.71"));
    assert_eq!(got[0].rcpt_to.len(), 2);
}

#[test]
fn recipients_are_batched_by_max_recipients_per_batch() {
    let sink = Sink::builder().start().unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let e = engine(
        &dns,
        &format!(
            "Max_Recipients_Per_Batch = 2\nGateway = \"{}\"",
            sink.addr()
        ),
    );
    let rcpts = [
        "a@b.example",
        "b@b.example",
        "c@b.example",
        "d@b.example",
        "e@b.example",
    ];
    e.submit(message(9, "default", "b.example", &rcpts));
    wait_reports(&e, 5, Duration::from_secs(10), delivered);
    let mut sizes: Vec<usize> = sink.messages().iter().map(|m| m.rcpt_to.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [1, 2, 2]);
}

#[test]
fn a_permanent_dns_failure_bounces_and_a_transient_one_waits() {
    let dns = DnsServer::builder()
        .null_mx("nullmx.example")
        .servfail("broken.example")
        .start()
        .unwrap();
    let e = engine(&dns, "");
    e.submit(message(
        1,
        "default",
        "nullmx.example",
        &["a@nullmx.example"],
    ));
    e.submit(message(
        2,
        "default",
        "broken.example",
        &["a@broken.example"],
    ));
    let reports = wait_reports(&e, 2, Duration::from_secs(10), |_| true);
    let null = reports.iter().find(|r| r.id == 1).unwrap();
    assert!(
        matches!(&null.outcome, Outcome::Permanent(r) if r.to_string().starts_with("550 5.1.10"))
    );
    let broken = reports.iter().find(|r| r.id == 2).unwrap();
    assert!(matches!(&broken.outcome, Outcome::Transient(r) if r.code == 451));
    let view = block_on(e.queue("default", "broken.example")).unwrap();
    assert_eq!((view.active, view.delayed), (0, 1));
}

#[test]
fn connections_are_reused_up_to_the_limit_and_close_when_idle() {
    let sink = Sink::builder().start().unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let e = engine(
        &dns,
        &format!(
            "Max_Deliveries_Per_Connection = 2\nMax_Outbound_Connections = 1\nIdle_Timeout = 1\nGateway = \"{}\"",
            sink.addr()
        ),
    );
    for id in 0..6 {
        e.submit(message(
            id,
            "default",
            "reuse.example",
            &["a@reuse.example"],
        ));
    }
    wait_reports(&e, 6, Duration::from_secs(10), delivered);
    assert_eq!(sink.connections(), 3, "two messages per connection");
    assert_eq!(sink.max_concurrent(), 1);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        block_on(e.summary()).unwrap().connections,
        0,
        "idle connections closed"
    );
}

#[test]
fn the_server_wide_limit_holds_across_queues() {
    let sink = Sink::builder()
        .delay(Duration::from_millis(5))
        .start()
        .unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let e = engine(
        &dns,
        &format!(
            "Server_Max_Outbound_Connections = 2\nGateway = \"{}\"",
            sink.addr()
        ),
    );
    for id in 0..30 {
        let domain = format!("d{}.example", id % 3);
        e.submit(message(id, "default", &domain, &["a@x.example"]));
    }
    wait_reports(&e, 30, Duration::from_secs(30), delivered);
    assert!(sink.max_concurrent() <= 2, "{}", sink.max_concurrent());
    assert_eq!(sink.message_count(), 30);
}

#[test]
fn hosts_that_keep_failing_delay_the_ready_mail_with_421_4_4_0() {
    let port = dead_port("127.0.0.81");
    let dns = DnsServer::builder()
        .mx("dead.example", 10, "a.dead.example")
        .mx("dead.example", 10, "b.dead.example")
        .a("a.dead.example", "127.0.0.81".parse().unwrap())
        .a("b.dead.example", "127.0.0.82".parse().unwrap())
        .start()
        .unwrap();
    let e = engine(
        &dns,
        &format!("Remote_SMTP_Port = {port}\nMX_Failures_To_Delay = 1"),
    );
    for id in 0..3 {
        e.submit(message(id, "default", "dead.example", &["a@dead.example"]));
    }
    let reports = wait_reports(&e, 3, Duration::from_secs(10), |_| true);
    for r in &reports {
        match &r.outcome {
            Outcome::Transient(reply) => {
                assert_eq!(reply.to_string().get(..9), Some("421 4.4.0"), "{reply}");
                assert!(reply.text().contains("last: 451 4.4.1"), "{reply}");
            }
            other => panic!("{other:?}"),
        }
    }
    let view = block_on(e.queue("default", "dead.example")).unwrap();
    assert_eq!((view.active, view.delayed), (0, 3));
}

#[test]
fn a_message_goes_on_a_new_connection_where_xclient_would_leave_it_as_another_client() {
    // The next hop takes XCLIENT once a connection: the bounce after a
    // client's message cannot tell it that the connection speaks for
    // itself again, so it goes on a connection of its own.
    let sink = Sink::builder().xclient_once().start().unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let e = engine(
        &dns,
        &format!(
            "Outbound_XCLIENT = true\nIdle_Timeout = 30\nGateway = \"{}\"",
            sink.addr()
        ),
    );
    let mut first = message(1, "default", "x.example", &["a@x.example"]);
    first.client = Some(std::sync::Arc::new(Xclient {
        addr: ip("127.0.0.5"),
        name: None,
        helo: "client.test".to_owned(),
        proto: "ESMTP".to_owned(),
    }));
    e.submit(first);
    wait_reports(&e, 1, Duration::from_secs(10), delivered);
    e.submit(message(2, "default", "x.example", &["b@x.example"]));
    let reports = wait_reports(&e, 1, Duration::from_secs(10), delivered);
    assert_eq!(reports.last().map(|r| (r.id, r.attempt)), Some((2, 1)));
    let got = sink.messages();
    assert_eq!(got[0].xclient_addr(), Some("127.0.0.5"));
    assert_eq!(got[1].xclient_addr(), None, "not sent as 127.0.0.5");
    assert_eq!(sink.connections(), 2);
}
