//! Answers of a real authoritative server (the testkit's), classified as
//! delivery needs them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::time::Duration;

use postern_conf::Config;
use postern_dns::{Dns, DnsError, Mx, MxHost};
use postern_testkit::dns::DnsServer;

fn zone() -> DnsServer {
    DnsServer::builder()
        .mx("example.com", 20, "MX2.example.com")
        .mx("example.com", 10, "mx1.example.com")
        .a("mx1.example.com", "127.0.0.2".parse().unwrap())
        .aaaa("mx1.example.com", "::1".parse().unwrap())
        .a("mx2.example.com", "127.0.0.3".parse().unwrap())
        .cname("alias.example.com", "mx2.example.com")
        .a("implicit.example", "127.0.0.4".parse().unwrap())
        .null_mx("nullmx.example")
        .mx("mixed.example", 0, ".")
        .mx("mixed.example", 5, "mx1.example.com")
        .mx("nohost.example", 10, "ghost.example")
        .servfail("broken.example")
        .silent("blackhole.example")
        .start()
        .unwrap()
}

/// A resolver configured exactly as the daemon's: from a `Resolver` stanza.
fn dns(server: &DnsServer) -> Dns {
    let text = format!(
        "Resolver {{ Nameservers = ( \"{}\" ) Timeout = 1 }}",
        server.addr()
    );
    let config = Config::from_text(&text, Path::new("t.conf")).unwrap();
    Dns::from_config(&config).unwrap()
}

fn host(preference: u16, name: &str) -> MxHost {
    MxHost {
        preference,
        name: name.into(),
    }
}

#[tokio::test]
async fn mx_hosts_come_in_preference_order() {
    let server = zone();
    let dns = dns(&server);
    assert_eq!(
        dns.mx("Example.COM").await.unwrap(),
        Mx::Hosts(vec![
            host(10, "mx1.example.com"),
            host(20, "mx2.example.com")
        ])
    );
    let ips = dns.addresses("mx1.example.com").await.unwrap();
    let want: Vec<std::net::IpAddr> = vec!["127.0.0.2".parse().unwrap(), "::1".parse().unwrap()];
    assert_eq!(ips, want);
    let ips = dns.addresses("alias.example.com").await.unwrap();
    assert_eq!(ips, vec!["127.0.0.3".parse::<std::net::IpAddr>().unwrap()]);
}

#[tokio::test]
async fn no_mx_records_means_implicit_mx() {
    let server = zone();
    let dns = dns(&server);
    assert_eq!(dns.mx("implicit.example").await.unwrap(), Mx::Implicit);
    assert_eq!(
        dns.addresses("implicit.example").await.unwrap(),
        vec!["127.0.0.4".parse::<std::net::IpAddr>().unwrap()]
    );
}

#[tokio::test]
async fn null_mx_is_permanent_550_5_1_10() {
    let server = zone();
    let dns = dns(&server);
    let e = dns.mx("nullmx.example").await.unwrap_err();
    assert_eq!(
        e,
        DnsError::NullMx {
            domain: "nullmx.example".into()
        }
    );
    assert!(e.is_permanent());
    assert_eq!(e.status(), (550, "5.1.10"));
    // A "." among real exchangers is dropped, not taken as a Null MX.
    assert_eq!(
        dns.mx("mixed.example").await.unwrap(),
        Mx::Hosts(vec![host(5, "mx1.example.com")])
    );
}

#[tokio::test]
async fn nxdomain_is_permanent() {
    let server = zone();
    let dns = dns(&server);
    let e = dns.mx("nowhere.example").await.unwrap_err();
    assert_eq!(
        e,
        DnsError::NxDomain {
            name: "nowhere.example".into()
        }
    );
    assert!(e.is_permanent());
    assert_eq!(e.status(), (550, "5.1.2"));
    // An MX host that does not exist.
    let e = dns.addresses("ghost.example").await.unwrap_err();
    assert!(matches!(e, DnsError::NxDomain { .. }), "{e:?}");
}

#[tokio::test]
async fn servfail_and_timeout_are_transient() {
    let server = zone();
    let dns = dns(&server);
    let e = dns.mx("broken.example").await.unwrap_err();
    assert!(matches!(e, DnsError::ServerFailure { .. }), "{e:?}");
    assert!(!e.is_permanent());
    assert_eq!(e.status(), (451, "4.4.3"));
    let started = std::time::Instant::now();
    let e = dns.mx("blackhole.example").await.unwrap_err();
    assert!(!e.is_permanent(), "{e:?}");
    assert!(
        matches!(e, DnsError::Timeout { timeout, .. } if timeout == Duration::from_secs(1)),
        "{e:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}
