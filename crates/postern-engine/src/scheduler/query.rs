//! What the engine shows of itself: one queue with its routing table and
//! hosts, and a summary.

use std::net::SocketAddr;
use std::time::Instant;

use actix::prelude::*;

use super::Scheduler;
use crate::queue::QueueKey;

/// One host of a queue's routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    /// Its preference level.
    pub level: u32,
    /// Its name.
    pub name: String,
    /// Its address and port.
    pub addr: SocketAddr,
    /// Connections open or opening to it, over all queues.
    pub connections: usize,
    /// Its `Host` limit.
    pub limit: Option<u64>,
    /// False while it is skipped after a failure.
    pub reachable: bool,
    /// Failures since its last success.
    pub consecutive_failures: u32,
    /// Seconds since it last failed.
    pub seconds_since_failure: Option<u64>,
}

/// One destination host, over all queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSummary {
    /// Its name.
    pub name: String,
    /// Its address and port.
    pub addr: SocketAddr,
    /// Connections open or opening.
    pub connections: usize,
    /// Its `Host` limit.
    pub limit: Option<u64>,
    /// False while it is skipped after a failure.
    pub reachable: bool,
}

/// A queue in the list of queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRow {
    /// The binding.
    pub binding: String,
    /// The domain.
    pub domain: String,
    /// Ready batches.
    pub active: usize,
    /// Delayed batches.
    pub delayed: usize,
    /// Connections open or opening.
    pub connections: usize,
    /// Held by suspend.
    pub suspended: bool,
}

/// One queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueView {
    /// Ready batches.
    pub active: usize,
    /// Batches waiting for their retry time.
    pub delayed: usize,
    /// Connections open or opening.
    pub connections: usize,
    /// `Max_Outbound_Connections`.
    pub limit: usize,
    /// Connection failures in a row.
    pub consecutive_failures: u32,
    /// Held by suspend.
    pub suspended: bool,
    /// Seconds until the next delayed batch is retried.
    pub next_retry_seconds: Option<u64>,
    /// The routing table's hosts, best level first (empty until built).
    pub hosts: Vec<HostView>,
}

/// The whole engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Connections open or opening.
    pub connections: usize,
    /// Connections open on each delivery event loop.
    pub open_per_loop: Vec<usize>,
    /// Connections opened on each delivery event loop since start.
    pub opened_per_loop: Vec<u64>,
    /// Queues known.
    pub queues: usize,
    /// Ready batches over all queues.
    pub active: usize,
    /// Delayed batches over all queues.
    pub delayed: usize,
    /// Every destination host known.
    pub hosts: Vec<HostSummary>,
}

/// Asks for one queue.
#[derive(Message)]
#[rtype(result = "Option<QueueView>")]
pub(crate) struct QueryQueue(pub(crate) QueueKey);

/// Asks for the queues with the most mail.
#[derive(Message)]
#[rtype(result = "Vec<QueueRow>")]
pub(crate) struct QueryQueues(pub(crate) usize);

/// Asks for the summary.
#[derive(Message)]
#[rtype(result = "Summary")]
pub(crate) struct QuerySummary;

impl Handler<QueryQueue> for Scheduler {
    type Result = Option<QueueView>;

    fn handle(&mut self, QueryQueue(key): QueryQueue, _: &mut Context<Self>) -> Option<QueueView> {
        let now = Instant::now();
        let queue = self.queues.get(&key)?;
        let hosts = queue
            .levels
            .iter()
            .flat_map(|(level, addrs)| addrs.iter().map(move |a| (*level, *a)))
            .filter_map(|(level, addr)| {
                let h = self.hosts.get(&addr)?;
                Some(HostView {
                    level,
                    name: h.name.clone(),
                    addr,
                    connections: h.connections,
                    limit: h.limit,
                    reachable: h.reachable(now),
                    consecutive_failures: h.consecutive_failures,
                    seconds_since_failure: h
                        .last_failure
                        .map(|t| now.saturating_duration_since(t).as_secs()),
                })
            })
            .collect();
        Some(QueueView {
            active: queue.active.len(),
            delayed: queue.delayed.len(),
            connections: queue.connections,
            limit: queue.limits.max_connections,
            consecutive_failures: queue.consecutive_failures,
            suspended: queue.suspended,
            next_retry_seconds: queue
                .delayed
                .keys()
                .next()
                .map(|(at, _)| at.saturating_duration_since(now).as_secs()),
            hosts,
        })
    }
}

impl Handler<QuerySummary> for Scheduler {
    type Result = MessageResult<QuerySummary>;

    fn handle(&mut self, _: QuerySummary, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Summary {
            connections: self.total,
            open_per_loop: self.loop_open.clone(),
            opened_per_loop: self.loop_opened.clone(),
            queues: self.queues.len(),
            active: self.queues.values().map(|q| q.active.len()).sum(),
            delayed: self.queues.values().map(|q| q.delayed.len()).sum(),
            hosts: self
                .hosts
                .iter()
                .map(|(addr, h)| HostSummary {
                    name: h.name.clone(),
                    addr: *addr,
                    connections: h.connections,
                    limit: h.limit,
                    reachable: h.reachable(Instant::now()),
                })
                .collect(),
        })
    }
}

impl Handler<QueryQueues> for Scheduler {
    type Result = MessageResult<QueryQueues>;

    fn handle(&mut self, QueryQueues(limit): QueryQueues, _: &mut Context<Self>) -> Self::Result {
        let mut rows: Vec<QueueRow> = self
            .queues
            .iter()
            .map(|(k, q)| QueueRow {
                binding: k.binding.clone(),
                domain: k.domain.clone(),
                active: q.active.len(),
                delayed: q.delayed.len(),
                connections: q.connections,
                suspended: q.suspended,
            })
            .collect();
        rows.sort_by(|a, b| {
            (b.active + b.delayed, b.connections)
                .cmp(&(a.active + a.delayed, a.connections))
                .then_with(|| (&a.binding, &a.domain).cmp(&(&b.binding, &b.domain)))
        });
        rows.truncate(limit);
        MessageResult(rows)
    }
}
