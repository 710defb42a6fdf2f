//! `/metrics` and the admin API on `Metrics_Listen` (axum), meant for
//! loopback. With `Auth_Token_File` set, the control endpoints ask for
//! the bearer token.
//!
//! - `GET /metrics`: Prometheus text format.
//! - `GET /api/summary`: connections, queues, totals, rates, uptime, and
//!   the spool's health.
//! - `GET /api/domain?domain=D&binding=B`: one queue and its routing table.
//! - `GET /api/queues?limit=N`: the queues with the most mail.
//! - `GET /api/hosts`, `GET /api/cluster`.
//! - `POST /api/flush|suspend|resume?domain=D&binding=B`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use postern_engine::{Handle, HostSummary};
use postern_metrics as m;
use postern_spool::{Health, Spool};
use serde_json::{Value, json};
use tokio::net::TcpListener;

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
    /// The bearer token the control endpoints ask for, if any.
    pub(crate) token: Option<String>,
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
        token: Option<String>,
    ) -> Self {
        Self {
            cluster,
            token,
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

type Answer = (StatusCode, Json<Value>);

fn not_found(what: &str) -> Answer {
    (StatusCode::NOT_FOUND, Json(json!({ "error": what })))
}

/// The routes, on axum: HTTP/1.1 with keep-alive; a wrong method gets
/// 405, an unknown path 404 with a JSON error.
pub(crate) fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/summary", get(summary))
        .route("/api/queues", get(queues))
        .route("/api/hosts", get(hosts))
        .route("/api/cluster", get(cluster))
        .route("/api/domain", get(domain))
        .route("/api/{action}", post(act))
        .fallback(|uri: axum::http::Uri| async move {
            not_found(&format!("no such path: {}", uri.path()))
        })
        .with_state(admin)
}

/// Serves until the task is dropped.
pub(crate) async fn serve(socket: TcpListener, admin: Arc<Admin>) {
    if let Err(e) = axum::serve(socket, router(admin)).await {
        tracing::error!(error = %e, "the admin API stopped");
    }
}

/// Binds `Metrics_Listen`.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("Metrics_Listen {addr}: {e}"))
}

type Params = Query<HashMap<String, String>>;

/// The queue a request names: `domain=` (required) and `binding=`.
fn queue_of(params: &HashMap<String, String>) -> Option<(String, String)> {
    let binding = params
        .get("binding")
        .cloned()
        .unwrap_or_else(|| "default".into());
    params
        .get("domain")
        .map(|d| (binding, d.to_ascii_lowercase()))
}

async fn metrics(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    admin.refresh_gauges().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        admin.prometheus.render(),
    )
}

async fn summary(State(admin): State<Arc<Admin>>) -> Json<Value> {
    Json(admin.summary().await)
}

async fn queues(State(admin): State<Arc<Admin>>, Query(params): Params) -> Json<Value> {
    let limit = params
        .get("limit")
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
                "delayed": q.delayed, "spooled": q.spooled, "connections": q.connections,
                "suspended": q.suspended,
            })
        })
        .collect();
    Json(json!({ "queues": rows }))
}

async fn hosts(State(admin): State<Arc<Admin>>) -> Json<Value> {
    let hosts = admin
        .engine
        .summary()
        .await
        .map(|s| s.hosts)
        .unwrap_or_default();
    let rows: Vec<Value> = hosts.iter().map(host_json).collect();
    Json(json!({ "hosts": rows }))
}

async fn cluster(State(admin): State<Arc<Admin>>) -> Answer {
    let Some(cluster) = &admin.cluster else {
        return not_found("this daemon has no Cluster stanza");
    };
    match cluster.status().await {
        Some(status) => (StatusCode::OK, Json(json!(status))),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "the cluster agent has stopped" })),
        ),
    }
}

async fn domain(State(admin): State<Arc<Admin>>, Query(params): Params) -> Answer {
    let Some((binding, domain)) = queue_of(&params) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "domain= is required" })),
        );
    };
    match admin.engine.queue(&binding, &domain).await {
        Some(v) => (StatusCode::OK, Json(domain_json(&binding, &domain, &v))),
        None => not_found(&format!("no queue for {domain} in binding {binding}")),
    }
}

/// `POST /api/flush|suspend|resume?domain=D&binding=B`; with a token
/// configured (`Auth_Token_File`), only with `Authorization: Bearer`.
async fn act(
    State(admin): State<Arc<Admin>>,
    Path(action): Path<String>,
    headers: HeaderMap,
    Query(params): Params,
) -> Answer {
    if !matches!(action.as_str(), "flush" | "suspend" | "resume") {
        return not_found(&format!("no such path: /api/{action}"));
    }
    if let Some(token) = &admin.token
        && let Err((status, why)) = super::http::bearer(&headers, token)
    {
        return (status, Json(json!({ "error": why })));
    }
    let Some((binding, domain)) = queue_of(&params) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "domain= is required" })),
        );
    };
    match action.as_str() {
        "flush" => admin.engine.flush(&binding, &domain),
        "suspend" => admin.engine.suspend(&binding, &domain),
        _ => admin.engine.resume(&binding, &domain),
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({ "ok": true, "action": action, "binding": binding, "domain": domain })),
    )
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
        "spooled": v.spooled,
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
            "spooled": s.as_ref().map(|s| s.spooled),
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
        metrics::gauge!(m::QUEUE, "state" => "spooled").set(s.spooled as f64);
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
