//! Helpers shared by the engine tests: sinks on shared ports, engines on
//! a test configuration, messages, and waiting for reports.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_conf::Config;
use postern_engine::{Engine, QueuedMessage, Report};
use postern_smtp::client::Outcome;
use postern_testkit::dns::DnsServer;
use postern_testkit::sink::{Sink, SinkBuilder};

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Sinks on several loopback addresses sharing one port, so that MX
/// hosts can all use `Remote_SMTP_Port`.
pub(crate) fn sinks(builders: Vec<(&str, SinkBuilder)>) -> (u16, Vec<Sink>) {
    for _ in 0..20 {
        let mut started = Vec::new();
        let mut port = 0;
        for (addr, builder) in &builders {
            match builder.clone().ip(ip(addr)).port(port).start() {
                Ok(s) => {
                    port = s.addr().port();
                    started.push(s);
                }
                Err(_) => break,
            }
        }
        if started.len() == builders.len() {
            return (port, started);
        }
    }
    panic!("no common free port for the sinks");
}

/// A free port on `addr` that nothing listens on.
pub(crate) fn dead_port(addr: &str) -> u16 {
    std::net::TcpListener::bind((ip(addr), 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn engine(dns: &DnsServer, body: &str) -> Engine {
    let text = format!(
        "Hostname = \"postern.test\"\nEvent_Loops = 2\nResolver {{ Nameservers = ( \"{}\" ) Timeout = 2 }}\n{body}",
        dns.addr()
    );
    let config = Config::from_text(&text, Path::new("engine.conf")).unwrap();
    Engine::start(Arc::new(config)).unwrap()
}

pub(crate) fn message(id: u64, binding: &str, domain: &str, recipients: &[&str]) -> QueuedMessage {
    QueuedMessage {
        id,
        binding: binding.into(),
        domain: domain.into(),
        sender: "sender@example.org".into(),
        recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
        body: Arc::from(&b"Subject: engine test\r\n\r\nhello\r\n"[..]),
        eight_bit: false,
        smtputf8: false,
        attempts: 0,
        received: std::time::SystemTime::now(),
    }
}

/// Reports until `n` of them satisfy `done`, or `limit` passes.
pub(crate) fn wait_reports(
    engine: &Engine,
    n: usize,
    limit: Duration,
    done: impl Fn(&Report) -> bool,
) -> Vec<Report> {
    let until = Instant::now() + limit;
    let mut got = Vec::new();
    while got.iter().filter(|r| done(r)).count() < n {
        let left = until.saturating_duration_since(Instant::now());
        match engine.reports().recv_timeout(left) {
            Ok(r) => got.push(r),
            Err(_) => panic!("only {} of {n} reports in {limit:?}: {got:?}", got.len()),
        }
    }
    got
}

pub(crate) fn delivered(r: &Report) -> bool {
    matches!(r.outcome, Outcome::Delivered(_))
}

pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
