//! MTA-STS (RFC 8461) in the real daemon: the test DNS server publishes
//! `_mta-sts` TXT records, HTTPS policy servers on port 443 of loopback
//! addresses serve the policies (test CA), and STARTTLS sinks stand for
//! the MX hosts. `enforce`: only a named MX with a certificate for its
//! name receives mail, over verified TLS; an MX the policy does not name
//! receives nothing (451 4.7.5, logged); `testing`: delivered as before
//! and logged; the policy fetched once per `max_age`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{Setup, codes, free_addr, inject, wait_until};
use postern_e2e::postern;
use postern_testkit::dns::{DnsServer, DnsServerBuilder};
use postern_testkit::policy::PolicyServer;
use postern_testkit::sink::Sink;
use postern_testkit::tls::TestCa;
use serde_json::{Value, json};

fn ip(net: u8, host: u8) -> IpAddr {
    format!("127.45.{net}.{host}").parse().unwrap()
}

fn policy(mode: &str, mx: &str) -> String {
    format!("version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n")
}

/// A domain's `_mta-sts` record and policy host at `addr`.
fn publish(zone: DnsServerBuilder, domain: &str, id: &str, addr: IpAddr) -> DnsServerBuilder {
    zone.txt(&format!("_mta-sts.{domain}"), &format!("v=STSv1; id={id}"))
        .addr(&format!("mta-sts.{domain}"), addr)
}

fn policy_server(ca: &TestCa, domain: &str, addr: IpAddr, text: &str) -> PolicyServer {
    let tls = ca.issue(&[&format!("mta-sts.{domain}")]).unwrap();
    PolicyServer::start(addr, tls.server_config().unwrap(), text).unwrap()
}

/// A STARTTLS sink on `addr:port` with a certificate for `name`.
fn mx(ca: &TestCa, name: &str, addr: IpAddr, port: u16) -> Sink {
    let tls = ca.issue(&[name]).unwrap();
    Sink::builder()
        .ip(addr)
        .port(port)
        .tls(tls.server_config().unwrap())
        .start()
        .unwrap()
}

/// The daemon's configuration: the CA, MX hosts on `port`, quick retries.
fn setup(dns: &DnsServer, ca: &TestCa, port: u16) -> Setup {
    let setup = Setup::new(dns, "");
    let ca_path = ca.write_ca(setup.dir.path()).unwrap();
    let mut text = std::fs::read_to_string(setup.config()).unwrap();
    text.push_str(&format!(
        "TLS_CA = \"{}\"\nRemote_SMTP_Port = {port}\nRetry_Interval = 2\nHost_Failure_Retry = 2\nMX_Failures_To_Delay = 1\n",
        ca_path.display()
    ));
    std::fs::write(setup.config(), text).unwrap();
    setup
}

fn send(setup: &Setup, rcpt: &str) {
    let spec = json!({"port": setup.listen.port(), "count": 1, "rcpts": [rcpt]});
    assert_eq!(codes(&inject(spec)), [250]);
}

fn records<'a>(log: &'a [Value], event: &str, domain: &str) -> Vec<&'a Value> {
    log.iter()
        .filter(|r| r["event"] == event && r["domain"] == domain)
        .collect()
}

