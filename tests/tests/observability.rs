//! A real Prometheus (Debian's package) scrapes a daemon under a small
//! load. Every PromQL expression of the shipped dashboards must return
//! data, the counters must match what the sinks received, the scrape
//! configuration must pass promtool, and the console commands must show
//! the daemon's state.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Setup, codes, free_addr, get, inject, wait_until};
use postern_e2e::{postern, workspace_root};
use postern_testkit::dns::DnsServer;
use postern_testkit::redis::RedisServer;
use postern_testkit::sink::Sink;
use serde_json::{Value, json};

/// The Prometheus server; killed by its PID when dropped.
struct Prometheus(Child, SocketAddr);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn start_prometheus(dir: &Path, target: SocketAddr) -> Prometheus {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: postern\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    let web = free_addr("127.0.0.1");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed (scripts/test installs Debian's package)");
    let p = Prometheus(child, web);
    wait_until(Duration::from_secs(30), "Prometheus ready", || {
        matches!(get(web, "/-/ready"), Some((200, _)))
    });
    p
}

fn query(p: &Prometheus, expr: &str) -> Value {
    let (status, body) = get(p.1, &format!("/api/v1/query?query={}", percent(expr))).unwrap();
    assert_eq!(status, 200, "{expr}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn scalar(p: &Prometheus, expr: &str) -> f64 {
    let v = query(p, expr);
    v["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or("nan")
        .parse()
        .unwrap()
}

/// Every `expr` in a Grafana dashboard.
fn expressions(dashboard: &Value) -> Vec<String> {
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect()
}

fn console(setup: &Setup, args: &[&str]) -> String {
    let config = setup.config();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", config.to_str().unwrap()]);
    let out = postern(&all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn dashboards_show_data_from_a_real_prometheus_and_the_console_works() {
    let sink = Sink::builder()
        .permfail_rcpt("gone@ok.example")
        .tempfail_rcpt("slow@slow.example")
        .tempfail_first(1)
        .start()
        .unwrap();
    let dns = DnsServer::builder()
        .mx("ok.example", 10, "mx.ok.example")
        .mx("slow.example", 10, "mx.ok.example")
        .a("mx.ok.example", "127.0.0.1".parse().unwrap())
        .start()
        .unwrap();
    // A real Redis: the internals dashboard's cluster panels need a node
    // of a cluster.
    let redis = RedisServer::start().unwrap();
    let setup = Setup::new(
        &dns,
        &format!(
            "Remote_SMTP_Port = {}\nRetry_Interval = 1\nOutbound_Throttle_Messages = \"5\"\n\
             Host \"mx.ok.example\" {{ Max_Outbound_Connections = 4 }}\n\
             Domain \"slow.example\" {{ Message_Expiration = 2 }}\n\
             Cluster {{ Redis = \"{}\" Node_Name = \"obs\" }}",
            sink.addr().port(),
            redis.url()
        ),
    );
    let daemon = setup.start();
    let prometheus = start_prometheus(setup.dir.path(), setup.metrics);

    let base = json!({"port": setup.listen.port(), "count": 20, "rcpts": ["a@ok.example", "gone@ok.example"]});
    assert_eq!(codes(&inject(base)), vec![250; 20]);
    let slow = json!({"port": setup.listen.port(), "count": 1, "start": 100, "rcpts": ["slow@slow.example"]});
    assert_eq!(codes(&inject(slow)), [250]);
    let denied = json!({"port": setup.listen.port(), "count": 1, "source": "127.0.0.2", "rcpts": ["x@elsewhere.test"]});
    assert_eq!(codes(&inject(denied)), [550]);
    wait_until(Duration::from_secs(30), "20 deliveries", || {
        sink.message_count() == 20
    });
    // The slow recipient expires after 2 s; then let Prometheus scrape a
    // few times.
    wait_until(Duration::from_secs(30), "the expiry", || {
        setup.log().iter().any(|e| e["event"] == "expiry")
    });
    std::thread::sleep(Duration::from_secs(4));

    for file in ["overview.json", "destinations.json", "internals.json"] {
        let path = workspace_root().join("dashboards").join(file);
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let exprs = expressions(&dashboard);
        assert!(exprs.len() >= 5, "{file}");
        for expr in exprs {
            let v = query(&prometheus, &expr);
            assert_eq!(v["status"], "success", "{file}: {expr}: {v}");
            let result = v["data"]["result"].as_array().unwrap();
            assert!(!result.is_empty(), "{file}: {expr} returned no data");
        }
    }
    // Counters match what the sink saw.
    let delivered: usize = sink.messages().iter().map(|m| m.rcpt_to.len()).sum();
    assert_eq!(
        scalar(&prometheus, "sum(postern_messages_delivered_total)"),
        delivered as f64
    );
    assert_eq!(
        scalar(&prometheus, "sum(postern_messages_received_total)"),
        21.0
    );
    // 20 bounces for gone@ and one for the expiry; the sender's domain
    // does not exist in the test zone, so the 21 bounces fail too.
    assert_eq!(
        scalar(&prometheus, "sum(postern_bounces_generated_total)"),
        21.0
    );
    assert_eq!(
        scalar(&prometheus, "sum(postern_permanent_failures_total)"),
        41.0
    );
    assert_eq!(
        scalar(&prometheus, "sum(postern_messages_expired_total)"),
        1.0
    );
    assert!(scalar(&prometheus, "sum(postern_transient_failures_total)") >= 2.0);
    assert_eq!(
        scalar(
            &prometheus,
            "postern_listener_rejections_total{reason=\"relaying_denied\"}"
        ),
        1.0
    );
    assert!(scalar(&prometheus, "sum(postern_throttle_delays_total)") > 0.0);
    // Every reply has its class, in the metric and in the delivery log.
    assert_eq!(
        scalar(
            &prometheus,
            "postern_replies_total{class=\"invalid_recipient\"}"
        ),
        20.0
    );
    assert_eq!(
        scalar(&prometheus, "postern_replies_total{class=\"bad_domain\"}"),
        21.0
    );
    assert_eq!(
        scalar(&prometheus, "postern_replies_total{class=\"delivered\"}"),
        delivered as f64
    );
    let log = setup.log();
    let outcomes: Vec<_> = log
        .iter()
        .filter(|e| e["event"] == "delivery" || e["event"] == "permanent_failure")
        .collect();
    assert!(!outcomes.is_empty());
    assert!(
        outcomes.iter().all(|e| e["class"].is_string()),
        "{outcomes:?}"
    );
    assert!(
        log.iter()
            .any(|e| e["event"] == "permanent_failure" && e["class"] == "invalid_recipient"),
    );

    let promtool = Command::new("promtool")
        .args(["check", "config"])
        .arg(workspace_root().join("dashboards/prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        promtool.status.success(),
        "{}",
        String::from_utf8_lossy(&promtool.stdout)
    );

    // The console.
    let summary = console(&setup, &["summary"]);
    assert!(
        summary.contains(&format!("delivered                   {delivered}")),
        "{summary}"
    );
    let domain: Value =
        serde_json::from_str(&console(&setup, &["domain", "ok.example", "--json"])).unwrap();
    assert_eq!(domain["domain"], "ok.example");
    assert_eq!(domain["hosts"][0]["name"], "mx.ok.example");
    assert_eq!(domain["hosts"][0]["limit"], 4);
    let table = console(&setup, &["domain", "ok.example"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("LEVEL") && l.contains("REACHABLE")),
        "{table}"
    );
    assert!(table.contains("mx.ok.example"), "{table}");
    let queues = console(&setup, &["queue"]);
    assert!(queues.starts_with("BINDING  DOMAIN"), "{queues}");
    assert!(queues.contains("ok.example"), "{queues}");
    assert_eq!(
        console(&setup, &["suspend", "ok.example"]).trim(),
        "suspend: ok.example (binding default): done"
    );
    let held: Value =
        serde_json::from_str(&console(&setup, &["domain", "ok.example", "--json"])).unwrap();
    assert_eq!(held["suspended"], true);
    console(&setup, &["resume", "ok.example"]);
    let released: Value =
        serde_json::from_str(&console(&setup, &["domain", "ok.example", "--json"])).unwrap();
    assert_eq!(released["suspended"], false);
    assert!(console(&setup, &["flush", "ok.example"]).contains("flush: ok.example"));
    let missing = postern(&[
        "domain",
        "nowhere.example",
        "--config",
        setup.config().to_str().unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no queue for nowhere.example"));

    assert_eq!(daemon.terminate(), Some(0));
    drop(prometheus);
}
