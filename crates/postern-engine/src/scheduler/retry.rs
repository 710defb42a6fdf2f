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

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use postern_conf::ReplyClass;
use postern_smtp::Reply;
use postern_smtp::client::Outcome;

use super::timers::Timer;
use super::{Action, Core};
use crate::bounce::{FailedRecipient, Settlement};
use crate::ids::DomainId;
use crate::message::{Batch, Failure, HostInfo, Report};

/// The permanent failures of one round so far, and the batches still out.
#[derive(Debug, Default)]
pub(super) struct Round {
    pending: usize,
    failed: Vec<FailedRecipient>,
}

/// A round's name: the message and the attempts made before it.
pub(super) type RoundKey = (DomainId, u64, u32);

fn round_key(batch: &Batch) -> RoundKey {
    (batch.queue, batch.message.id, batch.attempts)
}

impl Core {
    /// One recipient's outcome to the sink; a transient one with the time
    /// of its next attempt.
    pub(super) fn report(
        &mut self,
        batch: &Batch,
        recipient: &str,
        outcome: Outcome,
        host: Option<HostInfo>,
        class: ReplyClass,
        retry_at: Option<SystemTime>,
    ) {
        let which = ReplyClass::ALL.iter().position(|c| *c == class);
        if let Some(counter) = which.and_then(|i| self.replies.get(i)) {
            counter.increment(1);
        }
        let mta_sts = self
            .domain(batch.queue)
            .and_then(|d| d.table.mta_sts().cloned());
        self.outcomes.report(Report {
            id: batch.message.id,
            message: batch.message.clone(),
            recipient: recipient.to_owned(),
            outcome,
            class,
            host,
            attempt: batch.attempts + 1,
            retry_at,
            mta_sts,
        });
    }

    /// A batch becomes ready: it joins its message's round (a message's
    /// only batch is a round by itself).
    pub(super) fn enter(&mut self, batch: &Batch) {
        if !batch.alone {
            self.rounds.entry(round_key(batch)).or_default().pending += 1;
        }
    }

    /// A batch's attempt is over, with these permanent failures; the last
    /// batch of a round sends the round's bounce.
    pub(super) fn settle(&mut self, batch: &Batch, failed: Vec<FailedRecipient>) {
        let d = batch.queue;
        // The batch has left memory (or is delayed): room for spooled mail.
        self.read_back(d);
        let rk = round_key(batch);
        let failed = if batch.alone && !self.rounds.contains_key(&rk) {
            failed
        } else {
            // A part put back unattempted may share an only batch's round.
            let round = self.rounds.entry(rk).or_default();
            if !batch.alone {
                round.pending = round.pending.saturating_sub(1);
            }
            round.failed.extend(failed);
            if round.pending > 0 {
                return;
            }
            match self.rounds.remove(&rk) {
                Some(round) => round.failed,
                None => return,
            }
        };
        if failed.is_empty() {
            return;
        }
        let bounces = self.domain(d).is_some_and(|x| x.limits.bounces);
        self.actions.push(Action::Settle(Settlement {
            entry: batch.message.id,
            message: batch.message.clone(),
            failed,
            wants_bounce: bounces && !batch.message.sender.is_empty(),
            hostname: self.hostname.clone(),
        }));
    }

    /// Reports recipients as failed for good.
    pub(super) fn fail(
        &mut self,
        batch: &Batch,
        recipients: &[String],
        reply: &Reply,
        host: Option<&HostInfo>,
    ) -> Vec<FailedRecipient> {
        let class = self.judge(batch, reply, host).class;
        recipients
            .iter()
            .map(|r| {
                let outcome = Outcome::Permanent(reply.clone());
                self.report(batch, r, outcome, host.cloned(), class, None);
                FailedRecipient {
                    class,
                    recipient: r.clone(),
                    reply: reply.clone(),
                    host: host.cloned(),
                }
            })
            .collect()
    }

    /// When the message expires.
    pub(super) fn expires(&self, batch: &Batch) -> Instant {
        let expiration = self
            .domain(batch.queue)
            .map_or(Duration::ZERO, |x| x.limits.expiration);
        let age = SystemTime::now()
            .duration_since(batch.message.received)
            .unwrap_or_default();
        Instant::now() + expiration.saturating_sub(age)
    }

