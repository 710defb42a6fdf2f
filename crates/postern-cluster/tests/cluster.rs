//! The cluster against a real Redis: leases counted across nodes, given
//! back on drop, expired when a node dies; throttles shared; Redis lost
//! and found again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::Duration;

use postern_cluster::{Cluster, Grant, Lease, Options, Tokens};
use postern_testkit::redis::RedisServer;

fn node(redis: &RedisServer, name: &str, ttl: u64) -> Cluster {
    Cluster::start(Options {
        redis: redis.url(),
        node: name.to_owned(),
        lease_ttl: Duration::from_secs(ttl),
    })
    .unwrap()
}

fn acquire(c: &Cluster, host: &str, limit: u32) -> Option<Lease> {
    let (tx, rx) = mpsc::channel();
    c.acquire(host, limit, move |g| {
        let _ = tx.send(g);
    });
    match rx.recv_timeout(Duration::from_secs(5)).unwrap() {
        Grant::Granted(lease) => Some(lease),
        Grant::Refused => None,
    }
}

fn take(c: &Cluster, name: &str, throttle: (u32, u32), want: u32) -> Tokens {
    let (tx, rx) = mpsc::channel();
    c.take(name, throttle, want, move |t| {
        let _ = tx.send(t);
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap()
}

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    postern_testkit::wait_until(Duration::from_secs(30), what, f);
}

#[test]
fn a_host_limit_counts_every_node_and_leases_come_back() {
    let redis = RedisServer::start().unwrap();
    let a = node(&redis, "a", 10);
    let b = node(&redis, "b", 10);
    assert!(a.is_shared() && b.is_shared());
    wait_for("two nodes", || a.nodes() == 2 && b.nodes() == 2);
    let mut held = Vec::new();
    for i in 0..4 {
        let c = if i % 2 == 0 { &a } else { &b };
        held.push(acquire(c, "default/127.0.0.9:25", 4).expect("within the limit"));
    }
    assert!(acquire(&a, "default/127.0.0.9:25", 4).is_none());
    assert!(acquire(&b, "default/127.0.0.9:25", 4).is_none());
    // Another host has its own count.
    assert!(acquire(&b, "default/127.0.0.10:25", 4).is_some());
    let status = rt().block_on(a.status()).unwrap();
    assert!(status.redis_up);
    assert_eq!(status.nodes.len(), 2);
    let host = status
        .hosts
        .iter()
        .find(|h| h.host == "default/127.0.0.9:25")
        .unwrap();
    assert_eq!(host.leases.get("a"), Some(&2));
    assert_eq!(host.leases.get("b"), Some(&2));
    // A dropped lease is released at once.
    held.pop();
    wait_for("a released slot", || {
        acquire(&a, "default/127.0.0.9:25", 4)
            .map(|l| held.push(l))
            .is_some()
    });
    a.stop();
    b.stop();
    assert_eq!(redis.command(&["ZCARD", "postern:nodes"]).unwrap(), ":0");
    assert_eq!(
        redis
            .command(&["ZCARD", "postern:lease:default/127.0.0.9:25"])
            .unwrap(),
        ":0"
    );
}

#[test]
fn a_dead_nodes_leases_expire_after_the_ttl() {
    let redis = RedisServer::start().unwrap();
    let b = node(&redis, "b", 3);
    // A node that died holding three leases with a 3 s TTL: they are in
    // Redis, renewed by nobody (Redis and the test share one clock).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let expiry = (now + 3000).to_string();
    for id in ["1", "2", "3"] {
        let member = format!("dead/0/{id}");
        let added = redis
            .command(&["ZADD", "postern:lease:h/127.0.0.9:25", &expiry, &member])
            .unwrap();
        assert_eq!(added, ":1");
    }
    redis
        .command(&["SADD", "postern:hosts", "postern:lease:h/127.0.0.9:25"])
        .unwrap();
    assert!(acquire(&b, "h/127.0.0.9:25", 3).is_none());
    let status = rt().block_on(b.status()).unwrap();
    assert_eq!(status.hosts[0].leases.get("dead"), Some(&3));
    wait_for("the dead node's leases to expire", || {
        acquire(&b, "h/127.0.0.9:25", 3).is_some()
    });
    let now_after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert!(now_after >= now + 3000, "not before the TTL");
    b.stop();
}

#[test]
fn throttles_share_one_bucket() {
    let redis = RedisServer::start().unwrap();
    let a = node(&redis, "a", 10);
    let b = node(&redis, "b", 10);
    let mut got = 0;
    for c in [&a, &b, &a, &b, &a, &b] {
        if let Tokens::Got(n) = take(c, "Outbound_Throttle_Messages global", (5, 60), 2) {
            got += n;
        }
    }
    assert_eq!(got, 5, "a bucket of 5 tokens gives 5 in all");
    match take(&b, "Outbound_Throttle_Messages global", (5, 60), 1) {
        Tokens::Wait(d) => assert!(d > Duration::from_secs(5) && d <= Duration::from_secs(12)),
        other => panic!("{other:?}"),
    }
    a.stop();
    b.stop();
}

#[test]
fn redis_lost_means_local_shares_then_shared_again() {
    let mut redis = RedisServer::start().unwrap();
    let a = node(&redis, "a", 3);
    let b = node(&redis, "b", 3);
    wait_for("two nodes", || a.nodes() == 2);
    let first = acquire(&a, "h/127.0.0.9:25", 4).unwrap();
    redis.stop();
    // A heartbeat goes at most every second, each with a 250 ms
    // deadline: the first one that fails makes the node local.
    postern_testkit::wait_until(Duration::from_secs(10), "local", || !a.is_shared());
    assert_eq!(a.share(4), 2, "four divided by the two nodes last seen");
    assert_eq!(a.share(1), 1, "at least one");
    assert_eq!(
        take(&a, "x", (10, 1), 1),
        Tokens::Unavailable,
        "throttles fall back too"
    );
    let local = a.local("h/127.0.0.9:25");
    redis.restart().unwrap();
    wait_for("shared again", || a.is_shared() && b.is_shared());
    // Both leases (the one from before and the local one) are registered again.
    assert_eq!(
        redis
            .command(&["ZCARD", "postern:lease:h/127.0.0.9:25"])
            .unwrap(),
        ":2"
    );
    drop((first, local));
    a.stop();
    b.stop();
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_slow_down_signal_reaches_the_other_nodes_not_its_own() {
    let redis = RedisServer::start().unwrap();
    let a = node(&redis, "a", 3);
    let b = node(&redis, "b", 3);
    let (to_a, at_a) = mpsc::channel();
    let (to_b, at_b) = mpsc::channel();
    a.on_signal(move |s| {
        let _ = to_a.send(s);
    });
    b.on_signal(move |s| {
        let _ = to_b.send(s);
    });
    a.publish(
        "default/127.0.0.9:25",
        "too_many_connections",
        "421 4.7.0 too many",
    );
    // The next heartbeat (every second at most) brings it to b.
    let got = at_b.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(got.host, "default/127.0.0.9:25");
    assert_eq!(got.class, "too_many_connections");
    assert_eq!(got.node, "a");
    assert_eq!(got.reply, "421 4.7.0 too many");
    // Once only, and never to the node that published it.
    assert!(at_b.recv_timeout(Duration::from_secs(2)).is_err());
    assert!(at_a.try_recv().is_err());
    a.stop();
    b.stop();
}

#[test]
fn a_node_refused_a_lease_makes_the_holder_keep_to_its_fair_share() {
    let redis = RedisServer::start().unwrap();
    let a = node(&redis, "a", 3);
    let b = node(&redis, "b", 3);
    wait_for("two nodes", || a.nodes() == 2 && b.nodes() == 2);
    let _held: Vec<Lease> = (0..4)
        .map(|_| acquire(&a, "h/127.0.0.9:25", 4).unwrap())
        .collect();
    assert!(!a.contended("h/127.0.0.9:25"));
    // b waits for the host: at a's next heartbeat, a learns it.
    assert!(acquire(&b, "h/127.0.0.9:25", 4).is_none());
    wait_for("a to learn that b waits", || a.contended("h/127.0.0.9:25"));
    assert_eq!(a.fair_share(4), 2);
    assert!(!b.contended("h/127.0.0.9:25"), "b holds nothing there");
    // Nobody asks any more: the mark fades.
    wait_for("the mark to fade", || !a.contended("h/127.0.0.9:25"));
    a.stop();
    b.stop();
}
