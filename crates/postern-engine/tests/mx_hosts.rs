//! MX hosts own the connections: domains routed to one host share its
//! pool and its limit; failures and "slow down" replies concern hosts, not
//! messages. Real TCP, the testkit's DNS server and sinks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::{block_on, delivered, engine, ip, message, sinks, wait_reports};
use postern_engine::Report;
use postern_smtp::client::Outcome;
use postern_testkit::dns::DnsServer;
use postern_testkit::sink::Sink;

/// `n` domains whose one MX is `mx.shared.test` at `addr`.
fn shared_mx(n: usize, addr: &str) -> DnsServer {
    let mut zone = DnsServer::builder().a("mx.shared.test", addr.parse().unwrap());
    for i in 0..n {
        zone = zone.mx(&format!("d{i}.test"), 10, "mx.shared.test");
    }
    zone.start().unwrap()
}

fn permanent(r: &Report) -> bool {
    matches!(r.outcome, Outcome::Permanent(_))
}

#[test]
fn three_hundred_domains_share_one_hosts_three_connections() {
    let (port, s) = sinks(vec![(
        "127.0.1.10",
        Sink::builder().delay(Duration::from_millis(2)),
    )]);
    let dns = shared_mx(300, "127.0.1.10");
    let e = engine(
        &dns,
        &format!(
            "Remote_SMTP_Port = {port}\nIdle_Timeout = 30\n\
             Host \"mx.shared.test\" {{ Max_Outbound_Connections = 3 }}"
        ),
    );
    let mut id = 0;
    for round in 0..2 {
        for d in 0..300 {
            id += 1;
            let domain = format!("d{d}.test");
            e.submit(message(
                id,
                "default",
                &domain,
                &[&format!("r{round}@{domain}")],
            ));
        }
    }
    let reports = wait_reports(&e, 600, Duration::from_secs(120), delivered);
    assert!(!reports.iter().any(permanent));
    assert_eq!(s[0].message_count(), 600);
    assert!(s[0].max_concurrent() <= 3, "{}", s[0].max_concurrent());
    assert!(
        s[0].connections() < 30,
        "connections are reused across domains: {} for 300 domains",
        s[0].connections()
    );
}

#[test]
fn two_domains_on_a_host_limited_to_two_both_make_progress() {
    let (port, s) = sinks(vec![(
        "127.0.1.11",
        Sink::builder().delay(Duration::from_millis(3)),
    )]);
    let dns = shared_mx(2, "127.0.1.11");
    let e = engine(
        &dns,
        &format!(
            "Remote_SMTP_Port = {port}\nHost \"mx.shared.test\" {{ Max_Outbound_Connections = 2 }}"
        ),
    );
    // All of d0's mail is queued before any of d1's.
    for id in 0..100 {
        e.submit(message(id, "default", "d0.test", &["a@d0.test"]));
    }
    for id in 100..200 {
        e.submit(message(id, "default", "d1.test", &["b@d1.test"]));
    }
    let reports = wait_reports(&e, 200, Duration::from_secs(60), delivered);
    let order: Vec<&str> = reports
        .iter()
        .filter(|r| delivered(r))
        .map(|r| r.domain())
        .collect();
    let first_half = &order[..100];
    let d1_early = first_half.iter().filter(|d| **d == "d1.test").count();
    assert!(
        d1_early >= 25,
        "d1 waited for d0: {d1_early} of the first 100 deliveries"
    );
    assert!(s[0].max_concurrent() <= 2, "{}", s[0].max_concurrent());
}

#[test]
fn each_binding_has_its_own_host_limit_for_its_source() {
    let (port, s) = sinks(vec![(
        "127.0.1.12",
        Sink::builder().delay(Duration::from_millis(5)),
    )]);
    let dns = shared_mx(1, "127.0.1.12");
    let e = engine(
        &dns,
        &format!(
            "Remote_SMTP_Port = {port}\n\
             Binding \"one\" {{\n  Bind_Address = \"127.0.0.71\"\n  \
               Host \"mx.shared.test\" {{ Max_Outbound_Connections = 1 }}\n}}\n\
             Binding \"three\" {{\n  Bind_Address = \"127.0.0.72\"\n  \
               Host \"mx.shared.test\" {{ Max_Outbound_Connections = 3 }}\n}}"
        ),
    );
    for id in 0..60 {
        let binding = if id % 2 == 0 { "one" } else { "three" };
        e.submit(message(id, binding, "d0.test", &["a@d0.test"]));
    }
    wait_reports(&e, 60, Duration::from_secs(60), delivered);
    let one = s[0].max_concurrent_from(ip("127.0.0.71"));
    let three = s[0].max_concurrent_from(ip("127.0.0.72"));
    assert_eq!(one, 1, "binding one");
    assert!((2..=3).contains(&three), "binding three: {three}");
}

