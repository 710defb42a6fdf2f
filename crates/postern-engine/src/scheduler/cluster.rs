//! Limits shared with other nodes through Redis (`postern-cluster`).
//!
//! A host with a `Host` limit opens a connection only with a lease: the
//! host asks for one (one request in flight per host), and the answer
//! comes back as a message; a refusal (the cluster has the host's limit)
//! looks again after [`REFUSED_RETRY`]. The lease lives in the
//! connection's record, so forgetting the connection gives it back.
//! Throttles take tokens from the cluster's bucket in small grants; the
//! domains that wait for a grant are offered again when it comes.
//!
//! While Redis is out of reach the node keeps to its share of each limit
//! (the limit divided by the live nodes last seen), with leases counted
//! locally, and local buckets at that share of each throttle.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use postern_cluster::{Grant, Lease, Signal, Tokens};
use postern_conf::{ReplyClass, Throttle};

use super::{Action, Core, Scheduler};
use crate::ids::{DomainId, HostId};
use crate::throttle::Bucket;

/// How long a host refused a lease waits before asking again.
const REFUSED_RETRY: Duration = Duration::from_millis(250);

/// A host's lease requests.
#[derive(Debug, Default)]
pub(crate) struct HostLeases {
    /// A request is in flight.
    asking: bool,
    /// A lease granted and not yet used.
    spare: Option<Lease>,
}

/// The local side of a cluster-wide throttle bucket.
#[derive(Debug, Default)]
pub(super) struct SharedBucket {
    /// Tokens granted and not yet spent.
    tokens: u32,
    /// A request is in flight.
    asking: bool,
    /// Domains that wait for the grant.
    waiters: Vec<DomainId>,
}

/// Whether a connection may open now, as far as the cluster goes.
pub(super) enum Slot {
    /// Yes; with the lease it holds, if its host needs one.
    Free(Option<Lease>),
    /// A lease was asked for, or is refused for now.
    Wait,
}

impl Core {
    /// Below the host's share of its limit while Redis is out of reach
    /// (always true when the limits are shared or there is no cluster).
    pub(super) fn within_share(&self, h: HostId) -> bool {
        let (Some(cluster), Some(host)) = (&self.cluster, self.host(h)) else {
            return true;
        };
        match host.limit {
            Some(limit) if !cluster.is_shared() => host.open.get() < cluster.share(limit),
            _ => true,
        }
    }

    /// More connections open than this node's share: while Redis is out
    /// of reach (the node lost Redis with more than its share open), or
    /// while another node waits for a lease at the host (so that one node
    /// cannot keep a host's whole limit for as long as it has mail). A
    /// connection that finishes its transaction then closes.
    pub(super) fn over_share(&self, h: HostId) -> bool {
        let (Some(cluster), Some(host)) = (&self.cluster, self.host(h)) else {
            return false;
        };
        match host.limit {
            Some(limit) if !cluster.is_shared() => host.open.get() > cluster.share(limit),
            Some(limit) if cluster.contended(&host.cluster_key) => {
                host.open.get() > cluster.fair_share(limit)
            }
            _ => false,
        }
    }

    /// The cluster's word on one more connection to the host.
    pub(super) fn cluster_slot(&mut self, h: HostId) -> Slot {
        let Some(cluster) = self.cluster.clone() else {
            return Slot::Free(None);
        };
        let Some(host) = self.host_mut(h) else {
            return Slot::Wait;
        };
        if host.limit.is_none() {
            return Slot::Free(None);
        }
        if let Some(lease) = host.leases.spare.take() {
            return Slot::Free(Some(lease));
        }
        if !cluster.is_shared() {
            return Slot::Free(Some(cluster.local(&host.cluster_key)));
        }
        if !host.leases.asking {
            host.leases.asking = true;
            self.actions.push(Action::Lease(h));
        }
        Slot::Wait
    }

    /// A lease request was answered: a granted lease is used by the
    /// host's next connection, or given back at once.
    fn leased(&mut self, h: HostId, grant: Grant) {
        let now = Instant::now();
        let Some(host) = self.host_mut(h) else {
            return;
        };
        host.leases.asking = false;
        match grant {
            Grant::Granted(lease) => {
                host.leases.spare = Some(lease);
                self.dispatch(h, now);
                if let Some(host) = self.host_mut(h) {
                    host.leases.spare = None;
                }
            }
            Grant::Refused => self.retry_host(h, now + REFUSED_RETRY),
        }
    }

    /// Takes a token from a cluster-wide bucket: `Ok(true)` when one was
    /// there, `Ok(false)` when the domain waits for a grant. `Err` with
    /// the throttle to apply locally when there is no cluster (the whole
    /// throttle) or Redis is out of reach (this node's share).
    pub(super) fn shared_token(
        &mut self,
        d: DomainId,
        name: &Arc<str>,
        throttle: Throttle,
    ) -> Result<bool, Throttle> {
        let Some(cluster) = &self.cluster else {
            return Err(throttle);
        };
        if !cluster.is_shared() {
            let nodes = u32::try_from(cluster.nodes()).unwrap_or(u32::MAX);
            return Err(Throttle {
                count: (throttle.count / nodes).max(1),
                per_secs: throttle.per_secs,
            });
        }
        let bucket = self.shared_buckets.entry(name.clone()).or_default();
        if bucket.tokens > 0 {
            bucket.tokens -= 1;
            return Ok(true);
        }
        if !bucket.waiters.contains(&d) {
            bucket.waiters.push(d);
        }
        if !bucket.asking {
            bucket.asking = true;
            self.actions.push(Action::Tokens(name.clone(), throttle));
        }
        Ok(false)
    }

