//! `/metrics` and the admin API on `Metrics_Listen`: a small HTTP/1.1
//! server (one request per connection) meant for loopback.
//!
//! - `GET /metrics`: Prometheus text format.
//! - `GET /api/summary`: connections, queues, totals, rates, uptime, and
//!   the spool's health.
//! - `GET /api/domain?domain=D&binding=B`: one queue and its routing table.
//! - `GET /api/queues?limit=N`: the queues with the most mail.
//! - `POST /api/flush|suspend|resume?domain=D&binding=B`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use postern_engine::{Handle, HostSummary};
use postern_metrics as m;
use postern_spool::{Health, Spool};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::stats::Totals;

/// What the server needs.
pub(crate) struct Admin {
    pub(crate) engine: Handle,
    pub(crate) spool: Spool,
    pub(crate) prometheus: PrometheusHandle,
    pub(crate) totals: Arc<Totals>,
    pub(crate) started: Instant,
    pub(crate) host_labels: usize,
    /// The cluster, with a `Cluster` stanza.
    pub(crate) cluster: Option<postern_cluster::Cluster>,
    /// Host labels exported last time, set to zero when they drop out.
    shown: Mutex<HashSet<String>>,
}

impl Admin {
    pub(crate) fn new(
        engine: Handle,
        spool: Spool,
        prometheus: PrometheusHandle,
        totals: Arc<Totals>,
        host_labels: usize,
        cluster: Option<postern_cluster::Cluster>,
    ) -> Self {
        Self {
            cluster,
            engine,
            spool,
            prometheus,
            totals,
            started: Instant::now(),
            host_labels,
            shown: Mutex::new(HashSet::new()),
        }
    }
}

/// An HTTP answer.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
}

fn json_answer(status: u16, body: &Value) -> Answer {
    Answer {
        status,
        content_type: "application/json",
        body: body.to_string(),
    }
}

fn not_found(what: &str) -> Answer {
    json_answer(404, &json!({ "error": what }))
}

/// Decodes `%XX` and `+` in a query value.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b),
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| decode(v))
    })
}

/// Serves until the task is dropped.
pub(crate) async fn serve(socket: TcpListener, admin: Arc<Admin>) {
    while let Ok((tcp, _)) = socket.accept().await {
        let admin = admin.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), connection(tcp, &admin)).await;
        });
    }
}

/// Binds `Metrics_Listen`.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("Metrics_Listen {addr}: {e}"))
}

async fn connection(mut tcp: TcpStream, admin: &Admin) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 || buf.len() > 8192 {
            return Ok(());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.lines().next().unwrap_or_default().split(' ');
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let answer = route(admin, method, path, query).await;
    let reason = match answer.status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        _ => "Not Found",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        answer.status,
        answer.content_type,
        answer.body.len()
    );
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(answer.body.as_bytes()).await?;
    tcp.shutdown().await
}

