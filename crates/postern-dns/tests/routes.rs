//! Routing tables built from real configurations and a real authoritative
//! DNS server (the testkit's), as CONFIG.md's "Routing" describes them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::path::Path;

use postern_conf::{Config, Scheme, TlsMode, TlsVerify};
use postern_dns::{AuthSource, Decision, Dns, DnsError, RouteError, RouteTable};
use postern_testkit::dns::DnsServer;

/// The zone most tests share: a domain with two MX hosts, smart hosts
/// with and without MX records, and the failure cases.
fn zone() -> DnsServer {
    DnsServer::builder()
        .mx("example.com", 10, "mx1.example.com")
        .mx("example.com", 20, "mx2.example.com")
        .a("mx1.example.com", "127.0.0.2".parse().unwrap())
        .a("mx2.example.com", "127.0.0.3".parse().unwrap())
        .a("my.local.smart.host", "127.0.0.5".parse().unwrap())
        .mx("relay.example.net", 5, "in1.relay.example.net")
        .mx("relay.example.net", 5, "in2.relay.example.net")
        .a("in1.relay.example.net", "127.0.1.1".parse().unwrap())
        .a("in2.relay.example.net", "127.0.1.2".parse().unwrap())
        .a("plain.relay.example.net", "127.0.2.1".parse().unwrap())
        .a("a.relay", "127.0.3.1".parse().unwrap())
        .a("b.relay", "127.0.3.2".parse().unwrap())
        .a("c.relay", "127.0.3.3".parse().unwrap())
        .a("d.relay", "127.0.3.4".parse().unwrap())
        .a("e.relay", "127.0.3.5".parse().unwrap())
        .null_mx("nullmx.example")
        .servfail("broken.example")
        .mx("metadata.example", 10, "meta.example")
        .a("meta.example", "169.254.169.254".parse().unwrap())
        .start()
        .unwrap()
}

/// The configuration `body` with a `Resolver` stanza for `server`.
fn config(server: &DnsServer, body: &str) -> Config {
    let text = format!(
        "Resolver {{ Nameservers = ( \"{}\" ) Timeout = 1 }}\n{body}",
        server.addr()
    );
    Config::from_text(&text, Path::new("routes.conf")).unwrap()
}

async fn table(server: &DnsServer, body: &str, domain: &str) -> Result<RouteTable, RouteError> {
    let config = config(server, body);
    let dns = Dns::from_config(&config).unwrap();
    dns.route_table(&config, "default", domain).await
}

/// The table as (level, "name addr") lines.
fn shape(table: &RouteTable) -> Vec<(u32, String)> {
    table
        .entries()
        .map(|(level, e)| (level, format!("{} {}", e.name, e.addr)))
        .collect()
}

fn row(level: u32, name: &str, addr: &str) -> (u32, String) {
    (level, format!("{name} {addr}"))
}

#[tokio::test]
async fn seed_smart_host_comes_before_the_mx_hosts() {
    let server = zone();
    let t = table(
        &server,
        r#"Domain "example.com" { Routes = ( "smtp://my.local.smart.host?pref=1" "__mx__" ) }"#,
        "example.com",
    )
    .await
    .unwrap();
    assert_eq!(
        shape(&t),
        vec![
            row(1, "my.local.smart.host", "127.0.0.5:25"),
            row(2, "mx1.example.com", "127.0.0.2:25"),
            row(3, "mx2.example.com", "127.0.0.3:25"),
        ]
    );
    assert!(matches!(&t.decision, Decision::Routes(o) if o.to_string().contains("routes.conf:2:")));
    let vias: Vec<&str> = t.entries().map(|(_, e)| e.via.as_str()).collect();
    assert_eq!(
        vias,
        [
            "smtp://my.local.smart.host?pref=1",
            "__mx__ (MX 10)",
            "__mx__ (MX 20)"
        ]
    );
}

