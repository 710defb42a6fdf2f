//! After an attempt: reports, retries on a schedule (`Retry_Interval`
//! doubling up to `Max_Retry_Interval`), the end of retrying
//! (`Max_Retries`, `Message_Expiration`: 554 5.4.7), and one bounce per
//! message and attempt round.
//!
//! An attempt round is every batch of one message that is ready with the
//! same number of attempts behind it. A batch enters its round when it
//! becomes ready, and settles it when its attempt is over (delivered,
//! failed, or delayed). When the last batch settles, the round's permanent
//! failures become one bounce.

use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use postern_smtp::Reply;
use postern_smtp::client::Outcome;

use super::Scheduler;
use super::timers::Timer;
use crate::bounce::{self, FailedRecipient};
use crate::message::{Batch, HostInfo, Report};
use crate::queue::QueueKey;

/// The permanent failures of one round so far, and the batches still out.
#[derive(Debug, Default)]
pub(super) struct Round {
    pending: usize,
    failed: Vec<FailedRecipient>,
}

/// A round's name: the message and the attempts made before it.
pub(super) type RoundKey = (QueueKey, u64, u32);

fn round_key(key: &QueueKey, batch: &Batch) -> RoundKey {
    (key.clone(), batch.message.id, batch.attempts)
}

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

    /// A batch becomes ready: it joins its message's round.
    pub(super) fn enter(&mut self, key: &QueueKey, batch: &Batch) {
        self.rounds
            .entry(round_key(key, batch))
            .or_default()
            .pending += 1;
    }

    /// A batch's attempt is over, with these permanent failures; the last
    /// batch of a round sends the round's bounce.
    pub(super) fn settle(&mut self, key: &QueueKey, batch: &Batch, failed: Vec<FailedRecipient>) {
        let rk = round_key(key, batch);
        let round = self.rounds.entry(rk.clone()).or_default();
        round.pending = round.pending.saturating_sub(1);
        round.failed.extend(failed);
        if round.pending > 0 {
            return;
        }
        let Some(round) = self.rounds.remove(&rk) else {
            return;
        };
        let wanted = self.queues.get(key).is_some_and(|q| q.limits.bounces);
        if wanted && let Some(b) = bounce::build(&batch.message, &round.failed, &self.hostname) {
            let _ = self.bounces.send(b);
        }
    }

    /// Reports recipients as failed for good.
    pub(super) fn fail(
        &self,
        key: &QueueKey,
        batch: &Batch,
        recipients: &[String],
        reply: &Reply,
        host: Option<&HostInfo>,
    ) -> Vec<FailedRecipient> {
        recipients
            .iter()
            .map(|r| {
                self.report(
                    key,
                    batch,
                    r,
                    Outcome::Permanent(reply.clone()),
                    host.cloned(),
                );
                FailedRecipient {
                    recipient: r.clone(),
                    reply: reply.clone(),
                    host: host.cloned(),
                }
            })
            .collect()
    }

    /// When the message expires.
    fn expires(&self, key: &QueueKey, batch: &Batch) -> Instant {
        let expiration = self
            .queues
            .get(key)
            .map_or(Duration::ZERO, |q| q.limits.expiration);
        let age = SystemTime::now()
            .duration_since(batch.message.received)
            .unwrap_or_default();
        Instant::now() + expiration.saturating_sub(age)
    }

    /// Why retrying is over for a batch with `made` attempts, if it is.
    fn exhausted(&self, key: &QueueKey, batch: &Batch, made: u32, last: &Reply) -> Option<Reply> {
        let limits = &self.queues.get(key)?.limits;
        if limits.max_retries.is_some_and(|max| made > max) {
            return Some(Reply::with_status(
                554,
                (5, 4, 7),
                format!("delivery attempts exhausted after {made} attempts; last: {last}"),
            ));
        }
        if self.expires(key, batch) <= Instant::now() {
            return Some(expired(limits.expiration, last));
        }
        None
    }

    /// The attempt of `batch` (its recipients that failed for now) failed
    /// with `reply`: retry at `at` (by default after the backoff), or fail
    /// for good when retrying is over. Returns the recipients failed for
    /// good.
    pub(super) fn transient(
        &mut self,
        key: &QueueKey,
        batch: Batch,
        reply: &Reply,
        host: Option<HostInfo>,
        at: Option<Instant>,
        ctx: &mut Context<Self>,
    ) -> Vec<FailedRecipient> {
        for r in &batch.recipients {
            self.report(
                key,
                &batch,
                r,
                Outcome::Transient(reply.clone()),
                host.clone(),
            );
        }
        let made = batch.attempts + 1;
        if let Some(end) = self.exhausted(key, &batch, made, reply) {
            return self.fail(key, &batch, &batch.recipients, &end, host.as_ref());
        }
        let again = Batch {
            attempts: made,
            last: Some((reply.clone(), host)),
            ..batch
        };
        let backoff = self
            .queues
            .get(key)
            .map_or(Duration::ZERO, |q| q.limits.backoff(made));
        let at = at
            .unwrap_or_else(|| Instant::now() + backoff)
            .min(self.expires(key, &again));
        self.delay(key, again, at, ctx);
        Vec::new()
    }

    /// Fails the attempt of every ready batch with `reply` (no host could
    /// take it); each is retried or failed as [`transient`](Self::transient) says.
    pub(super) fn delay_active(&mut self, key: &QueueKey, reply: &Reply, ctx: &mut Context<Self>) {
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        let batches: Vec<Batch> = queue.active.drain(..).collect();
        for batch in batches {
            let failed = self.transient(key, batch.clone(), reply, None, None, ctx);
            self.settle(key, &batch, failed);
        }
    }

    /// Puts a batch in the delayed queue until `at`.
    pub(super) fn delay(
        &mut self,
        key: &QueueKey,
        batch: Batch,
        at: Instant,
        ctx: &mut Context<Self>,
    ) {
        self.sequence += 1;
        let sequence = self.sequence;
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        queue.delayed.insert((at, sequence), batch);
        self.schedule_wake(key, ctx);
    }

    /// Sets the queue's wake-up for its earliest delayed batch.
    pub(super) fn schedule_wake(&mut self, key: &QueueKey, ctx: &mut Context<Self>) {
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        let Some(&(first, _)) = queue.delayed.keys().next() else {
            return;
        };
        if queue.wake.is_some_and(|at| at <= first) {
            return;
        }
        queue.wake = Some(first);
        self.at(first, Timer::Wake(key.clone()), ctx);
    }

    /// Delayed batches whose time has come are ready again, or fail as
    /// expired.
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
        let expiration = queue.limits.expiration;
        for batch in due.into_values() {
            self.enter(key, &batch);
            if self.expires(key, &batch) <= now {
                let (last, host) = batch.last.clone().unwrap_or_else(|| {
                    (
                        Reply::with_status(451, (4, 4, 7), "not delivered in time"),
                        None,
                    )
                });
                let failed = self.fail(
                    key,
                    &batch,
                    &batch.recipients,
                    &expired(expiration, &last),
                    host.as_ref(),
                );
                self.settle(key, &batch, failed);
            } else if let Some(q) = self.queues.get_mut(key) {
                q.active.push_back(batch);
            }
        }
        self.schedule_wake(key, ctx);
        self.pump(key, ctx);
    }

    /// Moves every delayed batch of the queue to the ready queue now.
    pub(super) fn flush(&mut self, key: &QueueKey, ctx: &mut Context<Self>) {
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        let all = std::mem::take(&mut queue.delayed);
        queue.wake = None;
        for batch in all.into_values() {
            self.enter(key, &batch);
            if let Some(q) = self.queues.get_mut(key) {
                q.active.push_back(batch);
            }
        }
        self.pump(key, ctx);
    }
}

fn expired(expiration: Duration, last: &Reply) -> Reply {
    Reply::with_status(
        554,
        (5, 4, 7),
        format!(
            "message expired after {} s in the queue; last: {last}",
            expiration.as_secs()
        ),
    )
}
