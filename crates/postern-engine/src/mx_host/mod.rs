//! The MX-host actor's state: one per (source, destination address and
//! port, delivery profile). A host owns its pool of connections (opening,
//! busy, idle), its connection limit counted across every domain routed to
//! it, its reachability, and the ring of domains that may hand it mail now.
//!
//! Reachability: a new host gets one connection first; a host that failed
//! is skipped for `Host_Failure_Retry`, then one probe goes first, and only
//! its success opens the pool again. A reply classed too many connections
//! or rate limited is not a failure: the host answered. It steers the
//! host's adaptive loop (`adaptive.rs`): the effective limit and rate.

mod adaptive;
mod key;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_conf::ReplyClass;
use postern_smtp::Reply;
use postern_smtp::client::ClientSettings;
use tokio::sync::oneshot;

use self::adaptive::Adaptive;
pub(crate) use self::key::{HostKey, Peer, Profile, Source};
use crate::ids::{ConnId, DomainId};
use crate::lease::Gauge;
use crate::message::Batch;

/// Whether the host may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Never connected: one connection goes first. Meanwhile the host
    /// counts as free, so that mail waits for it instead of going to a
    /// worse host.
    New,
    /// Its last connection succeeded.
    Up,
    /// Skipped until the time given, after a failure.
    Down {
        /// When a probe may go.
        until: Instant,
    },
    /// Due back: one probe connection; the host counts as down until the
    /// probe succeeds.
    Probing,
}

/// A connection waiting for work.
#[derive(Debug)]
pub(crate) struct Idle {
    pub(crate) conn: ConnId,
    pub(crate) since: Instant,
    pub(crate) reply: oneshot::Sender<Vec<Batch>>,
    /// How many batches it may take at once.
    pub(crate) room: usize,
}

/// One MX host.
#[derive(Debug)]
pub(crate) struct MxHost {
    pub(crate) key: HostKey,
    /// The settings every connection to it uses.
    pub(crate) settings: Arc<ClientSettings>,
    /// The `Host` stanza's `Max_Outbound_Connections` for its source.
    pub(crate) limit: Option<usize>,
    /// `Max_Deliveries_Per_Connection`, `Idle_Timeout`, `Host_Failure_Retry`
    /// of the first domain routed here.
    pub(crate) max_deliveries: u64,
    /// `Outbound_Messages_Per_Write`.
    pub(crate) per_write: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) failure_retry: Duration,
    pub(crate) reach: Reach,
    pub(crate) consecutive_failures: u32,
    pub(crate) last_failure: Option<Instant>,
    /// Connections open or opening, and opening only.
    pub(crate) open: Gauge,
    pub(crate) opening: Gauge,
    /// Connections waiting for work, oldest first.
    pub(crate) idle: VecDeque<Idle>,
    /// Domains that may have mail for it, served in turn.
    pub(crate) ring: VecDeque<DomainId>,
    /// The effective limit and rate, steered by "slow down" replies.
    pub(crate) adaptive: Adaptive,
    /// Its name in the cluster (the same on every node): the binding it
    /// was made for, and its address.
    pub(crate) cluster_key: String,
    /// Lease requests to the cluster.
    pub(crate) leases: crate::scheduler::HostLeases,
    /// The idle timer is set for the oldest idle connection.
    pub(crate) idle_timer: bool,
    /// Waiting for the server-wide limit to allow a connection.
    pub(crate) starved: bool,
    /// When its one retry timer is set for (a pause, a rate token).
    pub(crate) retry_at: Option<Instant>,
}

impl MxHost {
    pub(crate) fn new(
        key: HostKey,
        settings: Arc<ClientSettings>,
        limit: Option<usize>,
        adaptive: bool,
        binding: &str,
    ) -> Self {
        Self {
            cluster_key: format!("{binding}/{}", key.addr),
            leases: crate::scheduler::HostLeases::default(),
            adaptive: Adaptive::new(adaptive, limit, Instant::now()),
            key,
            settings,
            limit,
            max_deliveries: 0,
            per_write: 1,
            idle_timeout: Duration::from_secs(5),
            failure_retry: Duration::from_secs(120),
            reach: Reach::New,
            consecutive_failures: 0,
            last_failure: None,
            open: Gauge::default(),
            opening: Gauge::default(),
            idle: VecDeque::new(),
            ring: VecDeque::new(),
            idle_timer: false,
            starved: false,
            retry_at: None,
        }
    }

