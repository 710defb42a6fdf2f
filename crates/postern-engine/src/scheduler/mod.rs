//! The scheduler on the control loop. [`Core`] holds every domain (the
//! domain actors' state) and every MX host (the MX-host actors' state,
//! each with its pool of connections), so that each decision is made on
//! one consistent view: no two domains can take a host's last slot, and a
//! worse host never gets a connection or a batch while a better one is
//! free. `Core` has no actix in it; it records what is to be done outside
//! (open a connection, look up a table) as [`Action`]s, and the
//! [`Scheduler`] actor carries them out and keeps one timer for the
//! earliest deadline (`docs/adr/0003-mx-host-pools.md`).

mod backlog;
mod callout;
mod cluster;
mod control;
mod dispatch;
mod idle;
mod intake;
mod outcome;
mod query;
mod retry;
mod routing;
mod timers;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use actix::prelude::*;
use postern_conf::{Config, Directive, ReplyClass, Value};
use postern_dns::Dns;
use smallvec::SmallVec;

pub(crate) use self::backlog::SubmitSpooled;
pub(crate) use self::callout::{EndCallout, ReserveCallout};
pub(crate) use self::cluster::HostLeases;
pub(crate) use self::control::{Command, Control, Drain, Fault};
use self::idle::IdleOrder;
pub use self::query::{HostSummary, HostView, QueueRow, QueueView, Summary};
pub(crate) use self::query::{QueryQueue, QueryQueues, QuerySummary};
use self::retry::{Round, RoundKey};
use self::timers::Timers;
use crate::Handle;
use crate::bounce::Settlement;
use crate::class::Classifier;
use crate::connection::{Connection, Relay};
use crate::domain::{Domain, Limits, QueueKey};
use crate::ids::{ConnId, DomainId, HostId, IdMap};
use crate::lease::{Gauge, Lease};
use crate::message::{Backlog, Batch, Failure, Spooled};
use crate::messages::{Answer, AnswerTo, Answers, Report, Reports, Returned, Submit};
use crate::mx_host::{HostKey, MxHost, Peer};
use crate::outbound::TlsCache;
use crate::outcomes::Outcomes;
use crate::throttle::Bucket;

/// MX lookups (routing table builds) in flight at once; more wait.
const MAX_LOOKUPS: usize = 64;

/// What the core asks its actor to do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Start a connection actor on a delivery loop.
    Open {
        conn: ConnId,
        host: HostId,
        event_loop: usize,
    },
    /// Build the domain's routing table.
    Resolve(DomainId),
    /// Hand failures for good to the outcomes: to mark done, with the
    /// bounce stored and queued when one is wanted.
    Settle(Settlement),
    /// Ask the cluster for a lease at the host.
    Lease(HostId),
    /// Ask the cluster for tokens of the throttle so named.
    Tokens(Arc<str>, postern_conf::Throttle),
    /// Tell the other nodes that the host's loop slowed it down.
    Signal(HostId, ReplyClass, String),
    /// Read the domain's entries back from the spool.
    ReadBack(DomainId, Vec<Spooled>),
    /// Answer a connection's request for work (no batch: close).
    Answer {
        conn: ConnId,
        event_loop: usize,
        to: AnswerTo,
        batches: Vec<Batch>,
    },
}

/// Being opened on behalf of a domain: counted against the host's and the
/// domain's connections until it connects or fails.
#[derive(Debug)]
struct Opening {
    domain: DomainId,
    _host: Lease,
    _domain: Lease,
}

/// A connection's record; dropping it gives back every slot it holds.
#[derive(Debug)]
struct Conn {
    host: HostId,
    _slot: Lease,
    _server: Lease,
    _on_loop: Lease,
    /// The delivery loop it runs on.
    event_loop: usize,
    /// Its slot in the cluster's count of the host's connections.
    _cluster: Option<postern_cluster::Lease>,
    opening: Option<Opening>,
    /// The domains whose batches it carries now, each counted once.
    carrying: SmallVec<[(DomainId, Lease); 2]>,
    /// Waiting in its host's pool since then.
    idle_since: Option<Instant>,
}

