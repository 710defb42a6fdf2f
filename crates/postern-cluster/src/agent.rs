//! The agent: the one thread that talks to Redis. Requests arrive on a
//! channel and each runs as a task of its own on a multiplexed connection
//! (so that a slow answer does not hold the others back), bounded by
//! [`DEADLINE`]. The leases the node holds are kept here, so that they can
//! be renewed, released, and registered again after Redis was lost.
//!
//! A heartbeat every third of `Lease_TTL` (at most every second)
//! registers the node, renews every lease and counts the live nodes.
//! Any failed call makes the node local; then the heartbeat tries to
//! connect every half second, and the first heartbeat that succeeds makes
//! it shared again.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio::task::LocalSet;

use crate::scripts::{self, HOSTS, NODES, SIGNALS};
use crate::{DEADLINE, Grant, Lease, Options, Request, Shared, Signal, Status, Tokens};

/// How often a local node tries Redis again.
const RECONNECT: Duration = Duration::from_millis(500);

/// A lease the node holds.
struct Held {
    key: String,
    member: String,
}

/// The agent's state, shared by its tasks (one thread).
struct State {
    conn: Option<MultiplexedConnection>,
    held: HashMap<u64, Held>,
    /// A heartbeat (or reconnection) is running.
    beating: bool,
    /// Signals are read from this time (ms, Redis's clock) on; -1 before
    /// the first heartbeat.
    cursor: i64,
    /// The signals read last time (the next read starts at that time, and
    /// may return them again).
    seen: HashSet<String>,
}

pub(crate) struct Agent {
    client: redis::Client,
    options: Options,
    shared: Arc<Shared>,
    /// Distinguishes this run's leases from those a previous run of the
    /// same node left in Redis.
    boot: String,
    state: Rc<RefCell<State>>,
    scripts: Rc<Scripts>,
}

struct Scripts {
    acquire: redis::Script,
    heartbeat: redis::Script,
    take: redis::Script,
    status: redis::Script,
    leave: redis::Script,
    signal: redis::Script,
}

impl Agent {
    pub(crate) fn new(client: redis::Client, options: Options, shared: Arc<Shared>) -> Agent {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Agent {
            client,
            options,
            shared,
            boot: format!("{boot:x}"),
            state: Rc::new(RefCell::new(State {
                conn: None,
                held: HashMap::new(),
                beating: false,
                cursor: -1,
                seen: HashSet::new(),
            })),
            scripts: Rc::new(Scripts {
                acquire: scripts::acquire(),
                heartbeat: scripts::heartbeat(),
                take: scripts::take(),
                status: scripts::status(),
                leave: scripts::leave(),
                signal: scripts::signal(),
            }),
        }
    }

