//! What an operator does to a queue: hold it, release it, retry its
//! delayed mail now; the throttles that pace it; draining at shutdown;
//! and the test hook that makes a connection panic.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::timers::Timer;
use super::{Core, Scheduler};
use crate::domain::QueueKey;
use crate::ids::DomainId;

/// An operator's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// Deliver nothing more until resumed; mail is kept, not failed.
    Suspend,
    /// Deliver again.
    Resume,
    /// Retry every delayed message now.
    Flush,
}

/// A command for one queue.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Control(pub(crate) QueueKey, pub(crate) Command);

impl Handler<Control> for Scheduler {
    type Result = ();

    fn handle(&mut self, Control(key, command): Control, ctx: &mut Context<Self>) {
        let d = self.core.domain_id(&key);
        match command {
            Command::Suspend => {
                // Its hosts' rings let it go when they reach it.
                if let Some(dom) = self.core.domain_mut(d) {
                    dom.suspended = true;
                }
            }
            Command::Resume => {
                if let Some(dom) = self.core.domain_mut(d) {
                    dom.suspended = false;
                }
                self.core.offer(d);
            }
            Command::Flush => self.core.flush(d),
        }
        self.sync(ctx);
    }
}

/// Stop delivering: idle connections close, busy ones close after their
/// transaction, and no connection opens.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Drain;

impl Handler<Drain> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {
        self.core.draining = true;
        self.core.idle_order.clear();
        let idle: Vec<_> = self
            .core
            .hosts
            .iter_mut()
            .flat_map(|host| host.idle.drain(..))
            .collect();
        for i in idle {
            self.core.let_go(i);
        }
    }
}

/// Test hook: the next connection given a batch for this recipient
/// panics while carrying it.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Fault(pub(crate) String);

impl Handler<Fault> for Scheduler {
    type Result = ();

    fn handle(&mut self, Fault(recipient): Fault, _: &mut Context<Self>) {
        self.core.panic_on = Some(Arc::from(recipient));
    }
}

/// Which throttle of a domain.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pace {
    Messages,
    Connections,
}

impl Core {
    /// Takes a token from the domain's throttle; false (and a wake-up set
    /// for when the next token comes) when the throttle says wait.
    pub(super) fn paced(&mut self, d: DomainId, pace: Pace, now: Instant) -> bool {
        let Some(dom) = self.domain(d) else {
            return true;
        };
        let throttle = match pace {
            Pace::Messages => &dom.limits.message_throttle,
            Pace::Connections => &dom.limits.connection_throttle,
        };
        let Some((name, throttle)) = throttle.clone() else {
            return true;
        };
        let next = match self.shared_token(d, &name, throttle) {
            Ok(true) => return true,
            // Offered again when the cluster's grant comes.
            Ok(false) => None,
            Err(local) => match self.local_bucket(name, local, now).take(now) {
                Ok(()) => return true,
                Err(at) => Some(at),
            },
        };
        let kind = match pace {
            Pace::Messages => "messages",
            Pace::Connections => "connections",
        };
        metrics::counter!(postern_metrics::THROTTLE_DELAYS, "kind" => kind).increment(1);
        if let Some(at) = next {
            self.throttle_wake(d, at);
        }
        false
    }

    /// Offers the domain again at `at`, when its throttle has a token.
    pub(super) fn throttle_wake(&mut self, d: DomainId, at: Instant) {
        let Some(dom) = self.domain_mut(d) else {
            return;
        };
        if dom.throttle_wake.is_none_or(|w| at < w) {
            dom.throttle_wake = Some(at);
            self.timers.at(at, Timer::Throttle(d));
        }
    }
}