#[tokio::test]
async fn five_equal_preferences_form_one_level() {
    let server = zone();
    let t = table(
        &server,
        r#"Routes = ( "smtp://a.relay?pref=10" "smtp://b.relay?pref=10" "smtp://c.relay?pref=10"
                      "smtp://d.relay?pref=10" "smtp://e.relay?pref=10" )"#,
        "anywhere.example",
    )
    .await
    .unwrap();
    assert_eq!(t.levels.len(), 1);
    assert_eq!(t.levels[0].level, 10);
    let names: Vec<&str> = t.levels[0].hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        ["a.relay", "b.relay", "c.relay", "d.relay", "e.relay"]
    );
}

#[tokio::test]
async fn a_list_without_pref_is_used_in_list_order() {
    let server = zone();
    let t = table(
        &server,
        r#"Routes = ( "c.relay" "a.relay" "b.relay" )"#,
        "x.example",
    )
    .await
    .unwrap();
    assert_eq!(
        shape(&t),
        vec![
            row(0, "c.relay", "127.0.3.3:25"),
            row(1, "a.relay", "127.0.3.1:25"),
            row(2, "b.relay", "127.0.3.2:25"),
        ]
    );
}

#[tokio::test]
async fn an_item_without_pref_follows_the_highest_level_before_it() {
    let server = zone();
    let t = table(
        &server,
        r#"Routes = ( "smtp://a.relay?pref=10" "smtp://b.relay?pref=5" "c.relay" "relay.example.net" "d.relay" )"#,
        "x.example",
    )
    .await
    .unwrap();
    assert_eq!(
        shape(&t),
        vec![
            row(5, "b.relay", "127.0.3.2:25"),
            row(10, "a.relay", "127.0.3.1:25"),
            row(11, "c.relay", "127.0.3.3:25"),
            row(12, "in1.relay.example.net", "127.0.1.1:25"),
            row(12, "in2.relay.example.net", "127.0.1.2:25"),
            row(13, "d.relay", "127.0.3.4:25"),
        ]
    );
}

#[tokio::test]
async fn a_gateway_name_uses_its_mx_hosts_else_its_address() {
    let server = zone();
    let t = table(
        &server,
        r#"Gateway = "relay.example.net:2525""#,
        "example.com",
    )
    .await
    .unwrap();
    assert_eq!(
        shape(&t),
        vec![
            row(0, "in1.relay.example.net", "127.0.1.1:2525"),
            row(0, "in2.relay.example.net", "127.0.1.2:2525"),
        ]
    );
    assert!(matches!(t.decision, Decision::Gateway(_)));
    // The destination's own MX records are never asked for.
    assert_eq!(server.queries("example.com"), 0);

    let t = table(
        &server,
        r#"Gateway = "plain.relay.example.net""#,
        "example.com",
    )
    .await
    .unwrap();
    assert_eq!(
        shape(&t),
        vec![row(0, "plain.relay.example.net", "127.0.2.1:25")]
    );
}