#[test]
fn when_the_better_host_is_free_again_new_mail_goes_back_to_it() {
    let slow = Sink::builder().delay(Duration::from_millis(30));
    let (port, s) = sinks(vec![("127.0.1.13", slow), ("127.0.1.14", Sink::builder())]);
    let dns = DnsServer::builder()
        .mx("pref.test", 10, "mx10.pref.test")
        .mx("pref.test", 20, "mx20.pref.test")
        .a("mx10.pref.test", "127.0.1.13".parse().unwrap())
        .a("mx20.pref.test", "127.0.1.14".parse().unwrap())
        .start()
        .unwrap();
    let e = engine(
        &dns,
        &format!(
            "Remote_SMTP_Port = {port}\nIdle_Timeout = 30\n\
             Host \"mx10.pref.test\" {{ Max_Outbound_Connections = 1 }}"
        ),
    );
    for id in 0..20 {
        e.submit(message(id, "default", "pref.test", &["a@pref.test"]));
    }
    wait_reports(&e, 20, Duration::from_secs(30), delivered);
    let (better, worse) = (s[0].message_count(), s[1].message_count());
    assert!(better > 0 && worse > 0, "overflow: {better} + {worse}");
    // The worse host keeps an idle connection, yet mail goes to the
    // better one while it has room.
    for id in 20..25 {
        e.submit(message(id, "default", "pref.test", &["a@pref.test"]));
        wait_reports(&e, 1, Duration::from_secs(10), delivered);
    }
    assert_eq!(s[0].message_count(), better + 5);
    assert_eq!(s[1].message_count(), worse);
}

#[test]
fn a_dropped_connection_does_not_hold_another_domains_mail() {
    let (port, s) = sinks(vec![("127.0.1.15", Sink::builder().drop_first(1))]);
    let dns = shared_mx(2, "127.0.1.15");
    let e = engine(
        &dns,
        &format!("Remote_SMTP_Port = {port}\nHost_Failure_Retry = 2\nRetry_Interval = 600"),
    );
    e.submit(message(1, "default", "d0.test", &["a@d0.test"]));
    std::thread::sleep(Duration::from_millis(300));
    e.submit(message(2, "default", "d1.test", &["b@d1.test"]));
    // d1 waits for the host to come back (2 s), not for its retry
    // (600 s): a generous cap still tells the two apart.
    let reports = wait_reports(&e, 2, Duration::from_secs(60), delivered);
    assert!(
        reports.iter().all(|r| delivered(r) && r.attempt == 1),
        "waiting for the host cost no attempt: {reports:?}"
    );
    assert_eq!(s[0].message_count(), 2);
}

