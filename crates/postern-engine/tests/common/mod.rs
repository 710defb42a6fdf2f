//! Helpers shared by the engine tests: sinks on shared ports, engines on
//! a test configuration, messages, and waiting for reports.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Receiver;
use postern_conf::Config;
use postern_engine::{Body, Bounce, Channels, Engine, QueuedMessage, Report};
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

/// An engine whose outcomes come out of channels.
pub(crate) struct TestEngine {
    engine: Engine,
    reports: Receiver<Report>,
    bounces: Receiver<Bounce>,
}

impl TestEngine {
    /// Every recipient's outcome of every attempt, in order.
    pub(crate) fn reports(&self) -> &Receiver<Report> {
        &self.reports
    }

    /// The bounces the engine made.
    pub(crate) fn bounces(&self) -> &Receiver<Bounce> {
        &self.bounces
    }
}

impl std::ops::Deref for TestEngine {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        &self.engine
    }
}

pub(crate) fn engine(dns: &DnsServer, body: &str) -> TestEngine {
    let text = format!(
        "Hostname = \"postern.test\"\nEvent_Loops = 2\nResolver {{ Nameservers = ( \"{}\" ) Timeout = 2 }}\n{body}",
        dns.addr()
    );
    let config = Config::from_text(&text, Path::new("engine.conf")).unwrap();
    let (sink, reports, bounces) = Channels::new();
    let engine = Engine::start(Arc::new(config), Box::new(sink), None, None).unwrap();
    TestEngine {
        engine,
        reports,
        bounces,
    }
}

pub(crate) fn message(id: u64, binding: &str, domain: &str, recipients: &[&str]) -> QueuedMessage {
    QueuedMessage {
        id,
        queue_id: id,
        message_id: format!("<{id}@engine.test>").into(),
        binding: binding.into(),
        domain: domain.into(),
        sender: "sender@example.org".into(),
        recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
        body: Body::Memory(Arc::from(&b"Subject: engine test\r\n\r\nhello\r\n"[..])),
        eight_bit: false,
        smtputf8: false,
        attempts: 0,
        received: SystemTime::now(),
        not_before: None,
        client: None,
    }
}

/// Reports until `n` of them satisfy `done`, or `limit` passes.
pub(crate) fn wait_reports(
    engine: &TestEngine,
    n: usize,
    limit: Duration,
    done: impl Fn(&Report) -> bool,
) -> Vec<Report> {
    wait_reports_timed(engine, n, limit, done)
        .into_iter()
        .map(|(r, _)| r)
        .collect()
}

/// [`wait_reports`], each report with when it came.
pub(crate) fn wait_reports_timed(
    engine: &TestEngine,
    n: usize,
    limit: Duration,
    done: impl Fn(&Report) -> bool,
) -> Vec<(Report, SystemTime)> {
    let until = Instant::now() + limit;
    let mut got: Vec<(Report, SystemTime)> = Vec::new();
    while got.iter().filter(|(r, _)| done(r)).count() < n {
        let left = until.saturating_duration_since(Instant::now());
        match engine.reports().recv_timeout(left) {
            Ok(r) => got.push((r, SystemTime::now())),
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