#[tokio::test]
async fn ip_literals_are_used_as_is() {
    let server = zone();
    let t = table(&server, r#"Gateway = "[::1]:2601""#, "example.com")
        .await
        .unwrap();
    assert_eq!(shape(&t), vec![row(0, "::1", "[::1]:2601")]);
    assert_eq!(t.refresh_at, None, "nothing to refresh");
    let t = table(
        &server,
        r#"Routes = ( "smtp://127.0.0.9:2600" )"#,
        "example.com",
    )
    .await
    .unwrap();
    assert_eq!(shape(&t), vec![row(0, "127.0.0.9", "127.0.0.9:2600")]);
}

#[tokio::test]
async fn the_most_specific_scope_decides() {
    let server = zone();
    let body = r#"
        Routes = ( "a.relay" )
        Domain "example.com" { Gateway = "b.relay" }
        Binding "b1" { Gateway = "c.relay" }
    "#;
    let config = config(&server, body);
    let dns = Dns::from_config(&config).unwrap();
    let name = |t: RouteTable| t.levels[0].hosts[0].name.clone();
    let t = dns.route_table(&config, "default", "example.com").await;
    assert_eq!(name(t.unwrap()), "b.relay");
    let t = dns.route_table(&config, "default", "other.example").await;
    assert_eq!(name(t.unwrap()), "a.relay");
    let t = dns.route_table(&config, "b1", "example.com").await;
    assert_eq!(name(t.unwrap()), "c.relay");
    let e = dns
        .route_table(&config, "nosuch", "example.com")
        .await
        .unwrap_err();
    assert!(matches!(e, RouteError::UnknownBinding { .. }), "{e:?}");
    assert!(!e.is_permanent());
}

#[tokio::test]
async fn failures_are_classified() {
    let server = zone();
    let e = table(&server, "", "nullmx.example").await.unwrap_err();
    assert!(
        matches!(e, RouteError::Dns(DnsError::NullMx { .. })),
        "{e:?}"
    );
    assert!(e.is_permanent());
    assert_eq!(e.status(), (550, "5.1.10"));

    let e = table(&server, "", "nowhere.example").await.unwrap_err();
    assert!(
        matches!(e, RouteError::Dns(DnsError::NxDomain { .. })),
        "{e:?}"
    );
    assert!(e.is_permanent());
    assert_eq!(e.status(), (550, "5.1.2"));

    let e = table(&server, "", "broken.example").await.unwrap_err();
    assert!(
        matches!(e, RouteError::Dns(DnsError::ServerFailure { .. })),
        "{e:?}"
    );
    assert!(!e.is_permanent());
    assert_eq!(e.status(), (451, "4.4.3"));
}

#[tokio::test]
async fn a_failing_item_is_left_out_and_the_rest_used() {
    let server = zone();
    let t = table(
        &server,
        r#"Routes = ( "smtp://broken.example?pref=1" "__mx__" )"#,
        "example.com",
    )
    .await
    .unwrap();
    assert_eq!(t.levels[0].hosts[0].name, "mx1.example.com");
    assert!(
        t.left_out
            .iter()
            .any(|l| l.what.contains("broken.example") && l.why.contains("server failure")),
        "{:?}",
        t.left_out
    );
    // A transient failure gets the table rebuilt soon.
    assert!(t.ttl().unwrap() <= postern_dns::CachePolicy::default().min_ttl);

    // Only a transient failure left: the queue waits rather than bounces.
    let e = table(
        &server,
        r#"Routes = ( "smtp://broken.example" "smtp://nowhere.example" )"#,
        "example.com",
    )
    .await
    .unwrap_err();
    assert!(!e.is_permanent(), "{e:?}");
}

#[tokio::test]
async fn disabled_items_are_left_out() {
    let server = zone();
    let t = table(
        &server,
        r#"Routes = ( "smtp://a.relay?status=disabled" "b.relay" )"#,
        "x.example",
    )
    .await
    .unwrap();
    assert_eq!(shape(&t), vec![row(0, "b.relay", "127.0.3.2:25")]);
    assert_eq!(t.left_out[0].why, "status=disabled");
    assert_eq!(server.queries("a.relay"), 0);

    let e = table(
        &server,
        r#"Routes = ( "smtp://a.relay?status=disabled" )"#,
        "x.example",
    )
    .await
    .unwrap_err();
    assert!(matches!(e, RouteError::Disabled { .. }), "{e:?}");
    assert!(!e.is_permanent());
}

#[tokio::test]
async fn backup_mx_uses_only_better_hosts() {
    let server = zone();
    let t = table(&server, r#"Hostname = "MX2.example.com""#, "example.com")
        .await
        .unwrap();
    assert_eq!(shape(&t), vec![row(0, "mx1.example.com", "127.0.0.2:25")]);
    assert!(t.left_out[0].why.contains("this server is mx2.example.com"));

    // A listener address among the MX hosts' addresses is this server too.
    let body = r#"Hostname = "self.test" ESMTP_Listener { Listen "127.0.0.3:25" { } }"#;
    let t = table(&server, body, "example.com").await.unwrap();
    assert_eq!(shape(&t), vec![row(0, "mx1.example.com", "127.0.0.2:25")]);

    // The best MX: nothing better is left, so the mail would loop.
    let e = table(&server, r#"Hostname = "mx1.example.com""#, "example.com")
        .await
        .unwrap_err();
    assert!(
        matches!(e, RouteError::Loop { preference: 10, .. }),
        "{e:?}"
    );
    assert!(e.is_permanent());
    assert_eq!(e.status(), (550, "5.4.6"));
}

#[tokio::test]
async fn prohibited_hosts_are_removed() {
    let server = zone();
    let t = table(
        &server,
        r#"Prohibited_Hosts = ( "127.0.0.2/32" )"#,
        "example.com",
    )
    .await
    .unwrap();
    assert_eq!(shape(&t), vec![row(1, "mx2.example.com", "127.0.0.3:25")]);
    assert!(
        t.left_out[0]
            .why
            .contains("Prohibited_Hosts (127.0.0.2/32)")
    );

    let e = table(
        &server,
        r#"Prohibited_Hosts = ( "127.0.0.0/8" )"#,
        "example.com",
    )
    .await
    .unwrap_err();
    assert!(matches!(&e, RouteError::Prohibited { domain, .. } if domain == "example.com"));
    assert!(e.is_permanent());
    assert!(e.to_string().contains("127.0.0.2, 127.0.0.3"), "{e}");

    // The default list keeps mail away from link-local metadata services.
    let e = table(&server, "", "metadata.example").await.unwrap_err();
    assert!(matches!(e, RouteError::Prohibited { .. }), "{e:?}");
}

#[tokio::test]
async fn ports_schemes_tls_auth_and_limits_per_host() {
    let server = zone();
    let body = r#"
        Remote_SMTP_Port = 2525
        Auth relay { Type = LOGIN User = "u" Password = "p" }
        Host "127.0.3.1" { Max_Outbound_Connections = 3 }
        Host "b.relay" { Max_Outbound_Connections = 7 }
        Domain "example.com" {
          Routes = ( "smtps://a.relay?pref=1&tls_verify=host&auth=relay"
                     "lmtp://b.relay?pref=2"
                     "smtp://c.relay:2600?pref=3&tls=required"
                     "__mx__" )
        }
    "#;
    let t = table(&server, body, "example.com").await.unwrap();
    let e: Vec<_> = t.entries().map(|(_, e)| e.clone()).collect();
    assert_eq!(e[0].addr, "127.0.3.1:465".parse::<SocketAddr>().unwrap());
    assert_eq!(e[0].scheme, Scheme::Smtps);
    assert_eq!(e[0].tls_verify, TlsVerify::Host);
    assert_eq!(e[0].auth, Some(AuthSource::Stanza("relay".into())));
    assert_eq!(e[0].host_limit, Some(3));
    assert_eq!(e[1].addr, "127.0.3.2:2003".parse::<SocketAddr>().unwrap());
    assert_eq!(e[1].scheme, Scheme::Lmtp);
    assert_eq!(e[1].host_limit, Some(7));
    assert_eq!(e[2].addr, "127.0.3.3:2600".parse::<SocketAddr>().unwrap());
    assert_eq!(e[2].tls, TlsMode::Required);
    assert_eq!(e[2].auth, None);
    assert_eq!(e[3].addr, "127.0.0.2:2525".parse::<SocketAddr>().unwrap());
    assert_eq!(e[3].tls, TlsMode::IfAvailable);
    assert_eq!(e[3].host_limit, None);

    // LMTP as the delivery method: plain items and __mx__ speak LMTP on
    // LMTP_Port, and the scope's AUTH user applies.
    let body = r#"Delivery_Method = LMTP LMTP_Port = 24 Outbound_SMTP_AUTH_User = "me"
                  Outbound_SMTP_AUTH_Pass = "pw" Routes = ( "a.relay" "__mx__" )"#;
    let t = table(&server, body, "example.com").await.unwrap();
    for (_, e) in t.entries() {
        assert_eq!(e.scheme, Scheme::Lmtp);
        assert_eq!(e.addr.port(), 24);
        assert_eq!(e.auth, Some(AuthSource::Scope { user: "me".into() }));
    }
}

#[tokio::test]
async fn an_address_listed_twice_keeps_its_best_level() {
    let server = zone();
    let t = table(
        &server,
        r#"Routes = ( "__mx__" "mx1.example.com" )"#,
        "example.com",
    )
    .await
    .unwrap();
    assert_eq!(
        shape(&t),
        vec![
            row(0, "mx1.example.com", "127.0.0.2:25"),
            row(1, "mx2.example.com", "127.0.0.3:25"),
        ]
    );
    assert!(t.left_out.iter().any(|l| l.why == "already at level 0"));
}