#[test]
fn auth_refused_on_one_route_leaves_the_other_route_to_the_address() {
    let sink = Sink::builder()
        .ip(ip("127.0.1.16"))
        .auth("good-user", "good-pass")
        .start()
        .unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let addr = sink.addr();
    let e = engine(
        &dns,
        &format!(
            "Host_Failure_Retry = 60\nMX_Failures_To_Delay = 1000\n\
             Auth wrong {{ User = \"good-user\" Password = \"bad-pass\" }}\n\
             Domain \"auth.test\" {{ Routes = ( \"smtp://{addr}?auth=wrong&tls=no\" ) }}\n\
             Domain \"plain.test\" {{ Gateway = \"{addr}\" }}"
        ),
    );
    e.submit(message(1, "default", "auth.test", &["a@auth.test"]));
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let view = block_on(e.queue("default", "auth.test")).unwrap();
        if view.hosts.iter().any(|h| !h.reachable) {
            break;
        }
        assert!(Instant::now() < until, "AUTH failure not seen: {view:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    e.submit(message(2, "default", "plain.test", &["b@plain.test"]));
    let r = wait_reports(&e, 1, Duration::from_secs(10), delivered);
    assert!(r.iter().any(|r| r.id == 2 && delivered(r)), "{r:?}");
    assert_eq!(sink.message_count(), 1);
    let view = block_on(e.queue("default", "auth.test")).unwrap();
    assert_eq!(view.active, 1, "its mail waits for its route: {view:?}");
}

#[test]
fn a_black_holed_better_host_gets_one_probe_at_a_time() {
    let hole = Sink::builder().delay(Duration::from_secs(3600));
    let (port, s) = sinks(vec![("127.0.1.17", hole), ("127.0.1.18", Sink::builder())]);
    let dns = DnsServer::builder()
        .mx("hole.test", 10, "mx10.hole.test")
        .mx("hole.test", 20, "mx20.hole.test")
        .a("mx10.hole.test", "127.0.1.17".parse().unwrap())
        .a("mx20.hole.test", "127.0.1.18".parse().unwrap())
        .start()
        .unwrap();
    let e = engine(
        &dns,
        &format!(
            "Remote_SMTP_Port = {port}\nEHLO_Timeout = 1\nHost_Failure_Retry = 1\n\
             Domain \"hole.test\" {{ Max_Outbound_Connections = 10 }}"
        ),
    );
    let mut most = 0;
    let started = Instant::now();
    let mut id = 0;
    while started.elapsed() < Duration::from_secs(5) {
        for _ in 0..5 {
            id += 1;
            e.submit(message(id, "default", "hole.test", &["a@hole.test"]));
        }
        let view = block_on(e.queue("default", "hole.test")).unwrap();
        if let Some(h) = view.hosts.iter().find(|h| h.level == 0) {
            most = most.max(h.connections);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_reports(&e, id as usize, Duration::from_secs(30), delivered);
    assert_eq!(s[1].message_count(), id as usize);
    assert_eq!(most, 1, "connections to the black hole at once");
    let probes = s[0].connections();
    assert!(
        (2..=4).contains(&probes),
        "one probe per retry window in 5 s: {probes}"
    );
}

#[test]
fn a_421_beyond_two_connections_costs_no_attempt_and_bounces_nothing() {
    let (port, s) = sinks(vec![(
        "127.0.1.19",
        Sink::builder()
            .refuse_beyond(2)
            .delay(Duration::from_millis(2)),
    )]);
    let dns = shared_mx(1, "127.0.1.19");
    let e = engine(
        &dns,
        &format!(
            "Remote_SMTP_Port = {port}\nMax_Retries = 3\nMax_Deliveries_Per_Connection = 20\n\
             Domain \"d0.test\" {{ Max_Outbound_Connections = 20 }}"
        ),
    );
    for id in 0..200 {
        e.submit(message(id, "default", "d0.test", &["a@d0.test"]));
    }
    let reports = wait_reports(&e, 200, Duration::from_secs(60), delivered);
    assert_eq!(s[0].message_count(), 200);
    assert!(s[0].refused() > 0, "the sink refused nothing: no test");
    assert!(!reports.iter().any(permanent), "a bounce");
    assert!(
        reports.iter().all(|r| delivered(r) && r.attempt == 1),
        "a 421 counted an attempt"
    );
}

#[test]
fn a_connection_that_panics_gives_its_batch_back() {
    let sink = Sink::builder().start().unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let e = engine(
        &dns,
        &format!("Retry_Interval = 1\nGateway = \"{}\"", sink.addr()),
    );
    e.panic_on_recipient("boom@panic.test");
    std::thread::sleep(Duration::from_millis(50));
    e.submit(message(1, "default", "panic.test", &["boom@panic.test"]));
    let reports = wait_reports(&e, 1, Duration::from_secs(20), delivered);
    let first = &reports[0];
    assert!(
        matches!(&first.outcome, Outcome::Transient(r) if r.text().contains("ended unexpectedly")),
        "{first:?}"
    );
    let last = reports.last().unwrap();
    assert!(delivered(last) && last.attempt == 2, "{last:?}");
    assert_eq!(sink.message_count(), 1);
}