/// Every domain, host and connection, and the rules that tie them.
pub(crate) struct Core {
    config: Arc<Config>,
    hostname: String,
    domains: Vec<Domain>,
    /// Domain ids by binding, then domain: looked up without a copy of
    /// either name.
    domain_ids: HashMap<Arc<str>, HashMap<Arc<str>, DomainId>>,
    /// The distinct options of all queues: one copy each, warm in the
    /// cache, not one per domain.
    limits: HashSet<Arc<Limits>>,
    hosts: Vec<MxHost>,
    host_ids: HashMap<HostKey, HostId>,
    /// The hosts (profiles) of each source and address.
    peers: HashMap<Peer, Vec<HostId>>,
    conns: IdMap<ConnId, Conn>,
    next_conn: ConnId,
    /// Connections open or opening, and `Server_Max_Outbound_Connections`.
    total: Gauge,
    server_limit: usize,
    /// Hosts that wait for the server-wide limit, in turn.
    starved: VecDeque<HostId>,
    /// Every idle connection by the time it went idle.
    idle_order: IdleOrder,
    /// Connections open on each delivery loop, and opened in all.
    loop_open: Vec<Gauge>,
    loop_opened: Vec<u64>,
    outcomes: Box<dyn Outcomes>,
    /// Reads back entries that queues left in the spool; without it every
    /// queued message stays in memory.
    backlog: Option<Arc<dyn Backlog>>,
    /// Attempt rounds with batches still out (for one bounce per round).
    rounds: IdMap<RoundKey, Round>,
    /// The last transient failure given to a batch, for the next ones.
    recent_failure: Option<Arc<Failure>>,
    /// Throttle buckets by the setting that defines them (and the count
    /// they hold: a share of the cluster's while Redis is out of reach).
    buckets: HashMap<(Arc<str>, u32), Bucket>,
    /// Limits shared with other nodes, when there is a `Cluster` stanza.
    cluster: Option<postern_cluster::Cluster>,
    /// The local side of the cluster's throttle buckets.
    shared_buckets: cluster::SharedBuckets,
    /// Recipient callouts holding places in host pools.
    callouts: callout::Callouts,
    tls: TlsCache,
    sequence: u64,
    /// Shutting down: no new connection, no new work.
    draining: bool,
    timers: Timers,
    /// Table builds in flight, and domains waiting for a lookup slot.
    lookups: usize,
    lookup_queue: VecDeque<DomainId>,
    actions: Vec<Action>,
    /// Reused lists of hosts for [`Core::offer`].
    scratch: (Vec<HostId>, Vec<HostId>),
    /// While a submission is queued ([`Core::submit_all`]), the domains
    /// to offer at its end.
    held_offers: Option<Vec<DomainId>>,
    /// Test hook: a connection given a batch for this recipient panics.
    panic_on: Option<Arc<str>>,
    /// Reply classes and rules.
    classifier: Classifier,
    /// `postern_replies_total` by class, in `ReplyClass::ALL` order.
    replies: Vec<metrics::Counter>,
    /// Ready batches in all domains.
    ready: Arc<AtomicUsize>,
}

impl Core {
    pub(crate) fn new(
        config: Arc<Config>,
        event_loops: usize,
        outcomes: Box<dyn Outcomes>,
        ready: Arc<AtomicUsize>,
        cluster: Option<postern_cluster::Cluster>,
    ) -> Self {
        let server_limit = match config
            .global
            .value_or_default(Directive::ServerMaxOutboundConnections)
        {
            Some(Value::Count(n)) => usize::try_from(*n).unwrap_or(usize::MAX),
            _ => 20_000,
        };
        // Every connection is a file descriptor: keep a margin for the
        // listener, the spool and the resolver.
        let descriptors = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(usize::MAX);
        let server_limit = server_limit.min(descriptors.saturating_sub(512).max(64));
        let config_for_rules = config.clone();
        Self {
            hostname: config.hostname(),
            config,
            domains: Vec::new(),
            domain_ids: HashMap::new(),
            limits: HashSet::new(),
            hosts: Vec::new(),
            host_ids: HashMap::new(),
            peers: HashMap::new(),
            conns: IdMap::default(),
            next_conn: 1,
            total: Gauge::default(),
            server_limit,
            starved: VecDeque::new(),
            idle_order: IdleOrder::default(),
            loop_open: (0..event_loops.max(1)).map(|_| Gauge::default()).collect(),
            loop_opened: vec![0; event_loops.max(1)],
            outcomes,
            backlog: None,
            rounds: IdMap::default(),
            recent_failure: None,
            buckets: HashMap::new(),
            cluster,
            shared_buckets: HashMap::new(),
            callouts: callout::Callouts::default(),
            tls: TlsCache::default(),
            sequence: 0,
            draining: false,
            timers: Timers::default(),
            lookups: 0,
            lookup_queue: VecDeque::new(),
            actions: Vec::new(),
            scratch: (Vec::new(), Vec::new()),
            held_offers: None,
            panic_on: None,
            classifier: Classifier::new(&config_for_rules),
            replies: ReplyClass::ALL
                .iter()
                .map(|c| metrics::counter!(postern_metrics::REPLIES, "class" => c.as_str()))
                .collect(),
            ready,
        }
    }

