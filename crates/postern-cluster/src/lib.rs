//! Several Postern nodes sharing one set of limits through Redis.
//!
//! A node takes a [`Lease`] before it opens a connection to a host with a
//! `Host` limit ([`Cluster::acquire`]: one atomic script checks the
//! host's count across the cluster and adds the lease with its expiry),
//! renews every lease it holds while the connection lives, and gives it
//! back when the connection closes (the lease is dropped). Throttles take
//! their tokens from one bucket per setting ([`Cluster::take`]). Redis is
//! never on the per-message path for connection limits.
//!
//! The adaptive loops stay in step: when a node's loop slows a host down
//! (a reply classed too many connections or rate limited), the node
//! [`publish`](Cluster::publish)es the signal, and every other node's
//! loop takes it as its own at its next heartbeat ([`Cluster::on_signal`]),
//! so that the fleet backs off together, each node from what it sends.
//!
//! Redis runs on a thread of its own (`agent.rs`): no call ever blocks the
//! caller, every call has a deadline ([`DEADLINE`]), and the answers come
//! back through callbacks. When Redis fails or is slow, the node is
//! *local* ([`Cluster::is_shared`] is false): the caller keeps to its
//! share of each limit ([`Cluster::share`]), leases are counted locally,
//! and the agent retries Redis every half second; when Redis answers, the
//! node registers again with every lease it holds and is shared again.
#![warn(missing_docs)]

mod agent;
mod scripts;
mod status;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use status::{HostLeases, NodeStatus, Status};

/// The most a call to Redis may take before the node falls back to local
/// shares.
pub const DEADLINE: Duration = Duration::from_millis(250);

/// How the node joins the cluster (the `Cluster` stanza).
#[derive(Debug, Clone)]
pub struct Options {
    /// `redis://HOST[:PORT][/DB]`.
    pub redis: String,
    /// This node's name: unique in the cluster.
    pub node: String,
    /// How long a lease lives unless renewed.
    pub lease_ttl: Duration,
}

/// The answer to [`Cluster::acquire`].
#[derive(Debug)]
pub enum Grant {
    /// A slot: counted in Redis, or locally when Redis failed meanwhile
    /// (then [`Cluster::is_shared`] is already false).
    Granted(Lease),
    /// The host has its limit of connections across the cluster.
    Refused,
}

/// The answer to [`Cluster::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    /// This many tokens (at least one).
    Got(u32),
    /// None now; the next comes after this.
    Wait(Duration),
    /// Redis did not answer: use the local share of the throttle.
    Unavailable,
}

/// A slow-down signal another node published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// The host, as the engine names it.
    pub host: String,
    /// The reply's class (`too_many_connections`, `rate_limited`).
    pub class: String,
    /// The node that got the reply.
    pub node: String,
    /// The reply.
    pub reply: String,
}

/// Where remote signals go.
type SignalSink = Arc<dyn Fn(Signal) + Send + Sync>;

/// What the agent is asked.
enum Request {
    Acquire {
        host: String,
        limit: u32,
        id: u64,
        reply: Box<dyn FnOnce(Grant) + Send>,
    },
    Local {
        host: String,
        id: u64,
    },
    Release(u64),
    Take {
        name: String,
        capacity: u32,
        per_ms: f64,
        want: u32,
        reply: Box<dyn FnOnce(Tokens) + Send>,
    },
    Publish(String),
    Status(oneshot::Sender<Status>),
    Stop(std::sync::mpsc::Sender<()>),
}

/// What the caller and the agent share.
struct Shared {
    tx: mpsc::UnboundedSender<Request>,
    node: String,
    up: AtomicBool,
    nodes: AtomicUsize,
    next_id: AtomicU64,
    signals: Mutex<Option<SignalSink>>,
    /// Hosts of this node's leases that another node waits for (from the
    /// last heartbeat).
    contended: Mutex<std::collections::HashSet<String>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A handle on the node's membership; cheap to clone, usable from any
/// thread.
#[derive(Clone)]
pub struct Cluster(Arc<Shared>);

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.0.node)
            .field("shared", &self.is_shared())
            .finish()
    }
}

/// One connection's slot at a host; given back when dropped.
pub struct Lease {
    id: u64,
    tx: mpsc::UnboundedSender<Request>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({})", self.id)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The agent has stopped when this fails: nothing left to release.
        let _ = self.tx.send(Request::Release(self.id));
    }
}