    /// The host's name (MX, gateway or route host).
    pub(crate) fn name(&self) -> &str {
        &self.settings.server_name
    }

    /// The limit in force: the adaptive loop's, within the configured one.
    pub(crate) fn limit_now(&self) -> Option<usize> {
        self.adaptive.limit()
    }

    /// Below the configured limit: for the preference rule, a host the
    /// adaptive loop holds back is still free (mail waits for it rather
    /// than going to a worse host).
    fn has_slot(&self) -> bool {
        self.limit.is_none_or(|l| self.open.get() < l)
    }

    /// Below the limit in force.
    fn below_limit_now(&self) -> bool {
        self.limit_now().is_none_or(|l| self.open.get() < l)
    }

    /// Not skipped after a failure.
    pub(crate) fn reachable(&self) -> bool {
        matches!(self.reach, Reach::New | Reach::Up)
    }

    /// Free for the preference rule: reachable, with an idle connection
    /// or a free slot.
    pub(crate) fn usable(&self) -> bool {
        self.reachable() && (!self.idle.is_empty() || self.has_slot())
    }

    /// True when one more connection may be opened now. A new or probed
    /// host gets one at a time until one succeeds; then at most half as
    /// many connect at once as are open, plus two.
    pub(crate) fn may_open(&self, now: Instant) -> bool {
        if self.paused_until().is_some_and(|t| now < t) || !self.below_limit_now() {
            return false;
        }
        let opening = self.opening.get();
        match self.reach {
            Reach::New | Reach::Probing => opening == 0,
            Reach::Up => opening < 2 + (self.open.get() - opening) / 2,
            Reach::Down { .. } => false,
        }
    }

    /// When a paused host may open again.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.adaptive.paused_until()
    }

    /// A connection got through: the host is up.
    pub(crate) fn connected(&mut self) {
        self.reach = Reach::Up;
        self.consecutive_failures = 0;
    }

    /// A connection failed: skipped until the returned time.
    pub(crate) fn failed(&mut self, now: Instant) -> Instant {
        let until = now + self.failure_retry;
        self.reach = Reach::Down { until };
        self.consecutive_failures += 1;
        self.last_failure = Some(now);
        until
    }

    /// The retry time has come: true when a probe may now go.
    pub(crate) fn due_back(&mut self, now: Instant) -> bool {
        match self.reach {
            Reach::Down { until } if now >= until => {
                self.reach = Reach::Probing;
                true
            }
            _ => false,
        }
    }

    /// The host answered "too many connections" or "rate limited" on
    /// connection `conn` while `open` connections were open; `next` is the
    /// id the next connection gets. True when its loop slowed it down.
    pub(crate) fn signal(
        &mut self,
        class: ReplyClass,
        reply: &Reply,
        (conn, open, next): (ConnId, usize, ConnId),
    ) -> bool {
        let now = Instant::now();
        let slowed = self
            .adaptive
            .signal(class, reply.to_string(), conn, open, next, now);
        // Logged when the loop changes (once per cohort of sessions), so
        // that a host refusing every session does not flood the log.
        if slowed {
            tracing::info!(host = %self.name(), addr = %self.key.addr, %reply, "host asks to slow down: limit or rate lowered");
        } else {
            tracing::debug!(host = %self.name(), addr = %self.key.addr, %reply, "host asks to slow down");
        }
        slowed
    }

    /// Another node's loop slowed this host down: this node's loop does
    /// the same, from its own connections and rate (`next` is the id the
    /// next connection gets, so the cohort rule lets it through).
    pub(crate) fn remote_signal(&mut self, class: ReplyClass, why: String, next: ConnId) {
        tracing::info!(host = %self.name(), addr = %self.key.addr, reply = %why, "host asked another node to slow down");
        let open = self.open.get();
        self.adaptive
            .signal(class, why, next, open, next, Instant::now());
    }

    /// A transaction went through.
    pub(crate) fn success(&mut self, now: Instant) {
        let in_use = self.open.get().saturating_sub(self.opening.get());
        self.adaptive.success(now, in_use);
    }
}
