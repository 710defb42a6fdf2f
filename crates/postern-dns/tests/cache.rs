//! The answer cache against a real server: TTLs, negative answers, shared
//! queries and a route's `ttl=`, counted by the queries the server saw.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::time::Duration;

use postern_conf::Config;
use postern_dns::{CachePolicy, Dns};
use postern_testkit::dns::DnsServer;

/// No lower bound on TTLs, so that a 1-second TTL runs out in a test.
fn short_lived() -> CachePolicy {
    CachePolicy {
        min_ttl: Duration::ZERO,
        negative_min_ttl: Duration::ZERO,
        ..CachePolicy::default()
    }
}

fn dns(server: &DnsServer) -> Dns {
    Dns::new(&[server.addr()], Duration::from_secs(1))
        .unwrap()
        .with_cache_policy(short_lived())
}

fn after_ttl() -> Duration {
    Duration::from_millis(1100)
}

#[tokio::test]
async fn an_answer_is_served_from_cache_until_its_ttl_runs_out() {
    let server = DnsServer::builder()
        .ttl(1)
        .mx("example.com", 10, "mx1.example.com")
        .a("mx1.example.com", "127.0.0.2".parse().unwrap())
        .start()
        .unwrap();
    let dns = dns(&server);
    dns.mx("example.com").await.unwrap();
    dns.addresses("mx1.example.com").await.unwrap();
    let (mx, a) = (
        server.queries("example.com"),
        server.queries("mx1.example.com"),
    );
    assert_eq!(mx, 1);
    dns.mx("example.com").await.unwrap();
    dns.addresses("mx1.example.com").await.unwrap();
    assert_eq!(server.queries("example.com"), mx, "cached MX asked again");
    assert_eq!(server.queries("mx1.example.com"), a, "cached A asked again");

    tokio::time::sleep(after_ttl()).await;
    dns.mx("example.com").await.unwrap();
    dns.addresses("mx1.example.com").await.unwrap();
    assert_eq!(server.queries("example.com"), mx + 1);
    assert_eq!(server.queries("mx1.example.com"), 2 * a);
}

#[tokio::test]
async fn the_minimum_ttl_holds_a_short_lived_answer() {
    let server = DnsServer::builder()
        .ttl(1)
        .mx("example.com", 10, "mx1.example.com")
        .start()
        .unwrap();
    let dns = Dns::new(&[server.addr()], Duration::from_secs(1))
        .unwrap()
        .with_cache_policy(CachePolicy {
            min_ttl: Duration::from_secs(60),
            ..CachePolicy::default()
        });
    dns.mx("example.com").await.unwrap();
    tokio::time::sleep(after_ttl()).await;
    dns.mx("example.com").await.unwrap();
    assert_eq!(server.queries("example.com"), 1);
}

#[tokio::test]
async fn negative_answers_are_cached_for_the_negative_ttl() {
    // The testkit zone's SOA gives negative answers a TTL of 1 s.
    let server = DnsServer::builder()
        .a("implicit.example", "127.0.0.4".parse().unwrap())
        .start()
        .unwrap();
    let dns = dns(&server);
    assert!(dns.mx("nowhere.example").await.is_err());
    assert!(dns.mx("nowhere.example").await.is_err());
    assert_eq!(server.queries("nowhere.example"), 1, "NXDOMAIN not cached");
    dns.mx("implicit.example").await.unwrap();
    dns.mx("implicit.example").await.unwrap();
    assert_eq!(server.queries("implicit.example"), 1, "NODATA not cached");

    tokio::time::sleep(after_ttl()).await;
    assert!(dns.mx("nowhere.example").await.is_err());
    assert_eq!(server.queries("nowhere.example"), 2);
}

#[tokio::test]
async fn concurrent_lookups_share_one_query() {
    let server = DnsServer::builder()
        .mx("example.com", 10, "mx1.example.com")
        .start()
        .unwrap();
    let dns = dns(&server);
    let lookups: Vec<_> = (0..20).map(|_| dns.mx("example.com")).collect();
    for answer in futures_util::future::join_all(lookups).await {
        answer.unwrap();
    }
    assert_eq!(server.queries("example.com"), 1);
}

#[tokio::test]
async fn transient_failures_are_asked_again() {
    let server = DnsServer::builder()
        .servfail("broken.example")
        .start()
        .unwrap();
    let dns = dns(&server);
    assert!(dns.mx("broken.example").await.is_err());
    let first = server.queries("broken.example");
    assert!(dns.mx("broken.example").await.is_err());
    assert!(server.queries("broken.example") > first);
}

#[tokio::test]
async fn a_route_ttl_overrides_the_record_ttl() {
    let server = DnsServer::builder()
        .ttl(3600)
        .a("relay.example.net", "127.0.0.7".parse().unwrap())
        .start()
        .unwrap();
    let text = format!(
        "Resolver {{ Nameservers = ( \"{}\" ) }}\nRoutes = ( \"smtp://relay.example.net?ttl=1&type=a\" )",
        server.addr()
    );
    let config = Config::from_text(&text, Path::new("t.conf")).unwrap();
    let dns = Dns::from_config(&config).unwrap();
    let table = dns
        .route_table(&config, "default", "example.com")
        .await
        .unwrap();
    assert!(table.ttl().unwrap() <= Duration::from_secs(1));
    let asked = server.queries("relay.example.net");
    dns.route_table(&config, "default", "example.com")
        .await
        .unwrap();
    assert_eq!(server.queries("relay.example.net"), asked);
    tokio::time::sleep(after_ttl()).await;
    dns.route_table(&config, "default", "example.com")
        .await
        .unwrap();
    assert!(server.queries("relay.example.net") > asked);
    // The record's own TTL (an hour) applies to everyone else.
    dns.addresses("relay.example.net").await.unwrap();
    let table_ttl = dns
        .route_table(&config, "default", "example.com")
        .await
        .unwrap()
        .ttl()
        .unwrap();
    assert!(table_ttl <= Duration::from_secs(1));
}
