//! MTA-STS (RFC 8461) in routing tables, with the testkit's DNS server
//! and a real HTTPS policy server on port 443 of a loopback address
//! (certificates from a test CA).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use postern_conf::{Config, TlsMode, TlsVerify};
use postern_dns::mta_sts::StsMode;
use postern_dns::{CachePolicy, Dns, RouteError, RouteTable};
use postern_testkit::dns::DnsServer;
use postern_testkit::policy::PolicyServer;
use postern_testkit::tls::TestCa;

const ENFORCE: &str =
    "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmax_age: 86400\r\n";

/// A domain with a named and an unnamed MX, its TXT record, its policy
/// host at `ip` (each test its own address, so that tests can run at
/// once), a CA and the policy server.
struct World {
    dns: DnsServer,
    policy: PolicyServer,
    _dir: tempfile::TempDir,
    ca_path: std::path::PathBuf,
}

fn world(ip: &str, policy: &str) -> World {
    world_with(ip, policy, "mta-sts.example.com")
}

/// The same, the policy server's certificate issued for `cert_name`.
fn world_with(ip: &str, policy: &str, cert_name: &str) -> World {
    let ip: IpAddr = ip.parse().unwrap();
    let dns = DnsServer::builder()
        .ttl(0)
        .mx("example.com", 10, "mx1.example.com")
        .mx("example.com", 20, "mx2.other.net")
        .a("mx1.example.com", "127.0.0.2".parse().unwrap())
        .a("mx2.other.net", "127.0.0.3".parse().unwrap())
        .txt("_mta-sts.example.com", "v=STSv1; id=one")
        .addr("mta-sts.example.com", ip)
        .start()
        .unwrap();
    let ca = TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = ca.write_ca(dir.path()).unwrap();
    let tls = ca.issue(&[cert_name]).unwrap();
    let policy = PolicyServer::start(ip, tls.server_config().unwrap(), policy).unwrap();
    World {
        dns,
        policy,
        _dir: dir,
        ca_path,
    }
}

impl World {
    fn config(&self, body: &str) -> Config {
        let text = format!(
            "Resolver {{ Nameservers = ( \"{}\" ) Timeout = 2 }}\nTLS_CA = \"{}\"\n{body}",
            self.dns.addr(),
            self.ca_path.display()
        );
        Config::from_text(&text, Path::new("sts.conf")).unwrap()
    }

    /// A resolver that keeps nothing (records have TTL 0), so that every
    /// build asks DNS again, as a table built after its TTL does.
    fn resolver(&self, config: &Config) -> Dns {
        Dns::from_config(config)
            .unwrap()
            .with_cache_policy(CachePolicy {
                min_ttl: Duration::ZERO,
                negative_min_ttl: Duration::ZERO,
                ..CachePolicy::default()
            })
    }
}

impl World {
    /// The table of example.com with `body` added to the configuration,
    /// built by a fresh resolver.
    async fn table(&self, body: &str) -> Result<RouteTable, RouteError> {
        let config = self.config(body);
        self.resolver(&config)
            .route_table(&config, "default", "example.com")
            .await
    }
}

fn names(table: &RouteTable) -> Vec<String> {
    table.entries().map(|(_, e)| e.name.clone()).collect()
}

#[tokio::test]
async fn enforce_uses_only_named_mx_hosts_over_verified_tls() {
    let w = world("127.44.0.1", ENFORCE);
    let config = w.config("");
    let dns = w.resolver(&config);
    let t = dns
        .route_table(&config, "default", "example.com")
        .await
        .unwrap();
    assert_eq!(names(&t), ["mx1.example.com"]);
    let (_, entry) = t.entries().next().unwrap();
    assert_eq!(entry.tls, TlsMode::Required);
    assert_eq!(entry.tls_verify, TlsVerify::Host);
    let sts = t.mta_sts.as_ref().unwrap();
    assert_eq!(
        (sts.policy.mode, sts.id.as_str()),
        (StsMode::Enforce, "one")
    );
    assert_eq!(sts.unnamed, ["mx2.other.net"]);
    assert!(
        t.left_out
            .iter()
            .any(|l| l.what == "mx2.other.net"
                && l.why.contains("not named by the MTA-STS policy one")),
        "{:?}",
        t.left_out
    );
    assert!(t.refresh_at.is_some());

    // Built again (the TXT record asked again): the cached policy serves.
    for _ in 0..3 {
        let again = dns
            .route_table(&config, "default", "example.com")
            .await
            .unwrap();
        assert_eq!(names(&again), ["mx1.example.com"]);
    }
    assert!(w.dns.queries("_mta-sts.example.com") >= 4);
    assert_eq!(w.policy.requests(), 1, "fetched once per max_age");
}

