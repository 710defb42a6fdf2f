//! The spool under the real daemon: a full disk (a real, small tmpfs),
//! a stored schedule across a restart, a bounce that survives kill -9, and
//! a queue whose mail beyond its memory limit waits in the spool.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{
    ClosedPort, Setup, codes, free_addr, get, inject, received_ids, segments_started, wait_until,
};
use postern_testkit::dns::DnsServer;
use postern_testkit::sink::Sink;
use postern_testkit::tmpfs::Tmpfs;
use serde_json::{Value, json};

fn summary(setup: &Setup) -> Value {
    let config = setup.config();
    let out = postern_e2e::postern(&["summary", "--json", "--config", config.to_str().unwrap()]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn events<'a>(log: &'a [Value], event: &str) -> Vec<&'a Value> {
    log.iter().filter(|r| r["event"] == event).collect()
}

#[test]
fn a_full_disk_refuses_new_mail_loses_nothing_and_takes_mail_again_by_itself() {
    let Some(fs) = Tmpfs::mount("6m") else {
        return;
    };
    let dns = DnsServer::builder().start().unwrap();
    let destination = ClosedPort::new("127.0.0.1");
    let sink_addr = destination.addr;
    let setup = Setup::new(
        &dns,
        &format!(
            "Gateway = \"{sink_addr}\"\nRetry_Interval = 2\nHost_Failure_Retry = 2\nSpool_Segment_Size = 262144\nSpool_Reserve = 262144"
        ),
    );
    std::os::unix::fs::symlink(fs.path(), setup.dir.path().join("spool")).unwrap();
    let daemon = setup.start();
    // The destination is down: inject until the spool is full.
    let first = inject(
        json!({"port": setup.listen.port(), "count": 1200, "size": 8000,
        "rcpts": ["r@dest.example"]}),
    );
    let acked: Vec<String> = first
        .iter()
        .filter(|r| r["code"] == 250)
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(codes(&first).contains(&452), "the disk never filled");
    assert!(acked.len() > 100, "{} accepted", acked.len());
    assert_eq!(summary(&setup)["spool"]["healthy"], false);
    // Segments were zero-filled ahead while there was room for them.
    assert!(segments_started(&setup, "zero_filled") >= 1);

    // The destination comes up: every accepted message arrives once.
    let sink = destination.open(Sink::builder());
    wait_until(Duration::from_secs(120), "every accepted message", || {
        let ids = received_ids(&sink);
        acked.iter().all(|id| ids.contains_key(id))
    });
    // New mail is taken again without a restart.
    wait_until(
        Duration::from_secs(60),
        "the listener to take mail again",
        || {
            let again = inject(
                json!({"port": setup.listen.port(), "count": 1, "start": 5000,
            "rcpts": ["r@dest.example"]}),
            );
            codes(&again) == [250]
        },
    );
    wait_until(Duration::from_secs(60), "the new message", || {
        received_ids(&sink).contains_key("<5000.inject@test>")
    });
    let delivered = sink.message_count();
    let ids = received_ids(&sink);
    assert!(ids.values().all(|&n| n == 1), "a message arrived twice");

    // The outcomes written while the disk was full hold across a restart.
    assert_eq!(daemon.terminate(), Some(0));
    let daemon = setup.start();
    wait_until(Duration::from_secs(30), "the summary", || {
        summary(&setup)["spool"]["messages"] == 0
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.message_count(), delivered, "a restart delivered again");
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn a_delayed_message_keeps_its_time_and_attempts_across_a_restart() {
    let dns = DnsServer::builder().start().unwrap();
    let sink_addr = free_addr("127.0.0.1");
    let setup = Setup::new(
        &dns,
        &format!("Gateway = \"{sink_addr}\"\nRetry_Interval = 30"),
    );
    let busy = Sink::builder()
        .port(sink_addr.port())
        .tempfail_every(1)
        .start()
        .unwrap();
    let daemon = setup.start();
    let sent =
        inject(json!({"port": setup.listen.port(), "count": 1, "rcpts": ["r@dest.example"]}));
    assert_eq!(codes(&sent), [250]);
    wait_until(Duration::from_secs(30), "the first attempt", || {
        !events(&setup.log(), "transient_failure").is_empty()
    });
    let failed_at = SystemTime::now();
    assert_eq!(daemon.terminate(), Some(0));
    drop(busy);

    let sink = Sink::builder().port(sink_addr.port()).start().unwrap();
    let daemon = setup.start();
    // Not before its stored time.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        assert_eq!(sink.message_count(), 0, "retried before its time");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until(Duration::from_secs(60), "the retry", || {
        sink.message_count() == 1
    });
    assert!(failed_at.elapsed().unwrap() >= Duration::from_secs(25));
    wait_until(Duration::from_secs(30), "the delivery record", || {
        !events(&setup.log(), "delivery").is_empty()
    });
    let log = setup.log();
    let delivery = events(&log, "delivery");
    assert_eq!(delivery.len(), 1);
    assert_eq!(delivery[0]["attempt"], 2, "the restart cost no attempt");
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn kill_9_after_a_permanent_failure_keeps_its_bounce() {
    let dns = DnsServer::builder().start().unwrap();
    let dest = Sink::builder().permfail_every(1).start().unwrap();
    let origin_port = ClosedPort::new("127.0.0.1");
    let origin_addr = origin_port.addr;
    let setup = Setup::new(
        &dns,
        &format!(
            "Domain \"dest.example\" {{ Gateway = \"{}\" }}\nDomain \"origin.example\" {{ Gateway = \"{origin_addr}\" }}",
            dest.addr()
        ),
    );
    let daemon = setup.start();
    let sent = inject(json!({"port": setup.listen.port(), "count": 1,
        "sender": "s@origin.example", "rcpts": ["r@dest.example"]}));
    assert_eq!(codes(&sent), [250]);
    wait_until(Duration::from_secs(30), "the permanent failure", || {
        !events(&setup.log(), "permanent_failure").is_empty()
    });
    daemon.kill_9();

    let origin = origin_port.open(Sink::builder());
    let daemon = setup.start();
    wait_until(Duration::from_secs(60), "the bounce", || {
        origin.message_count() == 1
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(origin.message_count(), 1, "one bounce");
    let bounce = String::from_utf8_lossy(&origin.messages()[0].body).into_owned();
    assert!(bounce.contains("r@dest.example"), "{bounce}");
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn the_listener_slows_clients_down_then_refuses_while_delivery_is_behind() {
    let dns = DnsServer::builder().start().unwrap();
    let destination = ClosedPort::new("127.0.0.1");
    let down = destination.addr;
    let setup = Setup::new(
        &dns,
        &format!(
            "Gateway = \"{down}\"\nHost_Failure_Retry = 3600\nMax_Ready_Batches = 20\nBackpressure_Delay = 1"
        ),
    );
    let daemon = setup.start();
    let sent =
        inject(json!({"port": setup.listen.port(), "count": 30, "rcpts": ["r@dest.example"]}));
    let codes = codes(&sent);
    let accepted = codes.iter().filter(|c| **c == 250).count();
    assert!((15..=21).contains(&accepted), "{codes:?}");
    assert!(codes.contains(&452), "{codes:?}");
    let (_, metrics) = get(setup.metrics, "/metrics").unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value("postern_listener_delayed_replies_total") >= 5.0,
        "{metrics}"
    );
    assert!(value("postern_listener_rejections_total{reason=\"backpressure\"}") >= 1.0);
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn a_queue_keeps_mail_beyond_its_memory_limit_in_the_spool_and_delivers_it_all_once() {
    let dns = DnsServer::builder().start().unwrap();
    let destination = ClosedPort::new("127.0.0.1");
    let sink_addr = destination.addr;
    let setup = Setup::new(
        &dns,
        &format!("Gateway = \"{sink_addr}\"\nHost_Failure_Retry = 2\nMax_Queued_In_Memory = 10"),
    );
    let in_memory =
        |s: &Value| s["active"].as_u64().unwrap_or(0) + s["delayed"].as_u64().unwrap_or(0);
    let daemon = setup.start();
    // The destination is down: 300 messages for one queue of 10 batches.
    let sent =
        inject(json!({"port": setup.listen.port(), "count": 300, "rcpts": ["r@dest.example"]}));
    assert_eq!(codes(&sent), vec![250; 300]);
    wait_until(
        Duration::from_secs(30),
        "the mail beyond 10 in the spool",
        || {
            let s = summary(&setup);
            s["spooled"].as_u64().is_some_and(|n| n >= 290) && in_memory(&s) <= 10
        },
    );
    let (_, metrics) = get(setup.metrics, "/metrics").unwrap();
    assert!(
        metrics.contains("postern_queue_messages{state=\"spooled\"}"),
        "{metrics}"
    );

    // A restart leaves it there too: only the queue's room is read back.
    assert_eq!(daemon.terminate(), Some(0));
    let daemon = setup.start();
    wait_until(
        Duration::from_secs(30),
        "the recovered mail spooled",
        || {
            let s = summary(&setup);
            s["spooled"].as_u64().is_some_and(|n| n >= 290) && in_memory(&s) == 10
        },
    );

    // The destination comes up: everything arrives, once.
    let sink = destination.open(Sink::builder());
    let expected: Vec<String> = sent
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    wait_until(Duration::from_secs(120), "every message", || {
        let ids = received_ids(&sink);
        expected.iter().all(|id| ids.contains_key(id))
    });
    wait_until(Duration::from_secs(30), "an empty queue and spool", || {
        let s = summary(&setup);
        s["spooled"] == 0 && in_memory(&s) == 0 && s["spool"]["messages"] == 0
    });
    assert_eq!(sink.message_count(), 300);
    assert!(
        received_ids(&sink).values().all(|&n| n == 1),
        "a message arrived twice"
    );
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn spooled_mail_of_a_dead_destination_expires_too() {
    let dns = DnsServer::builder().start().unwrap();
    let destination = ClosedPort::new("127.0.0.1");
    let down = destination.addr;
    let setup = Setup::new(
        &dns,
        &format!(
            "Gateway = \"{down}\"\nHost_Failure_Retry = 1\nMX_Failures_To_Delay = 1\nRetry_Interval = 1\nMessage_Expiration = 2\nMax_Queued_In_Memory = 5"
        ),
    );
    let daemon = setup.start();
    // Null sender: no bounces to queue.
    let sent = inject(
        json!({"port": setup.listen.port(), "count": 40, "sender": "", "rcpts": ["r@dest.example"]}),
    );
    assert_eq!(codes(&sent), vec![250; 40]);
    // Every message expires, those read back from the spool as well.
    wait_until(Duration::from_secs(90), "every message expired", || {
        events(&setup.log(), "expiry").len() == 40
    });
    wait_until(Duration::from_secs(30), "an empty queue and spool", || {
        let s = summary(&setup);
        s["spooled"] == 0 && s["active"] == 0 && s["spool"]["messages"] == 0
    });
    let log = setup.log();
    assert!(
        events(&log, "expiry")
            .iter()
            .all(|r| r["reply"].as_str().unwrap_or("").contains("expired")),
        "{log:?}"
    );
    assert_eq!(daemon.terminate(), Some(0));
}
