//! What the engine shows of itself: one queue with its routing table and
//! hosts, and a summary.

use std::net::SocketAddr;
use std::time::Instant;

use actix::prelude::*;

use super::{Core, Scheduler};
use crate::domain::QueueKey;
use crate::mx_host::MxHost;

/// One host of a queue's routing table.
#[derive(Debug, Clone, PartialEq)]
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
    /// The limit in force now: the adaptive loop's, at most `limit`.
    pub limit_now: Option<u64>,
    /// The message rate in force (per second), when the loop limits it.
    pub rate_now: Option<f64>,
    /// The last reply that made the loop change the limit or the rate:
    /// its class and text.
    pub last_change: Option<(String, String)>,
    /// Seconds since that change.
    pub seconds_since_change: Option<u64>,
    /// Seconds until the loop tries above the point where the host last
    /// refused, when it waits for that.
    pub next_probe_seconds: Option<u64>,
    /// False while it is skipped after a failure.
    pub reachable: bool,
    /// Failures since its last success.
    pub consecutive_failures: u32,
    /// Seconds since it last failed.
    pub seconds_since_failure: Option<u64>,
}

/// One destination host, over all queues.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSummary {
    /// Its name.
    pub name: String,
    /// Its address and port.
    pub addr: SocketAddr,
    /// Where its connections come from: the `Bind_Address`, or the binding.
    pub source: String,
    /// Connections open or opening.
    pub connections: usize,
    /// Its `Host` limit.
    pub limit: Option<u64>,
    /// The limit in force (the adaptive loop's).
    pub limit_now: Option<u64>,
    /// The message rate in force, per second, when limited.
    pub rate_now: Option<f64>,
    /// The last reply that changed the limit or rate: class and text.
    pub last_change: Option<(String, String)>,
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
    /// Ready entries left in the spool (`Max_Queued_In_Memory`).
    pub spooled: usize,
    /// Connections open or opening.
    pub connections: usize,
    /// Held by suspend.
    pub suspended: bool,
}

/// One queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueView {
    /// Ready batches.
    pub active: usize,
    /// Batches waiting for their retry time.
    pub delayed: usize,
    /// Ready entries left in the spool (`Max_Queued_In_Memory`).
    pub spooled: usize,
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
#[derive(Debug, Clone, PartialEq)]
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
    /// Ready entries left in the spool, over all queues.
    pub spooled: usize,
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

fn limit(l: Option<usize>) -> Option<u64> {
    l.map(|l| u64::try_from(l).unwrap_or(u64::MAX))
}

fn last_change(h: &MxHost) -> Option<(String, String)> {
    let c = h.adaptive.last_change.as_ref()?;
    let class = c.class.map_or("success", |k| k.as_str()).to_owned();
    Some((class, c.reply.clone()))
}

fn host_view(level: u32, h: &MxHost, now: Instant) -> HostView {
    HostView {
        rate_now: h.adaptive.rate(),
        last_change: last_change(h),
        seconds_since_change: h
            .adaptive
            .last_change
            .as_ref()
            .map(|c| now.saturating_duration_since(c.at).as_secs()),
        next_probe_seconds: h
            .adaptive
            .next_probe()
            .map(|t| t.saturating_duration_since(now).as_secs()),
        level,
        name: h.name().to_owned(),
        addr: h.key.addr,
        connections: h.open.get(),
        limit: limit(h.limit),
        limit_now: limit(h.limit_now()),
        reachable: h.reachable(),
        consecutive_failures: h.consecutive_failures,
        seconds_since_failure: h
            .last_failure
            .map(|t| now.saturating_duration_since(t).as_secs()),
    }
}

impl Core {
    fn queue_view(&self, key: &QueueKey) -> Option<QueueView> {
        let now = Instant::now();
        let dom = self.domain(self.find_domain(&key.binding, &key.domain)?)?;
        let hosts = dom
            .levels
            .iter()
            .filter_map(|(level, h)| Some(host_view(*level, self.host(*h)?, now)))
            .collect();
        Some(QueueView {
            active: dom.active.len(),
            delayed: dom.delayed.len(),
            spooled: dom.active.spooled(),
            connections: dom.connections(),
            limit: dom.limits.max_connections,
            consecutive_failures: dom.consecutive_failures,
            suspended: dom.suspended,
            next_retry_seconds: dom
                .delayed
                .keys()
                .next()
                .map(|(at, _)| at.saturating_duration_since(now).as_secs()),
            hosts,
        })
    }

    fn summary(&self) -> Summary {
        Summary {
            connections: self.total.get(),
            open_per_loop: self.loop_open.iter().map(|g| g.get()).collect(),
            opened_per_loop: self.loop_opened.clone(),
            queues: self.domains.len(),
            active: self.domains.iter().map(|d| d.active.len()).sum(),
            delayed: self.domains.iter().map(|d| d.delayed.len()).sum(),
            spooled: self.domains.iter().map(|d| d.active.spooled()).sum(),
            hosts: self
                .hosts
                .iter()
                .map(|h| HostSummary {
                    name: h.name().to_owned(),
                    addr: h.key.addr,
                    source: h.key.source.to_string(),
                    connections: h.open.get(),
                    limit: limit(h.limit),
                    limit_now: limit(h.limit_now()),
                    rate_now: h.adaptive.rate(),
                    last_change: last_change(h),
                    reachable: h.reachable(),
                })
                .collect(),
        }
    }

    fn queue_rows(&self, n: usize) -> Vec<QueueRow> {
        let mut rows: Vec<QueueRow> = self
            .domains
            .iter()
            .map(|d| QueueRow {
                binding: d.key.binding.to_string(),
                domain: d.key.domain.to_string(),
                active: d.active.len(),
                delayed: d.delayed.len(),
                spooled: d.active.spooled(),
                connections: d.connections(),
                suspended: d.suspended,
            })
            .collect();
        rows.sort_by(|a, b| {
            (b.active + b.delayed + b.spooled, b.connections)
                .cmp(&(a.active + a.delayed + a.spooled, a.connections))
                .then_with(|| (&a.binding, &a.domain).cmp(&(&b.binding, &b.domain)))
        });
        rows.truncate(n);
        rows
    }
}

impl Handler<QueryQueue> for Scheduler {
    type Result = Option<QueueView>;

    fn handle(&mut self, QueryQueue(key): QueryQueue, _: &mut Context<Self>) -> Option<QueueView> {
        self.core.queue_view(&key)
    }
}

impl Handler<QuerySummary> for Scheduler {
    type Result = MessageResult<QuerySummary>;

    fn handle(&mut self, _: QuerySummary, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.summary())
    }
}

impl Handler<QueryQueues> for Scheduler {
    type Result = MessageResult<QueryQueues>;

    fn handle(&mut self, QueryQueues(n): QueryQueues, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.queue_rows(n))
    }
}