    /// The thread's body: joins, then serves requests until told to stop.
    pub(crate) fn run(
        self,
        mut rx: mpsc::UnboundedReceiver<Request>,
        joined: std::sync::mpsc::Sender<bool>,
    ) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cluster: cannot start the agent's runtime");
                return;
            }
        };
        register_metrics();
        let agent = Rc::new(self);
        LocalSet::new().block_on(&runtime, async move {
            let _ = joined.send(agent.clone().beat().await);
            let period = (agent.options.lease_ttl / 3).min(Duration::from_secs(1));
            let mut tick = tokio::time::interval(RECONNECT.min(period));
            let mut last_beat = Instant::now();
            loop {
                tokio::select! {
                    request = rx.recv() => {
                        let Some(request) = request else { break };
                        if let Request::Stop(done) = request {
                            agent.leave().await;
                            let _ = done.send(());
                            break;
                        }
                        agent.clone().serve(request);
                    }
                    _ = tick.tick() => {
                        let up = agent.shared.up.load(Ordering::Relaxed);
                        if !up || last_beat.elapsed() >= period {
                            last_beat = Instant::now();
                            let agent = agent.clone();
                            tokio::task::spawn_local(async move { agent.beat().await });
                        }
                    }
                }
            }
        });
    }

    fn serve(self: Rc<Self>, request: Request) {
        match request {
            Request::Acquire {
                host,
                limit,
                id,
                reply,
            } => {
                tokio::task::spawn_local(async move { self.acquire(host, limit, id, reply).await });
            }
            Request::Local { host, id } => {
                self.hold(id, &host);
            }
            Request::Release(id) => self.release(id),
            Request::Take {
                name,
                capacity,
                per_ms,
                want,
                reply,
            } => {
                tokio::task::spawn_local(async move {
                    reply(self.take(&name, capacity, per_ms, want).await);
                });
            }
            Request::Publish(member) => {
                tokio::task::spawn_local(async move {
                    let script = self.scripts.clone();
                    let _: Option<i64> = self
                        .call("signal", |mut conn| async move {
                            script
                                .signal
                                .key(SIGNALS)
                                .arg(member)
                                .invoke_async(&mut conn)
                                .await
                        })
                        .await;
                });
            }
            Request::Status(reply) => {
                tokio::task::spawn_local(async move {
                    let _ = reply.send(self.status().await);
                });
            }
            Request::Stop(_) => {}
        }
    }

    fn member(&self, id: u64) -> String {
        format!("{}/{}/{id}", self.options.node, self.boot)
    }

    fn hold(&self, id: u64, host: &str) {
        let mut state = self.state.borrow_mut();
        state.held.insert(
            id,
            Held {
                key: scripts::lease_key(host),
                member: self.member(id),
            },
        );
        metrics::gauge!(postern_metrics::CLUSTER_LEASES).set(state.held.len() as f64);
    }

    fn lease(&self, id: u64) -> Lease {
        Lease {
            id,
            tx: self.shared.tx.clone(),
        }
    }

    /// Runs one call on the shared connection, within the deadline; a
    /// failure makes the node local. `None` when there is no connection
    /// or the call failed.
    async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Option<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.state.borrow().conn.clone()?;
        metrics::counter!(postern_metrics::CLUSTER_REDIS_CALLS, "op" => op).increment(1);
        let failure = match tokio::time::timeout(DEADLINE, f(conn)).await {
            Ok(Ok(answer)) => return Some(answer),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", DEADLINE.as_millis()),
        };
        metrics::counter!(postern_metrics::CLUSTER_REDIS_ERRORS, "op" => op).increment(1);
        self.lost(op, &failure);
        None
    }

    /// Redis failed: local shares until a heartbeat succeeds.
    fn lost(&self, op: &str, why: &str) {
        self.state.borrow_mut().conn = None;
        if self.shared.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                op,
                error = why,
                nodes = self.shared.nodes.load(Ordering::Relaxed),
                "cluster: Redis lost; keeping to local shares of every limit"
            );
            metrics::gauge!(postern_metrics::CLUSTER_REDIS_UP).set(0.0);
            metrics::counter!(postern_metrics::CLUSTER_FALLBACKS).increment(1);
        }
    }

    async fn acquire(&self, host: String, limit: u32, id: u64, reply: Box<dyn FnOnce(Grant)>) {
        let key = scripts::lease_key(&host);
        let member = self.member(id);
        let ttl = self.ttl_ms();
        let started = Instant::now();
        let script = self.scripts.clone();
        let answer: Option<(i64, i64)> = self
            .call("acquire", |mut conn| {
                let (key, member) = (key.clone(), member.clone());
                let wanted = scripts::wanted_key(&host);
                let node = self.options.node.clone();
                async move {
                    script
                        .acquire
                        .key(key)
                        .key(HOSTS)
                        .key(wanted)
                        .arg(member)
                        .arg(limit)
                        .arg(ttl)
                        .arg(node)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await;
        if answer.is_some() {
            metrics::histogram!(postern_metrics::CLUSTER_LEASE_SECONDS)
                .record(started.elapsed().as_secs_f64());
        }
        if let Some((0, _)) = answer {
            metrics::counter!(postern_metrics::CLUSTER_LEASE_REFUSALS).increment(1);
            reply(Grant::Refused);
            return;
        }
        // Granted by Redis, or counted locally (the node is local now):
        // either way the agent holds it.
        self.hold(id, &host);
        reply(Grant::Granted(self.lease(id)));
    }

    fn release(self: Rc<Self>, id: u64) {
        let held = {
            let mut state = self.state.borrow_mut();
            let held = state.held.remove(&id);
            metrics::gauge!(postern_metrics::CLUSTER_LEASES).set(state.held.len() as f64);
            held
        };
        let Some(held) = held else {
            return;
        };
        tokio::task::spawn_local(async move {
            let _: Option<i64> = self
                .call("release", |mut conn| async move {
                    redis::cmd("ZREM")
                        .arg(&held.key)
                        .arg(&held.member)
                        .query_async(&mut conn)
                        .await
                })
                .await;
        });
    }

    async fn take(&self, name: &str, capacity: u32, per_ms: f64, want: u32) -> Tokens {
        let key = scripts::throttle_key(name);
        let script = self.scripts.clone();
        let answer: Option<(i64, i64)> = self
            .call("take", |mut conn| async move {
                script
                    .take
                    .key(key)
                    .arg(capacity)
                    .arg(per_ms)
                    .arg(want)
                    .invoke_async(&mut conn)
                    .await
            })
            .await;
        match answer {
            None => Tokens::Unavailable,
            Some((got, _)) if got > 0 => Tokens::Got(u32::try_from(got).unwrap_or(want)),
            Some((_, wait)) => Tokens::Wait(Duration::from_millis(
                u64::try_from(wait).unwrap_or(1).max(1),
            )),
        }
    }

    async fn status(&self) -> Status {
        let script = self.scripts.clone();
        let answer: Option<redis::Value> = self
            .call("status", |mut conn| async move {
                script
                    .status
                    .key(NODES)
                    .key(HOSTS)
                    .invoke_async(&mut conn)
                    .await
            })
            .await;
        if let Some(status) = answer.and_then(|a| Status::parse(&self.options.node, &a)) {
            return status;
        }
        let state = self.state.borrow();
        let held = state.held.values().map(|h| scripts::host_of(&h.key));
        Status::local(&self.options.node, held)
    }

    /// Registers the node and renews every lease, connecting first when
    /// local. True when Redis answered.
    async fn beat(self: Rc<Self>) -> bool {
        if std::mem::replace(&mut self.state.borrow_mut().beating, true) {
            return false;
        }
        let ok = self.beat_once().await;
        self.state.borrow_mut().beating = false;
        ok
    }

    async fn beat_once(&self) -> bool {
        if self.state.borrow().conn.is_none() {
            metrics::counter!(postern_metrics::CLUSTER_REDIS_CALLS, "op" => "connect").increment(1);
            let connect = self.client.get_multiplexed_async_connection();
            match tokio::time::timeout(DEADLINE, connect).await {
                Ok(Ok(conn)) => self.state.borrow_mut().conn = Some(conn),
                _ => {
                    metrics::counter!(postern_metrics::CLUSTER_REDIS_ERRORS, "op" => "connect")
                        .increment(1);
                    return false;
                }
            }
        }
        let mut invocation = self.scripts.heartbeat.key(NODES);
        invocation.key(HOSTS).key(SIGNALS);
        let cursor = self.state.borrow().cursor;
        invocation
            .arg(&self.options.node)
            .arg(self.ttl_ms())
            .arg(cursor);
        for held in self.state.borrow().held.values() {
            invocation.key(&held.key).arg(&held.member);
        }
        let answer: Option<(i64, i64, Vec<String>, Vec<String>)> = self
            .call("heartbeat", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await;
        let Some((nodes, now, signals, contended)) = answer else {
            return false;
        };
        self.deliver(now, signals);
        if let Ok(mut c) = self.shared.contended.lock() {
            *c = contended.into_iter().collect();
        }
        let nodes = usize::try_from(nodes).unwrap_or(1).max(1);
        self.shared.nodes.store(nodes, Ordering::Relaxed);
        metrics::gauge!(postern_metrics::CLUSTER_NODES).set(nodes as f64);
        if !self.shared.up.swap(true, Ordering::Relaxed) {
            let leases = self.state.borrow().held.len();
            tracing::info!(nodes, leases, "cluster: limits shared through Redis");
            metrics::gauge!(postern_metrics::CLUSTER_REDIS_UP).set(1.0);
        }
        true
    }

    /// Hands the other nodes' new signals to the sink.
    fn deliver(&self, now: i64, signals: Vec<String>) {
        let fresh: Vec<String> = {
            let mut state = self.state.borrow_mut();
            state.cursor = now;
            let fresh = signals
                .iter()
                .filter(|s| !state.seen.contains(*s))
                .cloned()
                .collect();
            state.seen = signals.into_iter().collect();
            fresh
        };
        let sink = self.shared.signals.lock().ok().and_then(|s| s.clone());
        let Some(sink) = sink else {
            return;
        };
        for member in fresh {
            let mut fields = member.splitn(5, scripts::FIELD).skip(1);
            let (Some(node), Some(class), Some(host), Some(reply)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if node != self.options.node {
                sink(Signal {
                    host: host.to_owned(),
                    class: class.to_owned(),
                    node: node.to_owned(),
                    reply: reply.to_owned(),
                });
            }
        }
    }

    /// Gives every lease of this run back and leaves the cluster.
    async fn leave(&self) {
        self.state.borrow_mut().held.clear();
        metrics::gauge!(postern_metrics::CLUSTER_LEASES).set(0.0);
        let prefix = format!("{}/{}/", self.options.node, self.boot);
        let script = self.scripts.clone();
        let node = self.options.node.clone();
        let _: Option<i64> = self
            .call("release", |mut conn| async move {
                script
                    .leave
                    .key(NODES)
                    .key(HOSTS)
                    .arg(node)
                    .arg(prefix)
                    .invoke_async(&mut conn)
                    .await
            })
            .await;
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.options.lease_ttl.as_millis()).unwrap_or(10_000)
    }
}

/// Every series at zero from the start, so that dashboards have one
/// before the first event.
fn register_metrics() {
    use postern_metrics as m;
    metrics::gauge!(m::CLUSTER_REDIS_UP).set(0.0);
    metrics::gauge!(m::CLUSTER_NODES).set(1.0);
    metrics::gauge!(m::CLUSTER_LEASES).set(0.0);
    metrics::counter!(m::CLUSTER_LEASE_REFUSALS).increment(0);
    metrics::counter!(m::CLUSTER_FALLBACKS).increment(0);
    for op in [
        "acquire",
        "release",
        "heartbeat",
        "take",
        "signal",
        "status",
        "connect",
    ] {
        metrics::counter!(m::CLUSTER_REDIS_CALLS, "op" => op).increment(0);
        metrics::counter!(m::CLUSTER_REDIS_ERRORS, "op" => op).increment(0);
    }
}
