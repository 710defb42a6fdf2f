//! Outcomes of connections and transactions, and host failures.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix::prelude::*;
use postern_smtp::Reply;
use postern_smtp::client::Outcome;

use super::Scheduler;
use super::timers::Timer;
use crate::connection::{Done, End, Ended};
use crate::message::{Batch, HostInfo};
use crate::queue::QueueKey;

impl Scheduler {
    pub(super) fn pump_waiting(&mut self, ctx: &mut Context<Self>) {
        let keys: Vec<QueueKey> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.active.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.pump(&key, ctx);
        }
    }

    /// A connection to `addr` failed: the host is skipped for
    /// `Host_Failure_Retry`, and after `MX_Failures_To_Delay` failures in a
    /// row the queue's ready mail waits.
    pub(super) fn host_failed(
        &mut self,
        key: &QueueKey,
        addr: SocketAddr,
        reply: Reply,
        ctx: &mut Context<Self>,
    ) {
        let now = Instant::now();
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        let retry = queue.limits.host_failure_retry;
        let threshold = queue.limits.failures_to_delay;
        queue.consecutive_failures += 1;
        let give_up = queue.consecutive_failures >= queue.limits.failures_to_delay;
        queue.last_failure = Some(reply.clone());
        if let Some(h) = self.hosts.get_mut(&addr) {
            h.down_until = Some(now + retry);
            h.consecutive_failures += 1;
            h.last_failure = Some(now);
        }
        self.at(now + retry, Timer::HostsBack, ctx);
        if give_up {
            if let Some(queue) = self.queues.get_mut(key) {
                queue.consecutive_failures = 0;
            }
            let why = Reply::with_status(
                421,
                (4, 4, 0),
                format!("{threshold} connection failures in a row; last: {reply}"),
            );
            self.delay_active(key, &why, ctx);
        }
    }
}

impl Handler<Done> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: Done, ctx: &mut Context<Self>) {
        let Some(info) = self.conns.get_mut(&msg.id) else {
            return;
        };
        info.busy = false;
        let key = info.queue.clone();
        let host = Some(HostInfo {
            name: info.name.clone(),
            addr: info.host,
        });
        if let Some(q) = self.queues.get_mut(&key) {
            q.busy = q.busy.saturating_sub(1);
        }
        let batch = msg.batch;
        let mut failed = Vec::new();
        // Recipients that failed for now, grouped by reply, retry together.
        let mut later: Vec<(Reply, Vec<String>)> = Vec::new();
        for (recipient, outcome) in batch.recipients.iter().zip(msg.outcomes) {
            match outcome {
                Outcome::Delivered(_) => {
                    self.report(&key, &batch, recipient, outcome, host.clone())
                }
                Outcome::Permanent(reply) => {
                    let r = std::slice::from_ref(recipient);
                    failed.extend(self.fail(&key, &batch, r, &reply, host.as_ref()));
                }
                Outcome::Transient(reply) => match later.iter_mut().find(|(r, _)| *r == reply) {
                    Some((_, list)) => list.push(recipient.clone()),
                    None => later.push((reply, vec![recipient.clone()])),
                },
            }
        }
        for (reply, recipients) in later {
            failed.extend(self.transient(
                &key,
                Batch {
                    recipients,
                    ..batch.clone()
                },
                &reply,
                host.clone(),
                None,
                ctx,
            ));
        }
        self.settle(&key, &batch, failed);
        self.pump(&key, ctx);
    }
}

impl Handler<Ended> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: Ended, ctx: &mut Context<Self>) {
        let Some(info) = self.release(msg.id) else {
            return;
        };
        let key = info.queue.clone();
        if !matches!(msg.end, End::Closed) {
            metrics::counter!(postern_metrics::CONNECTION_FAILURES).increment(1);
        }
        match msg.end {
            End::Closed => {}
            End::Failed(reply) => self.host_failed(&key, info.host, reply, ctx),
            End::Stale(batch) => {
                if let Some(q) = self.queues.get_mut(&key) {
                    q.active.push_front(batch);
                }
            }
            End::Starved => {
                // This machine is out of descriptors or ports: wait for
                // connections to close, and look again in a second.
                self.starved.insert(key.clone());
                self.at(
                    Instant::now() + Duration::from_secs(1),
                    Timer::HostsBack,
                    ctx,
                );
                return;
            }
            End::Broken(batch, reply) => {
                let host = Some(HostInfo {
                    name: info.name.clone(),
                    addr: info.host,
                });
                // Another host may take it at once.
                let now = Some(Instant::now());
                let failed = self.transient(&key, batch.clone(), &reply, host, now, ctx);
                self.settle(&key, &batch, failed);
                self.host_failed(&key, info.host, reply, ctx);
            }
        }
        self.pump(&key, ctx);
        // A closed connection frees one slot: a few starved queues are
        // enough to try (trying them all made each close cost O(queues)).
        let next: Vec<QueueKey> = self.starved.iter().take(4).cloned().collect();
        for key in next {
            self.starved.remove(&key);
            self.pump(&key, ctx);
        }
    }
}