    /// The domain's id, if it has a queue.
    fn find_domain(&self, binding: &str, domain: &str) -> Option<DomainId> {
        self.domain_ids.get(binding)?.get(domain).copied()
    }

    /// The domain's id, made on first use.
    pub(crate) fn domain_id(&mut self, key: &QueueKey) -> DomainId {
        if let Some(id) = self.find_domain(&key.binding, &key.domain) {
            return id;
        }
        let id = DomainId(u32::try_from(self.domains.len()).unwrap_or(u32::MAX));
        let limits = Limits::of(&self.config, key);
        let limits = match self.limits.get(&limits) {
            Some(shared) => shared.clone(),
            None => {
                let shared = Arc::new(limits);
                self.limits.insert(shared.clone());
                shared
            }
        };
        let ready = self.ready.clone();
        // The binding's name is shared by all its queues (one allocation,
        // warm in the cache, not one per domain).
        let binding = self
            .domain_ids
            .get_key_value(&key.binding)
            .map_or_else(|| key.binding.clone(), |(b, _)| b.clone());
        let key = QueueKey {
            binding: binding.clone(),
            domain: key.domain.clone(),
        };
        self.domain_ids
            .entry(binding)
            .or_default()
            .insert(key.domain.clone(), id);
        self.domains.push(Domain::new(key, limits, ready));
        id
    }

    fn domain(&self, id: DomainId) -> Option<&Domain> {
        self.domains.get(id.0 as usize)
    }

    fn domain_mut(&mut self, id: DomainId) -> Option<&mut Domain> {
        self.domains.get_mut(id.0 as usize)
    }

    fn host(&self, id: HostId) -> Option<&MxHost> {
        self.hosts.get(id.0 as usize)
    }

    fn host_mut(&mut self, id: HostId) -> Option<&mut MxHost> {
        self.hosts.get_mut(id.0 as usize)
    }

    /// What the actor must do now.
    pub(crate) fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }
}

/// The actor around [`Core`].
pub(crate) struct Scheduler {
    core: Core,
    dns: Dns,
    loops: Vec<ArbiterHandle>,
    /// Each delivery loop's relay (started with the actor) and the
    /// answers for it, sent together at the end of the message handled.
    relays: Vec<(Addr<Relay>, Vec<Answer>)>,
    /// The one actix timer, for the earliest deadline.
    armed: Option<(Instant, SpawnHandle)>,
}

impl Scheduler {
    pub(crate) fn new(
        config: Arc<Config>,
        dns: Dns,
        loops: Vec<ArbiterHandle>,
        outcomes: Box<dyn Outcomes>,
        backlog: Option<Arc<dyn Backlog>>,
        ready: Arc<AtomicUsize>,
        cluster: Option<postern_cluster::Cluster>,
    ) -> Self {
        let mut core = Core::new(config, loops.len(), outcomes, ready, cluster);
        core.backlog = backlog;
        Self {
            core,
            dns,
            loops,
            relays: Vec::new(),
            armed: None,
        }
    }

    /// Carries out what the core asked for, and sets the timer.
    fn sync(&mut self, ctx: &mut Context<Self>) {
        for action in self.core.take_actions() {
            match action {
                Action::Open {
                    conn,
                    host,
                    event_loop,
                } => self.open(conn, host, event_loop),
                Action::Resolve(d) => self.resolve(d, ctx),
                Action::Settle(s) => self.core.outcomes.settle(s, &Handle(ctx.address())),
                Action::Lease(h) => self.ask_lease(h, ctx),
                Action::Tokens(name, throttle) => self.ask_tokens(name, throttle, ctx),
                Action::Signal(h, class, reply) => self.publish(h, class, &reply),
                Action::ReadBack(d, entries) => self.read_back(d, entries, ctx),
                Action::Answer {
                    event_loop,
                    to,
                    batches,
                    ..
                } => self.post(event_loop, to, batches),
            }
        }
        self.send_answers();
        self.arm(ctx);
    }