async fn route(admin: &Admin, method: &str, path: &str, query: &str) -> Answer {
    let queue = || {
        let binding = param(query, "binding").unwrap_or_else(|| "default".into());
        param(query, "domain").map(|d| (binding, d.to_ascii_lowercase()))
    };
    match (method, path) {
        ("GET", "/metrics") => {
            admin.refresh_gauges().await;
            Answer {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: admin.prometheus.render(),
            }
        }
        ("GET", "/api/summary") => json_answer(200, &admin.summary().await),
        ("GET", "/api/queues") => {
            let limit = param(query, "limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(20);
            let rows: Vec<Value> = admin
                .engine
                .queues(limit)
                .await
                .into_iter()
                .map(|q| {
                    json!({
                        "binding": q.binding, "domain": q.domain, "active": q.active,
                        "delayed": q.delayed, "connections": q.connections, "suspended": q.suspended,
                    })
                })
                .collect();
            json_answer(200, &json!({ "queues": rows }))
        }
        ("GET", "/api/hosts") => {
            let hosts = admin
                .engine
                .summary()
                .await
                .map(|s| s.hosts)
                .unwrap_or_default();
            let rows: Vec<Value> = hosts.iter().map(host_json).collect();
            json_answer(200, &json!({ "hosts": rows }))
        }
        ("GET", "/api/cluster") => match &admin.cluster {
            Some(cluster) => match cluster.status().await {
                Some(status) => json_answer(200, &json!(status)),
                None => json_answer(503, &json!({ "error": "the cluster agent has stopped" })),
            },
            None => not_found("this daemon has no Cluster stanza"),
        },
        ("GET", "/api/domain") => {
            let Some((binding, domain)) = queue() else {
                return json_answer(400, &json!({ "error": "domain= is required" }));
            };
            match admin.engine.queue(&binding, &domain).await {
                Some(v) => json_answer(200, &domain_json(&binding, &domain, &v)),
                None => not_found(&format!("no queue for {domain} in binding {binding}")),
            }
        }
        ("POST", "/api/flush" | "/api/suspend" | "/api/resume") => {
            let Some((binding, domain)) = queue() else {
                return json_answer(400, &json!({ "error": "domain= is required" }));
            };
            match path {
                "/api/flush" => admin.engine.flush(&binding, &domain),
                "/api/suspend" => admin.engine.suspend(&binding, &domain),
                _ => admin.engine.resume(&binding, &domain),
            }
            let action = path.trim_start_matches("/api/");
            json_answer(
                202,
                &json!({ "ok": true, "action": action, "binding": binding, "domain": domain }),
            )
        }
        (
            _,
            "/metrics" | "/api/summary" | "/api/queues" | "/api/hosts" | "/api/cluster"
            | "/api/domain" | "/api/flush" | "/api/suspend" | "/api/resume",
        ) => json_answer(
            405,
            &json!({ "error": format!("{method} is not allowed on {path}") }),
        ),
        _ => not_found(&format!("no such path: {path}")),
    }
}

/// The reply that last made a host's adaptive loop change.
fn change_json(change: Option<&(String, String)>) -> Value {
    change.map_or(
        Value::Null,
        |(class, reply)| json!({ "class": class, "reply": reply }),
    )
}

fn host_json(h: &postern_engine::HostSummary) -> Value {
    json!({
        "name": h.name, "address": h.addr.ip().to_string(), "port": h.addr.port(),
        "source": h.source, "connections": h.connections, "limit": h.limit,
        "limit_now": h.limit_now, "rate_now": h.rate_now, "reachable": h.reachable,
        "last_change": change_json(h.last_change.as_ref()),
    })
}

fn domain_json(binding: &str, domain: &str, v: &postern_engine::QueueView) -> Value {
    let hosts: Vec<Value> = v
        .hosts
        .iter()
        .map(|h| {
            json!({
                "level": h.level, "name": h.name, "address": h.addr.ip().to_string(), "port": h.addr.port(),
                "connections": h.connections, "limit": h.limit, "limit_now": h.limit_now,
                "rate_now": h.rate_now, "reachable": h.reachable,
                "last_change": change_json(h.last_change.as_ref()),
                "seconds_since_change": h.seconds_since_change,
                "next_probe_seconds": h.next_probe_seconds,
                "consecutive_failures": h.consecutive_failures,
                "seconds_since_failure": h.seconds_since_failure,
            })
        })
        .collect();
    json!({
        "binding": binding, "domain": domain, "active": v.active, "delayed": v.delayed,
        "connections": v.connections, "limit": v.limit, "suspended": v.suspended,
        "consecutive_failures": v.consecutive_failures, "next_retry_seconds": v.next_retry_seconds,
        "hosts": hosts,
    })
}

fn host_label(h: &HostSummary) -> String {
    format!("{} {}", h.name, h.addr)
}

impl Admin {
    fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    async fn summary(&self) -> Value {
        let s = self.engine.summary().await;
        let t = &self.totals;
        let up = self.uptime().as_secs_f64().max(1.0);
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "uptime_seconds": self.uptime().as_secs(),
            "connections": s.as_ref().map(|s| s.connections),
            "connections_per_event_loop": s.as_ref().map(|s| s.open_per_loop.clone()),
            "queues": s.as_ref().map(|s| s.queues),
            "active": s.as_ref().map(|s| s.active),
            "delayed": s.as_ref().map(|s| s.delayed),
            "totals": {
                "received": get(&t.received), "delivered": get(&t.delivered),
                "transient_failures": get(&t.transient), "permanent_failures": get(&t.permanent),
                "expired": get(&t.expired), "bounces": get(&t.bounces),
            },
            "rates_per_second": {
                "received": get(&t.received) as f64 / up,
                "delivered": get(&t.delivered) as f64 / up,
            },
            "spool": spool_json(&self.spool.health()),
        })
    }

    /// Sets the gauges from the engine's state, just before a scrape.
    async fn refresh_gauges(&self) {
        metrics::gauge!(m::UPTIME).set(self.uptime().as_secs_f64());
        let Some(s) = self.engine.summary().await else {
            return;
        };
        metrics::gauge!(m::QUEUE, "state" => "active").set(s.active as f64);
        metrics::gauge!(m::QUEUE, "state" => "delayed").set(s.delayed as f64);
        for (i, n) in s.open_per_loop.iter().enumerate() {
            metrics::gauge!(m::CONNECTIONS, "event_loop" => i.to_string()).set(*n as f64);
        }
        let mut hosts = s.hosts;
        hosts.sort_by(|a, b| {
            b.connections
                .cmp(&a.connections)
                .then_with(|| a.addr.cmp(&b.addr))
        });
        let cut = hosts.len().min(self.host_labels);
        let (top, rest) = hosts.split_at(cut);
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        let mut now_shown = HashSet::new();
        for h in top {
            let label = host_label(h);
            metrics::gauge!(m::HOST_CONNECTIONS, "host" => label.clone()).set(h.connections as f64);
            metrics::gauge!(m::HOST_REACHABLE, "host" => label.clone()).set(if h.reachable {
                1.0
            } else {
                0.0
            });
            if let Some(limit) = h.limit {
                metrics::gauge!(m::HOST_LIMIT, "host" => label.clone()).set(limit as f64);
            }
            if let Some(limit) = h.limit_now {
                metrics::gauge!(m::HOST_EFFECTIVE_LIMIT, "host" => label.clone()).set(limit as f64);
            }
            metrics::gauge!(m::HOST_EFFECTIVE_RATE, "host" => label.clone())
                .set(h.rate_now.unwrap_or(0.0));
            now_shown.insert(label);
        }
        let others: usize = rest.iter().map(|h| h.connections).sum();
        metrics::gauge!(m::HOST_CONNECTIONS, "host" => "other").set(others as f64);
        for gone in shown.difference(&now_shown) {
            metrics::gauge!(m::HOST_CONNECTIONS, "host" => gone.clone()).set(0.0);
        }
        *shown = now_shown;
    }
}

/// The spool's health for `/api/summary` and `postern summary`.
fn spool_json(h: &Health) -> Value {
    json!({
        "healthy": h.healthy,
        "messages": h.messages,
        "segments": h.segments,
        "disk_bytes": h.disk_bytes,
        "outcomes_waiting_for_space": h.pending,
        "requests_queued": h.queued,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            param("domain=ex%41mple.com&binding=b+1", "domain").as_deref(),
            Some("exAmple.com")
        );
        assert_eq!(
            param("domain=x&binding=b+1", "binding").as_deref(),
            Some("b 1")
        );
        assert_eq!(param("domain=x", "binding"), None);
        assert_eq!(decode("%zz%4"), "%zz%4");
    }
}