impl Cluster {
    /// Starts the agent thread and waits (at most a second) for its first
    /// registration, so that the first connections already count across
    /// the cluster. A bad URL is an error; Redis being down is not: the
    /// node starts local and joins when Redis answers.
    pub fn start(options: Options) -> std::io::Result<Cluster> {
        let client = redis::Client::open(options.redis.as_str())
            .map_err(|e| std::io::Error::other(format!("Cluster Redis: {e}")))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            tx,
            node: options.node.clone(),
            up: AtomicBool::new(false),
            nodes: AtomicUsize::new(1),
            next_id: AtomicU64::new(1),
            signals: Mutex::new(None),
            contended: Mutex::default(),
            thread: Mutex::new(None),
        });
        let (joined_tx, joined_rx) = std::sync::mpsc::channel();
        let for_agent = shared.clone();
        let thread = std::thread::Builder::new()
            .name("postern-cluster".into())
            .spawn(move || agent::Agent::new(client, options, for_agent).run(rx, joined_tx))?;
        if let Ok(mut slot) = shared.thread.lock() {
            *slot = Some(thread);
        }
        // Either answer (joined or not) or a timeout: the node goes on.
        let _ = joined_rx.recv_timeout(Duration::from_secs(1));
        Ok(Cluster(shared))
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.0.node
    }

    /// True while limits are shared through Redis; false while the node
    /// keeps to its local shares.
    pub fn is_shared(&self) -> bool {
        self.0.up.load(Ordering::Relaxed)
    }

    /// Live nodes seen at the last heartbeat (at least 1).
    pub fn nodes(&self) -> usize {
        self.0.nodes.load(Ordering::Relaxed).max(1)
    }

    /// True when another node waits for a lease at `host`, where this
    /// node holds some: it should keep to its fair share
    /// ([`fair_share`](Self::fair_share)) so that the other gets one.
    pub fn contended(&self, host: &str) -> bool {
        self.0.contended.lock().is_ok_and(|c| c.contains(host))
    }

    /// This node's fair share of `limit` at a contended host: the limit
    /// divided by the live nodes, rounded up.
    pub fn fair_share(&self, limit: usize) -> usize {
        limit.div_ceil(self.nodes()).max(1)
    }

    /// This node's share of `limit` while Redis is out of reach: the limit
    /// divided by the live nodes last seen, at least 1.
    pub fn share(&self, limit: usize) -> usize {
        (limit / self.nodes()).max(1)
    }

    /// Asks Redis for a slot at `host` (a name the same on every node)
    /// whose cluster-wide limit is `limit`. `reply` is called on the
    /// agent's thread.
    pub fn acquire(&self, host: &str, limit: u32, reply: impl FnOnce(Grant) + Send + 'static) {
        let request = Request::Acquire {
            host: host.to_owned(),
            limit,
            id: self.next_id(),
            reply: Box::new(reply),
        };
        if let Err(mpsc::error::SendError(Request::Acquire { id, reply, .. })) =
            self.0.tx.send(request)
        {
            // The agent has stopped (shutdown): a slot that counts nowhere.
            reply(Grant::Granted(self.detached(id)));
        }
    }

    /// A slot at `host` counted locally (the caller checked its share);
    /// registered in Redis when Redis is back.
    pub fn local(&self, host: &str) -> Lease {
        let id = self.next_id();
        let _ = self.0.tx.send(Request::Local {
            host: host.to_owned(),
            id,
        });
        self.detached(id)
    }

    /// Takes up to `want` tokens from the cluster's bucket `name`, which
    /// holds `count` tokens and refills `count` per `per_secs` seconds.
    pub fn take(
        &self,
        name: &str,
        (count, per_secs): (u32, u32),
        want: u32,
        reply: impl FnOnce(Tokens) + Send + 'static,
    ) {
        let capacity = count.max(1);
        let request = Request::Take {
            name: name.to_owned(),
            capacity,
            per_ms: f64::from(capacity) / (f64::from(per_secs.max(1)) * 1000.0),
            want: want.max(1),
            reply: Box::new(reply),
        };
        if let Err(mpsc::error::SendError(Request::Take { reply, .. })) = self.0.tx.send(request) {
            reply(Tokens::Unavailable);
        }
    }

    /// Tells the other nodes that this node's loop slowed `host` down.
    pub fn publish(&self, host: &str, class: &str, reply: &str) {
        let seq = self.next_id();
        let f = scripts::FIELD;
        let member = format!("{seq}{f}{}{f}{class}{f}{host}{f}{reply}", self.0.node);
        let _ = self.0.tx.send(Request::Publish(member));
    }

    /// Where the other nodes' signals go (called on the agent's thread).
    pub fn on_signal(&self, sink: impl Fn(Signal) + Send + Sync + 'static) {
        if let Ok(mut slot) = self.0.signals.lock() {
            *slot = Some(Arc::new(sink));
        }
    }

    /// The cluster as Redis sees it (or as this node does, when Redis is
    /// out of reach).
    pub async fn status(&self) -> Option<Status> {
        let (tx, rx) = oneshot::channel();
        self.0.tx.send(Request::Status(tx)).ok()?;
        rx.await.ok()
    }

    /// Gives every lease back, leaves the cluster, and stops the agent
    /// (waiting at most a second for Redis).
    pub fn stop(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.0.tx.send(Request::Stop(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(2));
        }
        let thread = self.0.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    fn next_id(&self) -> u64 {
        self.0.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn detached(&self, id: u64) -> Lease {
        Lease {
            id,
            tx: self.0.tx.clone(),
        }
    }
}
