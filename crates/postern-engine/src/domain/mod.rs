//! The domain actor's state: one per (binding, domain) queue. Its routing
//! table as levels of MX hosts, its ready (active) and delayed mail, the
//! connections that carry its mail or are being opened for it, and the
//! options that govern them.
//!
//! A domain does not own connections: its MX hosts do, and share them
//! with every domain routed to them. A domain says which of its hosts may
//! take its mail now ([`Domain::first_usable_level`], the preference rule)
//! and how much it has.

mod limits;
mod ready;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use postern_dns::mta_sts::MtaSts;
use postern_smtp::Reply;
use smallvec::SmallVec;

pub(crate) use self::limits::Limits;
use crate::ids::HostId;
use crate::lease::Gauge;
use crate::message::Batch;
use crate::mx_host::MxHost;
use ready::Ready;

/// A queue's name. Its parts are shared with every message queued there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueKey {
    /// The binding.
    pub binding: Arc<str>,
    /// The destination domain.
    pub domain: Arc<str>,
}

/// What a domain keeps of its routing table besides its levels (which
/// became hosts, [`Domain::levels`]): when to build it again, and the
/// destination's MTA-STS policy for the outcomes.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// `None` when nothing in the table came from DNS.
    pub(crate) refresh_at: Option<Instant>,
    pub(crate) mta_sts: Option<Arc<MtaSts>>,
}

/// Where the routing table stands.
#[derive(Debug)]
pub(crate) enum Table {
    /// Not built yet.
    None,
    /// Waiting for a lookup slot or being built; `Some` keeps the previous
    /// one in use meanwhile.
    Resolving(Option<Route>),
    /// Built.
    Ready(Route),
}

impl Table {
    /// True when a build should start: none yet, or the TTL has passed.
    pub(crate) fn stale(&self, now: Instant) -> bool {
        match self {
            Table::None => true,
            Table::Resolving(_) => false,
            Table::Ready(r) => r.refresh_at.is_some_and(|at| now >= at),
        }
    }

    /// The MTA-STS policy of the table in use.
    pub(crate) fn mta_sts(&self) -> Option<&Arc<MtaSts>> {
        match self {
            Table::Resolving(Some(r)) | Table::Ready(r) => r.mta_sts.as_ref(),
            Table::None | Table::Resolving(None) => None,
        }
    }
}

/// A table's hosts with their preference levels, best level first: one
/// list held in the domain's record (most domains have at most four MX
/// hosts), not a list of lists elsewhere in memory.
pub(crate) type Levels = SmallVec<[(u32, HostId); 4]>;

/// One (binding, domain) queue.
#[derive(Debug)]
pub(crate) struct Domain {
    pub(crate) key: QueueKey,
    /// Shared by every queue with the same options.
    pub(crate) limits: Arc<Limits>,
    pub(crate) table: Table,
    /// The table's levels as MX hosts, kept with the table.
    pub(crate) levels: Levels,
    /// Ready now, oldest first.
    pub(crate) active: Ready,
    /// Waiting for a time, by (time, sequence).
    pub(crate) delayed: BTreeMap<(Instant, u64), Batch>,
    /// Connections carrying its mail now, and being opened for it.
    pub(crate) carrying: Gauge,
    pub(crate) opening: Gauge,
    /// The hosts whose ring holds this domain.
    pub(crate) enlisted: SmallVec<[HostId; 4]>,
    /// Failed connections opened for it since the last success.
    pub(crate) consecutive_failures: u32,
    /// The last connection failure.
    pub(crate) last_failure: Option<Reply>,
    /// When the next wake-up for delayed mail is set.
    pub(crate) wake: Option<Instant>,
    /// Held: nothing is delivered until resumed (`Suspend_Delivery`).
    pub(crate) suspended: bool,
    /// A wake-up is set for when a throttle allows more.
    pub(crate) throttle_wake: Option<Instant>,
    /// Held by a `suspend` reply rule until then.
    pub(crate) held_until: Option<Instant>,
    /// Entries are being read back from the spool.
    pub(crate) reading: bool,
}

impl Domain {
    pub(crate) fn new(key: QueueKey, limits: Arc<Limits>, ready: Arc<AtomicUsize>) -> Self {
        Self {
            key,
            suspended: limits.suspended,
            limits,
            table: Table::None,
            levels: Levels::new(),
            active: Ready::new(ready),
            delayed: BTreeMap::new(),
            carrying: Gauge::default(),
            opening: Gauge::default(),
            enlisted: SmallVec::new(),
            consecutive_failures: 0,
            last_failure: None,
            wake: None,
            throttle_wake: None,
            held_until: None,
            reading: false,
        }
    }

    /// Connections carrying its mail or being opened for it.
    /// Batches held in memory: ready and delayed.
    pub(crate) fn held(&self) -> usize {
        self.active.len() + self.delayed.len()
    }

    pub(crate) fn connections(&self) -> usize {
        self.carrying.get() + self.opening.get()
    }

    /// True while `Max_Outbound_Connections` allows one more connection to
    /// carry its mail.
    pub(crate) fn below_limit(&self) -> bool {
        self.connections() < self.limits.max_connections
    }

    /// True when ready mail is not covered by connections being opened.
    pub(crate) fn wants_connection(&self) -> bool {
        self.active.len() > self.opening.get() && self.below_limit()
    }

    /// True when it has ready mail it may send now.
    pub(crate) fn has_work(&self) -> bool {
        !self.active.is_empty() && !self.suspended && self.held_until.is_none()
    }

    /// The host's preference level in this domain's table.
    pub(crate) fn level_of(&self, host: HostId) -> Option<u32> {
        self.levels
            .iter()
            .find(|(_, h)| *h == host)
            .map(|(l, _)| *l)
    }

    /// The preference rule: the best level with a host that is reachable
    /// and has an idle connection or a free slot.
    pub(crate) fn first_usable_level(&self, hosts: &[MxHost]) -> Option<u32> {
        self.levels
            .iter()
            .find(|(_, h)| host(hosts, *h).is_some_and(MxHost::usable))
            .map(|(l, _)| *l)
    }

    /// True when a new connection for this domain may go to `host`:
    /// equal hosts share connections evenly, so no usable host of its
    /// level has fewer.
    pub(crate) fn fair(&self, host: HostId, hosts: &[MxHost]) -> bool {
        let Some(level) = self.level_of(host) else {
            return false;
        };
        let open = |h: HostId| self::host(hosts, h).map_or(0, |x| x.open.get());
        let mine = open(host);
        self.levels
            .iter()
            .filter(|(l, h)| *l == level && self::host(hosts, *h).is_some_and(MxHost::usable))
            .all(|(_, h)| open(*h) >= mine)
    }

    /// True when `host` may carry this domain's mail now: no better level
    /// has a usable host.
    pub(crate) fn permits(&self, host: HostId, hosts: &[MxHost]) -> bool {
        let Some(level) = self.level_of(host) else {
            return false;
        };
        self.first_usable_level(hosts)
            .is_none_or(|best| best >= level)
    }
}

/// A host by id.
pub(crate) fn host(hosts: &[MxHost], id: HostId) -> Option<&MxHost> {
    hosts.get(id.0 as usize)
}