#[test]
fn enforce_delivers_only_to_a_named_mx_over_verified_tls_and_fetches_once() {
    let net = 1;
    let port = free_addr(&ip(net, 2).to_string()).port();
    let ca = TestCa::new().unwrap();
    // The MX the policy does not name has the better preference.
    let zone = DnsServer::builder()
        .ttl(1)
        .mx("enforce.test", 5, "mx.unnamed.test")
        .mx("enforce.test", 10, "mx1.enforce.test")
        .a("mx.unnamed.test", "127.45.1.3".parse().unwrap())
        .a("mx1.enforce.test", "127.45.1.2".parse().unwrap());
    let dns = publish(zone, "enforce.test", "e2e1", ip(net, 1))
        .start()
        .unwrap();
    let policy = policy_server(
        &ca,
        "enforce.test",
        ip(net, 1),
        &policy("enforce", "mx1.enforce.test"),
    );
    let named = mx(&ca, "mx1.enforce.test", ip(net, 2), port);
    let unnamed = mx(&ca, "mx.unnamed.test", ip(net, 3), port);
    let setup = setup(&dns, &ca, port);
    let daemon = setup.start();

    send(&setup, "a@enforce.test");
    wait_until(Duration::from_secs(30), "delivery to the named MX", || {
        named.message_count() == 1
    });
    assert!(named.messages()[0].tls, "delivered over TLS");
    assert_eq!(unnamed.connections(), 0, "the unnamed MX is never used");

    // More mail while the table is built again (TTLs of 5 s): the TXT
    // record is asked again, the policy is not fetched again.
    let mut sent = 1;
    wait_until(
        Duration::from_secs(90),
        "the TXT record asked again",
        || {
            send(&setup, "b@enforce.test");
            sent += 1;
            std::thread::sleep(Duration::from_millis(500));
            dns.queries("_mta-sts.enforce.test") >= 2
        },
    );
    wait_until(
        Duration::from_secs(30),
        "every message delivered and logged",
        || {
            named.message_count() == sent
                && records(&setup.log(), "delivery", "enforce.test").len() == sent
        },
    );
    assert_eq!(unnamed.connections(), 0);
    assert_eq!(policy.requests(), 1, "one fetch per max_age");

    let log = setup.log();
    let delivered = records(&log, "delivery", "enforce.test");
    assert_eq!(delivered.len(), sent);
    for r in delivered {
        assert_eq!(r["host"], "mx1.enforce.test");
        assert_eq!(r["mta_sts"], "enforce");
        assert_eq!(r["mta_sts_id"], "e2e1");
    }

    let out = postern(&[
        "routes",
        "enforce.test",
        "--config",
        setup.config().to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("MTA-STS: enforce (policy e2e1"), "{text}");
    assert!(
        text.contains("mx.unnamed.test: not named by the MTA-STS policy e2e1"),
        "{text}"
    );
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn unnamed_mx_or_wrong_certificate_waits_and_testing_mode_delivers() {
    let net = 2;
    let port = free_addr(&ip(net, 2).to_string()).port();
    let ca = TestCa::new().unwrap();
    let zone = DnsServer::builder()
        .mx("nomatch.test", 10, "mx.unnamed.test")
        .mx("testing.test", 10, "mx.unnamed.test")
        .mx("badcert.test", 10, "mx.badcert.test")
        .mx("testing2.test", 10, "mx.badcert.test")
        .a("mx.unnamed.test", "127.45.2.3".parse().unwrap())
        .a("mx.badcert.test", "127.45.2.4".parse().unwrap());
    let zone = publish(zone, "nomatch.test", "n1", ip(net, 11));
    let zone = publish(zone, "testing.test", "t1", ip(net, 12));
    let zone = publish(zone, "testing2.test", "t2", ip(net, 14));
    let dns = publish(zone, "badcert.test", "b1", ip(net, 13))
        .start()
        .unwrap();
    let _policies = [
        policy_server(
            &ca,
            "nomatch.test",
            ip(net, 11),
            &policy("enforce", "*.elsewhere.test"),
        ),
        policy_server(
            &ca,
            "testing.test",
            ip(net, 12),
            &policy("testing", "mx1.testing.test"),
        ),
        policy_server(
            &ca,
            "testing2.test",
            ip(net, 14),
            &policy("testing", "mx.badcert.test"),
        ),
        policy_server(
            &ca,
            "badcert.test",
            ip(net, 13),
            &policy("enforce", "mx.badcert.test"),
        ),
    ];
    let unnamed = mx(&ca, "mx.unnamed.test", ip(net, 3), port);
    // A certificate for another name than the MX's.
    let badcert = mx(&ca, "someone.else.test", ip(net, 4), port);
    let setup = setup(&dns, &ca, port);
    let daemon = setup.start();

    send(&setup, "a@nomatch.test");
    send(&setup, "a@badcert.test");
    send(&setup, "a@testing.test");
    send(&setup, "a@testing2.test");

    wait_until(Duration::from_secs(30), "testing mode delivers", || {
        unnamed.message_count() == 1 && badcert.message_count() == 1
    });
    // The sinks have the mail before the daemon logs its delivery: wait
    // for the log lines, not only for the sinks.
    wait_until(
        Duration::from_secs(30),
        "both enforced domains wait and both testing domains are logged",
        || {
            let log = setup.log();
            !records(&log, "transient_failure", "nomatch.test").is_empty()
                && !records(&log, "transient_failure", "badcert.test").is_empty()
                && !records(&log, "delivery", "testing.test").is_empty()
                && !records(&log, "delivery", "testing2.test").is_empty()
        },
    );
    let log = setup.log();

    let testing = records(&log, "delivery", "testing.test");
    assert_eq!(testing.len(), 1);
    assert_eq!(testing[0]["host"], "mx.unnamed.test");
    assert_eq!(testing[0]["mta_sts"], "testing");
    assert_eq!(testing[0]["mta_sts_id"], "t1");
    assert_eq!(testing[0]["mta_sts_unnamed"], true);
    assert!(
        testing[0].get("mta_sts_tls").is_none(),
        "a valid certificate"
    );
    // Testing mode over TLS whose certificate names another host:
    // delivered, and what enforce would have refused is logged.
    let testing2 = records(&log, "delivery", "testing2.test");
    assert_eq!(testing2.len(), 1);
    let problem = testing2[0]["mta_sts_tls"].as_str().unwrap();
    assert!(problem.contains("certificate"), "{problem}");

    let nomatch = records(&log, "transient_failure", "nomatch.test");
    assert_eq!(nomatch[0]["code"], 451);
    assert_eq!(nomatch[0]["enhanced_code"], "4.7.5");
    assert!(
        nomatch[0]["reply"]
            .as_str()
            .unwrap()
            .contains("MTA-STS policy n1"),
        "{:?}",
        nomatch[0]
    );

    let bad = records(&log, "transient_failure", "badcert.test");
    assert!(
        bad[0]["reply"].as_str().unwrap().contains("4.7.5"),
        "{:?}",
        bad[0]
    );
    assert_eq!(bad[0]["mta_sts"], "enforce");
    // Only the testing-mode domain's message reached the bad certificate.
    assert_eq!(badcert.messages()[0].rcpt_to, ["a@testing2.test"]);
    // Only the testing domain's message reached the unnamed MX.
    assert_eq!(unnamed.message_count(), 1);
    assert!(records(&log, "delivery", "nomatch.test").is_empty());
    assert!(records(&log, "permanent_failure", "nomatch.test").is_empty());

    let out = postern(&[
        "routes",
        "nomatch.test",
        "--config",
        setup.config().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MTA-STS policy n1") && err.contains("451 4.7.5"),
        "{err}"
    );
    assert_eq!(daemon.terminate(), Some(0));
}
