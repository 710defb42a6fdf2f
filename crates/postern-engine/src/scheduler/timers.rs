//! Every deadline of the control plane in one ordered map: delayed mail
//! due, idle connections to let go, a throttle's next token, a host due
//! back or unpaused. The scheduler actor keeps one actix timer, for the
//! earliest: actix polls every pending future of an actor on each
//! wake-up, so a timer per domain would make each message cost as much as
//! the number of domains (measured with 10,000 domains).

use std::collections::BTreeMap;
use std::time::Instant;

use super::Core;
use crate::ids::DomainId;
use crate::ids::HostId;

/// What a deadline is for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Timer {
    /// Delayed mail of the domain may be due.
    Wake(DomainId),
    /// The domain's throttle has a token again.
    Throttle(DomainId),
    /// A `suspend` reply rule's hold of the domain is over.
    Release(DomainId),
    /// Idle connections of the host may have waited long enough.
    Idle(HostId),
    /// The host's `Host_Failure_Retry` has passed: a probe may go.
    HostBack(HostId),
    /// The host may open connections again (after a pause or a lack of
    /// local resources).
    HostRetry(HostId),
    /// Reading the domain's entries back from the spool failed: try again.
    ReadBack(DomainId),
}

/// The deadlines, in time order.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    due: BTreeMap<(Instant, u64), Timer>,
    sequence: u64,
}

impl Timers {
    /// Runs `timer` at `when` (or at the next firing if that has passed).
    pub(super) fn at(&mut self, when: Instant, timer: Timer) {
        self.sequence += 1;
        self.due.insert((when, self.sequence), timer);
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.due.keys().next().map(|(at, _)| *at)
    }

    fn take_due(&mut self, now: Instant) -> Vec<Timer> {
        let later = self.due.split_off(&(now, u64::MAX));
        std::mem::replace(&mut self.due, later)
            .into_values()
            .collect()
    }
}

impl Core {
    /// Runs every deadline that has passed.
    pub(crate) fn fire(&mut self, now: Instant) {
        for timer in self.timers.take_due(now) {
            match timer {
                Timer::Wake(d) => self.wake(d, now),
                Timer::Throttle(d) => {
                    if let Some(dom) = self.domain_mut(d) {
                        dom.throttle_wake = None;
                    }
                    self.offer(d);
                }
                Timer::Release(d) => {
                    if let Some(dom) = self.domain_mut(d) {
                        dom.held_until = None;
                    }
                    self.offer(d);
                }
                Timer::Idle(h) => self.expire_idle(h, now),
                Timer::ReadBack(d) => self.read_again(d),
                Timer::HostBack(h) => {
                    if self.host_mut(h).is_some_and(|x| x.due_back(now)) {
                        self.dispatch(h, now);
                    }
                }
                Timer::HostRetry(h) => {
                    // A later retry time may have replaced this one.
                    let due = self
                        .host(h)
                        .and_then(|x| x.retry_at)
                        .is_some_and(|t| t <= now);
                    if due {
                        if let Some(x) = self.host_mut(h) {
                            x.retry_at = None;
                        }
                        self.dispatch(h, now);
                    }
                }
            }
        }
    }
}