    /// Why retrying is over for a batch with `made` attempts, if it is.
    fn exhausted(&self, batch: &Batch, made: u32, last: &Reply) -> Option<Reply> {
        let limits = &self.domain(batch.queue)?.limits;
        if limits.max_retries.is_some_and(|max| made > max) {
            return Some(Reply::with_status(
                554,
                (5, 4, 7),
                format!("delivery attempts exhausted after {made} attempts; last: {last}"),
            ));
        }
        if self.expires(batch) <= Instant::now() {
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
        batch: Batch,
        reply: &Reply,
        host: Option<HostInfo>,
        at: Option<Instant>,
    ) -> Vec<FailedRecipient> {
        let class = self.judge(&batch, reply, host.as_ref()).class;
        let made = batch.attempts + 1;
        let end = self.exhausted(&batch, made, reply);
        let at = end.is_none().then(|| {
            let backoff = self
                .domain(batch.queue)
                .map_or(Duration::ZERO, |x| x.limits.backoff(made));
            at.unwrap_or_else(|| Instant::now() + backoff)
                .min(self.expires(&batch))
        });
        let retry_at =
            at.map(|at| SystemTime::now() + at.saturating_duration_since(Instant::now()));
        for r in &batch.recipients {
            let outcome = Outcome::Transient(reply.clone());
            self.report(&batch, r, outcome, host.clone(), class, retry_at);
        }
        let Some(at) = at else {
            let end = end.as_ref().unwrap_or(reply);
            return self.fail(&batch, &batch.recipients, end, host.as_ref());
        };
        let again = Batch {
            attempts: made,
            last: Some(self.shared_failure(reply, host)),
            ..batch
        };
        self.delay(again, at);
        Vec::new()
    }

    /// Fails the attempt of every ready batch with `reply` (no host could
    /// take it); each is retried or failed as [`transient`](Self::transient) says.
    pub(super) fn delay_active(&mut self, d: DomainId, reply: &Reply) {
        let Some(dom) = self.domain_mut(d) else {
            return;
        };
        let batches: Vec<Batch> = dom.active.take_all();
        for batch in batches {
            let failed = self.transient(batch.clone(), reply, None, None);
            self.settle(&batch, failed);
        }
    }

    /// `reply` from `host` as a batch's last failure: the one made for the
    /// batch before when it is the same, so that the batches a dead host
    /// delays together hold one copy.
    fn shared_failure(&mut self, reply: &Reply, host: Option<HostInfo>) -> Arc<Failure> {
        if let Some(last) = &self.recent_failure
            && last.0 == *reply
            && last.1 == host
        {
            return last.clone();
        }
        let last = Arc::new((reply.clone(), host));
        self.recent_failure = Some(last.clone());
        last
    }

    /// Puts a batch in the delayed queue until `at`.
    pub(super) fn delay(&mut self, batch: Batch, at: Instant) {
        let d = batch.queue;
        self.sequence += 1;
        let sequence = self.sequence;
        let Some(dom) = self.domain_mut(d) else {
            return;
        };
        dom.delayed.insert((at, sequence), batch);
        self.schedule_wake(d);
    }

    /// Sets the queue's wake-up for its earliest delayed batch.
    pub(super) fn schedule_wake(&mut self, d: DomainId) {
        let Some(dom) = self.domain_mut(d) else {
            return;
        };
        let Some(&(first, _)) = dom.delayed.keys().next() else {
            return;
        };
        if dom.wake.is_some_and(|at| at <= first) {
            return;
        }
        dom.wake = Some(first);
        self.timers.at(first, Timer::Wake(d));
    }

    /// Delayed batches whose time has come are ready again, or fail as
    /// expired.
    pub(super) fn wake(&mut self, d: DomainId, now: Instant) {
        let Some(dom) = self.domain_mut(d) else {
            return;
        };
        dom.wake = None;
        let later = dom.delayed.split_off(&(now + Duration::from_millis(1), 0));
        let due = std::mem::replace(&mut dom.delayed, later);
        let expiration = dom.limits.expiration;
        for batch in due.into_values() {
            self.enter(&batch);
            if self.expires(&batch) <= now {
                let (last, host) = batch.last_failure();
                let failed = self.fail(
                    &batch,
                    &batch.recipients,
                    &expired(expiration, &last),
                    host.as_ref(),
                );
                self.settle(&batch, failed);
            } else if let Some(dom) = self.domain_mut(d) {
                dom.active.push_back(batch);
            }
        }
        self.schedule_wake(d);
        self.offer(d);
    }

    /// Moves every delayed batch of the queue to the ready queue now.
    pub(super) fn flush(&mut self, d: DomainId) {
        let Some(dom) = self.domain_mut(d) else {
            return;
        };
        let all = std::mem::take(&mut dom.delayed);
        dom.wake = None;
        for batch in all.into_values() {
            self.enter(&batch);
            if let Some(dom) = self.domain_mut(d) {
                dom.active.push_back(batch);
            }
        }
        self.offer(d);
    }
}

/// The reply of a message that has been in the queue too long.
pub(super) fn expired(expiration: Duration, last: &Reply) -> Reply {
    Reply::with_status(
        554,
        (5, 4, 7),
        format!(
            "message expired after {} s in the queue; last: {last}",
            expiration.as_secs()
        ),
    )
}
