//! The test DNS server answers like an authoritative server, over UDP and
//! TCP, as seen by a real resolver.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use postern_testkit::dns::DnsServer;

fn resolver(addr: SocketAddr, tcp_only: bool) -> TokioResolver {
    let mut ns = if tcp_only {
        NameServerConfig::tcp(addr.ip())
    } else {
        NameServerConfig::udp_and_tcp(addr.ip())
    };
    for c in &mut ns.connections {
        c.port = addr.port();
    }
    let config = ResolverConfig::from_name_servers(vec![ns]);
    let mut b = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
    b.options_mut().timeout = Duration::from_millis(500);
    b.options_mut().attempts = 1;
    b.options_mut().cache_size = 0;
    b.build().unwrap()
}

fn zone() -> DnsServer {
    DnsServer::builder()
        .mx("example.com", 20, "mx2.example.com")
        .mx("example.com", 10, "mx1.example.com")
        .a("mx1.example.com", "127.0.0.2".parse().unwrap())
        .aaaa("mx1.example.com", "::1".parse().unwrap())
        .a("mx2.example.com", "127.0.0.3".parse().unwrap())
        .cname("alias.example.com", "mx1.example.com")
        .a("noemail.example", "127.0.0.4".parse().unwrap())
        .null_mx("nullmx.example")
        .servfail("broken.example")
        .silent("blackhole.example")
        .start()
        .unwrap()
}

fn mx_set(lookup: &hickory_resolver::lookup::Lookup) -> Vec<(u16, String)> {
    let mut v: Vec<(u16, String)> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::MX(mx) => Some((mx.preference, mx.exchange.to_string())),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn answers_mx_a_aaaa_and_follows_cnames_over_udp_and_tcp() {
    let dns = zone();
    for tcp_only in [false, true] {
        let r = resolver(dns.addr(), tcp_only);
        let mx = r.lookup("example.com.", RecordType::MX).await.unwrap();
        assert_eq!(
            mx_set(&mx),
            vec![
                (10, "mx1.example.com.".into()),
                (20, "mx2.example.com.".into())
            ]
        );
        let ips: Vec<IpAddr> = r
            .lookup_ip("mx1.example.com.")
            .await
            .unwrap()
            .iter()
            .collect();
        assert!(ips.contains(&"127.0.0.2".parse().unwrap()), "{ips:?}");
        let ips: Vec<IpAddr> = r
            .lookup_ip("alias.example.com.")
            .await
            .unwrap()
            .iter()
            .collect();
        assert!(
            ips.contains(&"127.0.0.2".parse().unwrap()),
            "CNAME followed: {ips:?}"
        );
    }
    assert!(dns.queries("example.com") >= 2);
}

#[tokio::test]
async fn null_mx_nodata_and_nxdomain() {
    let dns = zone();
    let r = resolver(dns.addr(), false);
    let null = r.lookup("nullmx.example.", RecordType::MX).await.unwrap();
    assert_eq!(mx_set(&null), vec![(0, ".".into())]);
    let nodata = r
        .lookup("noemail.example.", RecordType::MX)
        .await
        .unwrap_err();
    assert!(
        nodata.is_no_records_found() && !nodata.is_nx_domain(),
        "{nodata:?}"
    );
    let nx = r
        .lookup("nowhere.example.", RecordType::MX)
        .await
        .unwrap_err();
    assert!(nx.is_nx_domain(), "{nx:?}");
}

#[tokio::test]
async fn servfail_and_silence() {
    let dns = zone();
    let r = resolver(dns.addr(), false);
    let e = r
        .lookup("broken.example.", RecordType::MX)
        .await
        .unwrap_err();
    assert!(!e.is_nx_domain() && !e.is_no_records_found(), "{e:?}");
    assert!(
        dns.queries("broken.example") >= 1,
        "the query reached the server"
    );
    let started = std::time::Instant::now();
    let e = r
        .lookup("blackhole.example.", RecordType::MX)
        .await
        .unwrap_err();
    assert!(!e.is_nx_domain() && !e.is_no_records_found(), "{e:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "it waited for the timeout"
    );
    assert!(dns.queries("blackhole.example") >= 1);
}

#[test]
fn stops_when_dropped() {
    let dns = zone();
    let addr = dns.addr();
    drop(dns);
    // The port is free again once the server thread has ended.
    std::net::TcpListener::bind(addr).unwrap();
}

/// Each domain is a zone of its own: negative answers, CNAMEs and
/// wildcards work across zones as they do within one.
#[tokio::test]
async fn domains_in_zones_of_their_own_answer_alike() {
    let dns = DnsServer::builder()
        .mx("a.test", 10, "mx.b.test")
        .a("mx.b.test", "127.0.0.5".parse().unwrap())
        .cname("alias.a.test", "mx.b.test")
        .a("*.w.test", "127.0.0.6".parse().unwrap())
        .start()
        .unwrap();
    let r = resolver(dns.addr(), false);
    let mx = r.lookup("a.test.", RecordType::MX).await.unwrap();
    assert_eq!(mx_set(&mx), vec![(10, "mx.b.test.".into())]);
    let nx = r
        .lookup("_mta-sts.a.test.", RecordType::TXT)
        .await
        .unwrap_err();
    assert!(nx.is_nx_domain(), "{nx:?}");
    let nodata = r.lookup("a.test.", RecordType::A).await.unwrap_err();
    assert!(
        nodata.is_no_records_found() && !nodata.is_nx_domain(),
        "{nodata:?}"
    );
    let nx = r.lookup("c.test.", RecordType::MX).await.unwrap_err();
    assert!(nx.is_nx_domain(), "{nx:?}");
    let ips: Vec<IpAddr> = r.lookup_ip("alias.a.test.").await.unwrap().iter().collect();
    assert_eq!(ips, vec!["127.0.0.5".parse::<IpAddr>().unwrap()]);
    let ips: Vec<IpAddr> = r.lookup_ip("x.w.test.").await.unwrap().iter().collect();
    assert_eq!(ips, vec!["127.0.0.6".parse::<IpAddr>().unwrap()]);
}
