//! Outcomes: reports, the delayed queue and its timers, host failures.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix::prelude::*;
use postern_smtp::Reply;
use postern_smtp::client::Outcome;

use super::Scheduler;
use crate::connection::{Done, End, Ended};
use crate::message::{Batch, HostInfo, Report};
use crate::queue::QueueKey;

impl Scheduler {
    pub(super) fn report(
        &self,
        key: &QueueKey,
        batch: &Batch,
        recipient: &str,
        outcome: Outcome,
        host: Option<HostInfo>,
    ) {
        let _ = self.reports.send(Report {
            id: batch.message.id,
            binding: key.binding.clone(),
            domain: key.domain.clone(),
            recipient: recipient.to_owned(),
            outcome,
            host,
            attempt: batch.attempts + 1,
        });
    }

    /// Moves the ready mail to the delayed queue, reporting `reply` as a
    /// transient outcome: until `at`, or each batch by its backoff.
    pub(super) fn delay_active(
        &mut self,
        key: &QueueKey,
        at: Option<Instant>,
        reply: &Reply,
        ctx: &mut Context<Self>,
    ) {
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        let batches: Vec<Batch> = queue.active.drain(..).collect();
        for batch in batches {
            for r in &batch.recipients {
                self.report(key, &batch, r, Outcome::Transient(reply.clone()), None);
            }
            self.delay(key, batch, at, ctx);
        }
    }

    /// Puts a batch whose attempt failed in the delayed queue.
    pub(super) fn delay(
        &mut self,
        key: &QueueKey,
        mut batch: Batch,
        at: Option<Instant>,
        ctx: &mut Context<Self>,
    ) {
        batch.attempts += 1;
        self.sequence += 1;
        let sequence = self.sequence;
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        let at = at.unwrap_or_else(|| Instant::now() + queue.limits.backoff(batch.attempts));
        queue.delayed.insert((at, sequence), batch);
        self.schedule_wake(key, ctx);
    }

    /// Keeps one timer per queue, set for its earliest delayed batch.
    pub(super) fn schedule_wake(&mut self, key: &QueueKey, ctx: &mut Context<Self>) {
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        let Some(&(first, _)) = queue.delayed.keys().next() else {
            return;
        };
        if let Some((at, handle)) = queue.wake.take() {
            if at <= first {
                queue.wake = Some((at, handle));
                return;
            }
            ctx.cancel_future(handle);
        }
        let k = key.clone();
        let wait = first.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(wait, move |act, ctx| act.wake(&k, ctx));
        if let Some(queue) = self.queues.get_mut(key) {
            queue.wake = Some((first, handle));
        }
    }

    pub(super) fn wake(&mut self, key: &QueueKey, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        queue.wake = None;
        let later = queue
            .delayed
            .split_off(&(now + Duration::from_millis(1), 0));
        let due = std::mem::replace(&mut queue.delayed, later);
        queue.active.extend(due.into_values());
        self.schedule_wake(key, ctx);
        self.pump(key, ctx);
    }

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
        ctx.run_later(retry, |act, ctx| act.pump_waiting(ctx));
        if give_up {
            if let Some(queue) = self.queues.get_mut(key) {
                queue.consecutive_failures = 0;
            }
            let why = Reply::with_status(
                421,
                (4, 4, 0),
                format!("{threshold} connection failures in a row; last: {reply}"),
            );
            self.delay_active(key, Some(now + retry), &why, ctx);
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
        let mut retry = Vec::new();
        for (recipient, outcome) in batch.recipients.iter().zip(msg.outcomes) {
            if matches!(outcome, Outcome::Transient(_)) {
                retry.push(recipient.clone());
            }
            self.report(&key, &batch, recipient, outcome, host.clone());
        }
        if !retry.is_empty() {
            let again = Batch {
                message: batch.message.clone(),
                recipients: retry,
                attempts: batch.attempts,
            };
            self.delay(&key, again, None, ctx);
        }
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
        match msg.end {
            End::Closed => {}
            End::Failed(reply) => self.host_failed(&key, info.host, reply, ctx),
            End::Broken(mut batch, reply) => {
                let host = Some(HostInfo {
                    name: info.name.clone(),
                    addr: info.host,
                });
                for r in &batch.recipients {
                    self.report(
                        &key,
                        &batch,
                        r,
                        Outcome::Transient(reply.clone()),
                        host.clone(),
                    );
                }
                batch.attempts += 1;
                if let Some(q) = self.queues.get_mut(&key) {
                    q.active.push_front(batch);
                }
                self.host_failed(&key, info.host, reply, ctx);
            }
        }
        self.pump(&key, ctx);
        for key in std::mem::take(&mut self.starved) {
            self.pump(&key, ctx);
        }
    }
}
