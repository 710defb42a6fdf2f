//! One timer for the whole scheduler. Every queue's deadlines (delayed
//! mail due, idle connections to let go, a throttle's next token) and the
//! host retry times go into one ordered map, and a single actix timer is
//! set for the earliest. actix polls every pending future of an actor on
//! each wake-up, so a timer per queue would make each message cost as
//! much as the number of queues (measured with 10,000 domains).

use std::collections::BTreeMap;
use std::time::Instant;

use actix::prelude::*;

use super::Scheduler;
use crate::queue::QueueKey;

/// What a deadline is for.
#[derive(Debug, Clone)]
pub(super) enum Timer {
    /// Delayed mail of the queue may be due.
    Wake(QueueKey),
    /// Idle connections of the queue may have waited long enough.
    Idle(QueueKey),
    /// The queue's throttle has a token again.
    Throttle(QueueKey),
    /// A host's `Host_Failure_Retry` has passed: queues may use it again.
    HostsBack,
}

/// The deadlines and the one armed actix timer.
#[derive(Debug, Default)]
pub(super) struct Timers {
    due: BTreeMap<(Instant, u64), Timer>,
    armed: Option<(Instant, SpawnHandle)>,
    sequence: u64,
}

impl Scheduler {
    /// Runs `timer` at `when` (or at once if that has passed).
    pub(super) fn at(&mut self, when: Instant, timer: Timer, ctx: &mut Context<Self>) {
        self.timers.sequence += 1;
        let key = (when, self.timers.sequence);
        self.timers.due.insert(key, timer);
        self.arm(ctx);
    }

    fn arm(&mut self, ctx: &mut Context<Self>) {
        let Some(&(first, _)) = self.timers.due.keys().next() else {
            return;
        };
        if let Some((at, handle)) = self.timers.armed.take() {
            if at <= first {
                self.timers.armed = Some((at, handle));
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = first.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(wait, |act, ctx| act.fire(ctx));
        self.timers.armed = Some((first, handle));
    }

    fn fire(&mut self, ctx: &mut Context<Self>) {
        self.timers.armed = None;
        let now = Instant::now();
        let later = self.timers.due.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut self.timers.due, later);
        for timer in due.into_values() {
            match timer {
                Timer::Wake(k) => self.wake(&k, ctx),
                Timer::Idle(k) => self.expire_idle(&k, ctx),
                Timer::Throttle(k) => {
                    if let Some(q) = self.queues.get_mut(&k) {
                        q.throttle_wake = None;
                    }
                    self.pump(&k, ctx);
                }
                Timer::HostsBack => self.pump_waiting(ctx),
            }
        }
        self.arm(ctx);
    }
}