    /// Queues an answer for its loop's relay, to go with the others this
    /// message (a relay's reports, a submission) gave rise to.
    fn post(&mut self, event_loop: usize, to: AnswerTo, batches: Vec<Batch>) {
        match self.relays.get_mut(event_loop) {
            Some((_, outbox)) => outbox.push((to, batches)),
            None => {
                let _ = to.send(batches);
            }
        }
    }

    /// One message per delivery loop with answers: one wake-up of that
    /// loop for all of them. Sent at the end of each message handled, not
    /// when the mailbox is empty, so that a busy mailbox never holds
    /// answers back.
    fn send_answers(&mut self) {
        for (relay, outbox) in &mut self.relays {
            if !outbox.is_empty() {
                relay.do_send(Answers(std::mem::take(outbox)));
            }
        }
    }

    fn open(&mut self, id: ConnId, host: HostId, event_loop: usize) {
        let (Some(h), Some(arbiter)) = (self.core.host(host), self.loops.get(event_loop)) else {
            return;
        };
        let addr = h.key.addr;
        let settings = h.settings.clone();
        let max_deliveries = h.max_deliveries;
        let per_write = h.per_write;
        let panic_on = self.core.panic_on.clone();
        let Some((relay, _)) = self.relays.get(event_loop) else {
            return;
        };
        let relay = relay.clone().recipient();
        Connection::start_in_arbiter(arbiter, move |_| Connection {
            id,
            addr,
            settings,
            relay,
            max_deliveries,
            per_write,
            panic_on,
        });
    }

    fn arm(&mut self, ctx: &mut Context<Self>) {
        let Some(first) = self.core.timers.next() else {
            return;
        };
        if let Some((at, handle)) = self.armed.take() {
            if at <= first {
                self.armed = Some((at, handle));
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = first.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(wait, |act, ctx| {
            act.armed = None;
            act.core.fire(Instant::now());
            act.sync(ctx);
        });
        self.armed = Some((first, handle));
    }
}

/// Submissions and connection reports use `do_send`, which ignores the
/// mailbox capacity: the daemon never waits on the scheduler.
impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        self.relays = self
            .loops
            .iter()
            .map(|arbiter| {
                let scheduler = me.clone();
                let relay = Relay::start_in_arbiter(arbiter, move |_| {
                    Relay::new(scheduler.clone().recipient(), scheduler.recipient())
                });
                (relay, Vec::new())
            })
            .collect();
        self.listen_to_cluster(ctx);
    }
}

impl Handler<Submit> for Scheduler {
    type Result = ();

    fn handle(&mut self, Submit(messages): Submit, ctx: &mut Context<Self>) {
        self.core.submit_all(messages);
        self.sync(ctx);
    }
}

impl Handler<Reports> for Scheduler {
    type Result = ();

    fn handle(&mut self, Reports(reports): Reports, ctx: &mut Context<Self>) {
        for report in reports {
            match report {
                Report::Connected(id) => self.core.connected(id),
                Report::Want(want) => self.core.want_work(want),
                Report::Ended(id, end, behind) => self.core.ended(id, end, behind),
            }
        }
        self.sync(ctx);
    }
}

impl Handler<Returned> for Scheduler {
    type Result = ();

    fn handle(&mut self, Returned(batches): Returned, ctx: &mut Context<Self>) {
        self.core.returned(batches);
        self.sync(ctx);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use postern_conf::Config;

    use super::Core;
    use crate::domain::QueueKey;
    use crate::outcomes::Channels;

    #[test]
    fn queues_with_the_same_options_share_one_copy_of_them() {
        let config = Config::from_text(
            "Hostname = \"t.test\"\nDomain \"own.test\" { Max_Outbound_Connections = 2 }\n",
            Path::new("t.conf"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (sink, _reports, _bounces) = Channels::new();
        let mut core = Core::new(Arc::new(config), 1, Box::new(sink), Arc::default(), None);
        let mut limits = |name: &str| {
            let d = core.domain_id(&QueueKey {
                binding: "default".into(),
                domain: name.into(),
            });
            core.domain(d)
                .map(|dom| dom.limits.clone())
                .unwrap_or_else(|| panic!("no queue for {name}"))
        };
        let (a, b, own) = (limits("a.test"), limits("b.test"), limits("own.test"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &own));
        assert_eq!((a.max_connections, own.max_connections), (32, 2));
        assert_eq!(core.limits.len(), 2);
    }
}
