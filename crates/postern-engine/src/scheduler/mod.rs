//! The scheduler actor on the control loop. It owns every queue (the
//! domain actors' state) and every destination host (the MX-host actors'
//! state), so that each decision about a connection is made on one
//! consistent view: no two queues can both take a host's last slot, and a
//! worse host is never chosen while a better one is free (see
//! `docs/adr/0001-control-plane.md`).

mod control;
mod flow;
mod outcome;
mod query;
mod retry;
mod routing;
mod timers;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;
use crossbeam_channel::Sender;
use postern_conf::Config;
use postern_dns::Dns;

pub(crate) use self::control::{Command, Control, Drain};
pub use self::query::{HostSummary, HostView, QueueRow, QueueView, Summary};
pub(crate) use self::query::{QueryQueue, QueryQueues, QuerySummary};
use self::retry::{Round, RoundKey};
use crate::bounce::Bounce;
use crate::choice::HostState;
use crate::connection::ConnId;
use crate::message::{QueuedMessage, Report};
use crate::outbound::TlsCache;
use crate::queue::{Queue, QueueKey};
use crate::throttle::Bucket;

/// A message for the engine.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Submit(pub(crate) QueuedMessage);

/// What the scheduler knows of a connection.
#[derive(Debug)]
struct ConnInfo {
    queue: QueueKey,
    host: SocketAddr,
    name: String,
    level: u32,
    event_loop: usize,
    busy: bool,
}

/// The scheduler.
pub(crate) struct Scheduler {
    config: Arc<Config>,
    dns: Dns,
    hostname: String,
    queues: HashMap<QueueKey, Queue>,
    hosts: HashMap<SocketAddr, HostState>,
    conns: HashMap<ConnId, ConnInfo>,
    next_conn: ConnId,
    /// Connections open or opening, and `Server_Max_Outbound_Connections`.
    total: usize,
    server_limit: usize,
    /// Queues with ready mail that found every usable host full.
    starved: HashSet<QueueKey>,
    loops: Vec<ArbiterHandle>,
    /// Connections open on each delivery loop, and opened in all.
    loop_open: Vec<usize>,
    loop_opened: Vec<u64>,
    reports: Sender<Report>,
    bounces: Sender<Bounce>,
    /// Attempt rounds with batches still out (for one bounce per round).
    rounds: HashMap<RoundKey, Round>,
    /// Throttle buckets by the setting that defines them.
    buckets: HashMap<String, Bucket>,
    tls: TlsCache,
    sequence: u64,
    /// Shutting down: no new connection, no new work.
    draining: bool,
    /// Every deadline, under one actix timer.
    timers: self::timers::Timers,
}

impl Scheduler {
    pub(crate) fn new(
        config: Arc<Config>,
        dns: Dns,
        loops: Vec<ArbiterHandle>,
        reports: Sender<Report>,
        bounces: Sender<Bounce>,
    ) -> Self {
        let server_limit = match config
            .global
            .value_or_default(postern_conf::Directive::ServerMaxOutboundConnections)
        {
            Some(postern_conf::Value::Count(n)) => usize::try_from(*n).unwrap_or(usize::MAX),
            _ => 20_000,
        };
        // Every connection is a file descriptor: keep a margin for the
        // listener, the spool and the resolver.
        let descriptors = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(usize::MAX);
        let server_limit = server_limit.min(descriptors.saturating_sub(512).max(64));
        let n = loops.len();
        Self {
            hostname: config.hostname(),
            config,
            dns,
            queues: HashMap::new(),
            hosts: HashMap::new(),
            conns: HashMap::new(),
            next_conn: 1,
            total: 0,
            server_limit,
            starved: HashSet::new(),
            loops,
            loop_open: vec![0; n],
            loop_opened: vec![0; n],
            reports,
            bounces,
            rounds: HashMap::new(),
            buckets: HashMap::new(),
            tls: TlsCache::default(),
            sequence: 0,
            draining: false,
            timers: self::timers::Timers::default(),
        }
    }
}

/// Submissions and connection reports use `do_send`, which ignores the
/// mailbox capacity: the daemon never waits on the scheduler.
impl Actor for Scheduler {
    type Context = Context<Self>;
}
