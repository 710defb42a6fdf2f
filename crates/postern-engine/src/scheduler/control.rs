//! What an operator does to a queue: hold it, release it, retry its
//! delayed mail now; and the throttles that pace it.

use std::time::Instant;

use actix::prelude::*;

use super::Scheduler;
use super::timers::Timer;
use crate::queue::QueueKey;
use crate::throttle::Bucket;

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
        match command {
            Command::Suspend => {
                let queue = self.queue(&key);
                queue.suspended = true;
                for waiter in queue.waiters.drain(..) {
                    let _ = waiter.reply.send(None);
                }
            }
            Command::Resume => {
                self.queue(&key).suspended = false;
                self.pump(&key, ctx);
            }
            Command::Flush => self.flush(&key, ctx),
        }
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
        self.draining = true;
        for queue in self.queues.values_mut() {
            for waiter in queue.waiters.drain(..) {
                let _ = waiter.reply.send(None);
            }
        }
    }
}

/// Which throttle of a queue.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pace {
    Messages,
    Connections,
}

impl Scheduler {
    /// Takes a token from the queue's throttle; false (and a pump set for
    /// when the next token comes) when the throttle says wait.
    pub(super) fn paced(&mut self, key: &QueueKey, pace: Pace, ctx: &mut Context<Self>) -> bool {
        let now = Instant::now();
        let Some(queue) = self.queues.get(key) else {
            return true;
        };
        let throttle = match pace {
            Pace::Messages => &queue.limits.message_throttle,
            Pace::Connections => &queue.limits.connection_throttle,
        };
        let Some((name, throttle)) = throttle.clone() else {
            return true;
        };
        let bucket = self
            .buckets
            .entry(name)
            .or_insert_with(|| Bucket::new(throttle, now));
        let Err(at) = bucket.take(now) else {
            return true;
        };
        let kind = match pace {
            Pace::Messages => "messages",
            Pace::Connections => "connections",
        };
        metrics::counter!(postern_metrics::THROTTLE_DELAYS, "kind" => kind).increment(1);
        let Some(queue) = self.queues.get_mut(key) else {
            return false;
        };
        if queue.throttle_wake.is_none_or(|w| at < w) {
            queue.throttle_wake = Some(at);
            self.at(at, Timer::Throttle(key.clone()), ctx);
        }
        false
    }
}
