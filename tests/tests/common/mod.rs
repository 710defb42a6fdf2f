//! Helpers of the daemon tests: a configuration around a test, the
//! injector, sinks' Message-IDs, waiting.
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use postern_e2e::{Daemon, workspace_root};
use postern_testkit::dns::DnsServer;
use postern_testkit::sink::{Sink, SinkBuilder};
pub(crate) use postern_testkit::wait_until;
use serde_json::Value;
use tempfile::TempDir;

/// A port on `ip` below the kernel's ephemeral range (32768 and up), so
/// that no outbound connection of a test running beside this one takes
/// it, and that `bind` takes.
fn below_ephemeral<T>(ip: &str, bind: impl Fn(SocketAddr) -> Option<T>) -> T {
    use std::hash::{BuildHasher, RandomState};
    let ip: IpAddr = ip.parse().unwrap();
    let random = RandomState::new();
    for attempt in 0u32..1000 {
        let port = 20_000 + (random.hash_one(attempt) % 12_000) as u16;
        if let Some(taken) = bind(SocketAddr::new(ip, port)) {
            return taken;
        }
    }
    panic!("no free port on {ip}");
}

/// A free port on `ip`, for the daemon to bind at once.
pub(crate) fn free_addr(ip: &str) -> SocketAddr {
    below_ephemeral(ip, |addr| {
        std::net::TcpListener::bind(addr).ok().map(|_| addr)
    })
}

/// A destination that is down until a sink opens it: its port is held
/// (bound, not listening, without `SO_REUSEADDR`), so connections to it
/// are refused and no other socket can take it meanwhile.
pub(crate) struct ClosedPort {
    held: socket2::Socket,
    pub(crate) addr: SocketAddr,
}

impl ClosedPort {
    pub(crate) fn new(ip: &str) -> ClosedPort {
        below_ephemeral(ip, |addr| {
            let held = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                None,
            )
            .unwrap();
            held.bind(&addr.into()).ok()?;
            Some(ClosedPort { held, addr })
        })
    }

    /// The destination comes up: `sink` listens on the port from now on.
    pub(crate) fn open(self, sink: SinkBuilder) -> Sink {
        drop(self.held);
        sink.port(self.addr.port()).start().unwrap()
    }
}

/// A daemon's files: config, spool, delivery log.
pub(crate) struct Setup {
    pub(crate) dir: TempDir,
    pub(crate) listen: SocketAddr,
    pub(crate) metrics: SocketAddr,
}

impl Setup {
    pub(crate) fn new(dns: &DnsServer, body: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let listen = free_addr("127.0.0.1");
        let metrics = free_addr("127.0.0.1");
        let text = format!(
            r#"Hostname = "postern.test"
Metrics_Listen = "{metrics}"
Spool_Dir = "spool"
Log_File = "delivery.jsonl"
Event_Loops = 2
Resolver {{ Nameservers = ( "{}" ) Timeout = 2 }}
ESMTP_Listener {{
  Listen "{listen}" {{ }}
  Relay_Hosts = ( "127.0.0.1/32" )
  Max_Message_Size = 20000
}}
{body}
"#,
            dns.addr()
        );
        std::fs::write(dir.path().join("postern.conf"), text).unwrap();
        Setup {
            dir,
            listen,
            metrics,
        }
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.dir.path().join("postern.conf")
    }

    pub(crate) fn start(&self) -> Daemon {
        Daemon::start(&self.config(), self.listen)
    }

    pub(crate) fn log(&self) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.dir.path().join("delivery.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

pub(crate) fn script() -> PathBuf {
    workspace_root().join("tests/fixtures/inject.py")
}

/// Runs a fixture of `tests/fixtures` with `spec` to its end; the JSON
/// lines it printed.
pub(crate) fn fixture(name: &str, spec: &Value) -> Vec<Value> {
    let out = Command::new("python3")
        .arg(workspace_root().join("tests/fixtures").join(name))
        .arg(spec.to_string())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs the injector to its end; one JSON object per message.
pub(crate) fn inject(spec: Value) -> Vec<Value> {
    fixture("inject.py", &spec)
}

pub(crate) fn codes(results: &[Value]) -> Vec<i64> {
    results
        .iter()
        .map(|r| r["code"].as_i64().unwrap())
        .collect()
}

/// Message-IDs a sink received, with how many times each.
pub(crate) fn received_ids(sink: &Sink) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for m in sink.messages() {
        let text = String::from_utf8_lossy(&m.body).into_owned();
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: ").map(str::to_owned))
            .unwrap_or_default();
        *ids.entry(id).or_insert(0) += 1;
    }
    ids
}

/// Segments the daemon's spool started as `how` (`zero_filled`,
/// `reused`), from its `/metrics`.
pub(crate) fn segments_started(setup: &Setup, how: &str) -> u64 {
    let (_, metrics) = get(setup.metrics, "/metrics").unwrap_or_default();
    let prefix = format!("postern_spool_segments_started_total{{start=\"{how}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `GET path` over HTTP/1.0 (so that the answer is not chunked).
pub(crate) fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(tcp, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}