    /// A token request was answered: the waiting domains are offered
    /// again (now, or when the next token comes).
    fn granted_tokens(&mut self, name: &str, tokens: Tokens) {
        let Some(bucket) = self.shared_buckets.get_mut(name) else {
            return;
        };
        bucket.asking = false;
        let waiters = std::mem::take(&mut bucket.waiters);
        match tokens {
            Tokens::Got(n) => bucket.tokens += n,
            Tokens::Wait(wait) => {
                let at = Instant::now() + wait;
                for d in waiters {
                    self.throttle_wake(d, at);
                }
                return;
            }
            Tokens::Unavailable => {}
        }
        for d in waiters {
            self.offer(d);
        }
    }

    /// The local bucket of a throttle (the whole of it, or this node's
    /// share while Redis is out of reach).
    pub(super) fn local_bucket(
        &mut self,
        name: Arc<str>,
        throttle: Throttle,
        now: Instant,
    ) -> &mut Bucket {
        let key = (name, throttle.count);
        self.buckets
            .entry(key)
            .or_insert_with(|| Bucket::new(throttle, now))
    }
}

impl Core {
    /// Another node's loop slowed a host down: every host of this node
    /// with that cluster name does the same. Signals are rare (a few per
    /// refusal episode), so the hosts are looked through.
    fn remote_signal(&mut self, signal: Signal) {
        let Some(class) = ReplyClass::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == signal.class)
        else {
            return;
        };
        let next = self.next_conn;
        let why = format!("node {}: {}", signal.node, signal.reply);
        let matching: Vec<HostId> = (0..self.hosts.len())
            .filter_map(|i| u32::try_from(i).ok().map(HostId))
            .filter(|h| self.host(*h).is_some_and(|x| x.cluster_key == signal.host))
            .collect();
        for h in matching {
            let Some(host) = self.host_mut(h) else {
                continue;
            };
            host.remote_signal(class, why.clone(), next);
            if let Some(until) = host.paused_until() {
                self.retry_host(h, until);
            }
            let kind = class.as_str();
            metrics::counter!(postern_metrics::ADAPTIVE_ADJUSTMENTS, "reason" => kind).increment(1);
        }
    }
}

/// Tokens asked of the cluster at once: about 100 ms of the throttle's
/// rate, at least 1, so that a slow throttle is never over-granted to one
/// node and a fast one costs few calls.
fn grant_size(throttle: Throttle) -> u32 {
    let per_second = throttle.count / throttle.per_secs.max(1);
    (per_second / 10).clamp(1, 100)
}

/// A lease request's answer.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Leased(HostId, Grant);

/// A token request's answer.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct TokensGranted(Arc<str>, Tokens);

impl Scheduler {
    /// Asks the cluster for a lease at the host.
    pub(super) fn ask_lease(&mut self, h: HostId, ctx: &mut Context<Self>) {
        let (Some(cluster), Some(host)) = (&self.core.cluster, self.core.host(h)) else {
            return;
        };
        let limit = host.limit_now().unwrap_or(usize::MAX);
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        let me = ctx.address();
        cluster.acquire(&host.cluster_key, limit, move |grant| {
            me.do_send(Leased(h, grant))
        });
    }

    /// Asks the cluster for tokens of a throttle.
    pub(super) fn ask_tokens(
        &mut self,
        name: Arc<str>,
        throttle: Throttle,
        ctx: &mut Context<Self>,
    ) {
        let Some(cluster) = &self.core.cluster else {
            return;
        };
        let me = ctx.address();
        let want = grant_size(throttle);
        cluster.take(
            &name.clone(),
            (throttle.count, throttle.per_secs),
            want,
            move |tokens| me.do_send(TokensGranted(name, tokens)),
        );
    }
}

/// Another node's slow-down signal.
#[derive(Message)]
#[rtype(result = "()")]
struct RemoteSignal(Signal);

impl Scheduler {
    /// Other nodes' signals come to this actor.
    pub(super) fn listen_to_cluster(&mut self, ctx: &mut Context<Self>) {
        if let Some(cluster) = &self.core.cluster {
            let me = ctx.address();
            cluster.on_signal(move |signal| me.do_send(RemoteSignal(signal)));
        }
    }

    /// Tells the other nodes that this host's loop slowed it down.
    pub(super) fn publish(&mut self, h: HostId, class: ReplyClass, reply: &str) {
        if let (Some(cluster), Some(host)) = (&self.core.cluster, self.core.host(h)) {
            cluster.publish(&host.cluster_key, class.as_str(), reply);
        }
    }
}

impl Handler<RemoteSignal> for Scheduler {
    type Result = ();

    fn handle(&mut self, RemoteSignal(signal): RemoteSignal, ctx: &mut Context<Self>) {
        self.core.remote_signal(signal);
        self.sync(ctx);
    }
}

impl Handler<Leased> for Scheduler {
    type Result = ();

    fn handle(&mut self, Leased(h, grant): Leased, ctx: &mut Context<Self>) {
        self.core.leased(h, grant);
        self.sync(ctx);
    }
}

impl Handler<TokensGranted> for Scheduler {
    type Result = ();

    fn handle(&mut self, TokensGranted(name, tokens): TokensGranted, ctx: &mut Context<Self>) {
        self.core.granted_tokens(&name, tokens);
        self.sync(ctx);
    }
}

/// Shared buckets by throttle name.
pub(super) type SharedBuckets = HashMap<Arc<str>, SharedBucket>;