#[tokio::test]
async fn enforce_naming_no_mx_host_waits_with_4_7_5() {
    let w = world(
        "127.44.0.2",
        "version: STSv1\nmode: enforce\nmx: *.elsewhere.net\nmax_age: 600\n",
    );
    let err = w.table("").await.unwrap_err();
    assert!(matches!(err, RouteError::MtaSts { .. }), "{err}");
    assert_eq!(err.status(), (451, "4.7.5"));
    assert!(!err.is_permanent());
    assert!(err.to_string().contains("*.elsewhere.net"), "{err}");
}

#[tokio::test]
async fn testing_mode_keeps_every_mx_host_and_names_the_unnamed() {
    let w = world(
        "127.44.0.3",
        "version: STSv1\nmode: testing\nmx: mx1.example.com\nmax_age: 600\n",
    );
    let t = w.table("TLS = ifavailable").await.unwrap();
    assert_eq!(names(&t), ["mx1.example.com", "mx2.other.net"]);
    assert!(t.entries().all(|(_, e)| e.tls == TlsMode::IfAvailable));
    let sts = t.mta_sts.as_ref().unwrap();
    assert_eq!(sts.policy.mode, StsMode::Testing);
    assert_eq!(sts.unnamed, ["mx2.other.net"]);
}

#[tokio::test]
async fn a_new_txt_id_fetches_the_policy_again() {
    let w = world("127.44.0.4", ENFORCE);
    let config = w.config("");
    let dns = w.resolver(&config);
    let first = dns
        .route_table(&config, "default", "example.com")
        .await
        .unwrap();
    assert_eq!(names(&first), ["mx1.example.com"]);

    w.policy
        .set_policy("version: STSv1\nmode: enforce\nmx: *.other.net\nmax_age: 600\n");
    w.dns
        .replace_txt("_mta-sts.example.com", "v=STSv1; id=two", 0)
        .unwrap();
    let second = dns
        .route_table(&config, "default", "example.com")
        .await
        .unwrap();
    assert_eq!(names(&second), ["mx2.other.net"]);
    assert_eq!(second.mta_sts.as_ref().unwrap().id, "two");
    assert_eq!(w.policy.requests(), 2);
}

#[tokio::test]
async fn a_failed_fetch_keeps_the_cached_policy_else_delivers_without_one() {
    let w = world("127.44.0.5", ENFORCE);
    let config = w.config("");
    let dns = w.resolver(&config);
    dns.route_table(&config, "default", "example.com")
        .await
        .unwrap();

    // A new id whose policy cannot be fetched: the cached one holds.
    w.policy.set_status(404);
    w.dns
        .replace_txt("_mta-sts.example.com", "v=STSv1; id=two", 0)
        .unwrap();
    let t = dns
        .route_table(&config, "default", "example.com")
        .await
        .unwrap();
    assert_eq!(names(&t), ["mx1.example.com"]);
    assert_eq!(t.mta_sts.as_ref().unwrap().id, "one");
    let note = t
        .left_out
        .iter()
        .find(|l| l.what.starts_with("MTA-STS policy"))
        .expect("the failure is reported");
    assert!(
        note.why.contains("404") && note.why.contains("cached policy one"),
        "{note:?}"
    );
    // The failure is not asked again at once.
    dns.route_table(&config, "default", "example.com")
        .await
        .unwrap();
    assert_eq!(w.policy.requests(), 2);

    // A fresh resolver (nothing cached): as if the domain had no policy.
    let fresh = w.resolver(&config);
    let t = fresh
        .route_table(&config, "default", "example.com")
        .await
        .unwrap();
    assert_eq!(names(&t), ["mx1.example.com", "mx2.other.net"]);
    assert!(t.mta_sts.is_none());
    assert!(
        t.left_out
            .iter()
            .any(|l| l.why.contains("as if the domain had no policy")),
        "{:?}",
        t.left_out
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_failed_fetch() {
    let w = world_with("127.44.0.6", ENFORCE, "www.example.com");
    let t = w.table("").await.unwrap();
    assert!(t.mta_sts.is_none());
    let note = t
        .left_out
        .iter()
        .find(|l| l.what.starts_with("MTA-STS"))
        .unwrap();
    assert!(note.why.contains("TLS"), "{note:?}");
    assert_eq!(w.policy.requests(), 0);
}

#[tokio::test]
async fn off_or_through_a_gateway_no_policy_is_asked_for() {
    let w = world("127.44.0.7", ENFORCE);
    let t = w
        .table(r#"Domain "example.com" { MTA_STS = false }"#)
        .await
        .unwrap();
    assert_eq!(names(&t), ["mx1.example.com", "mx2.other.net"]);
    assert!(t.mta_sts.is_none());

    let t = w
        .table(r#"Domain "example.com" { Gateway = "mx2.other.net" }"#)
        .await
        .unwrap();
    assert_eq!(names(&t), ["mx2.other.net"]);
    assert!(t.mta_sts.is_none());
    assert_eq!(w.dns.queries("_mta-sts.example.com"), 0);
    assert_eq!(w.policy.requests(), 0);
}
