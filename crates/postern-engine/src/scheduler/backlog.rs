//! Mail a queue leaves in the spool. A queue holds at most
//! `Max_Queued_In_Memory` batches (ready and delayed); a message that
//! comes beyond them, or behind entries already in the spool, is kept as
//! its spool ids only. When the queue's ready mail falls to half of the
//! limit, the next entries are read back (off the event loop, by the
//! [`Backlog`](crate::message::Backlog)) and queued in order. Every
//! change that frees room (a batch handed out, settled, expired or
//! failed, a queue offered) looks again.

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::timers::Timer;
use super::{Action, Core, Scheduler};
use crate::ids::DomainId;
use crate::message::{BacklogRead, Body, QueuedMessage, Spooled};

/// Entries read back in one request at most.
const READ_AT_ONCE: usize = 1000;

/// After a failed read, the wait before the next.
const READ_RETRY: Duration = Duration::from_secs(1);

/// Entries the daemon found in the spool at start, for one queue.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SubmitSpooled {
    pub(crate) binding: std::sync::Arc<str>,
    pub(crate) domain: std::sync::Arc<str>,
    pub(crate) entries: Vec<Spooled>,
}

/// Entries read back.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ReadBack {
    domain: DomainId,
    read: BacklogRead,
}

impl Core {
    /// Leaves `message` in the spool when its queue is full in memory, or
    /// has entries there already (they go first). Bounces (held in
    /// memory only) always stay.
    pub(super) fn spill(&mut self, d: DomainId, message: &QueuedMessage) -> bool {
        if self.backlog.is_none() || matches!(message.body, Body::Memory(_)) {
            return false;
        }
        let Some(dom) = self.domain_mut(d) else {
            return false;
        };
        let held = dom.held();
        // Entries being read back count as spooled: nothing overtakes them.
        if dom.active.spooled() == 0 && !dom.reading && held < dom.limits.in_memory {
            return false;
        }
        dom.active.push_spooled(Spooled {
            message: message.queue_id,
            entry: message.id,
        });
        self.read_back(d);
        true
    }

    /// Entries found in the spool at start join their queue's entries
    /// there.
    pub(super) fn submit_spooled(&mut self, s: SubmitSpooled) {
        let d = self.domain_id(&crate::domain::QueueKey {
            binding: s.binding,
            domain: s.domain,
        });
        let Some(dom) = self.domain_mut(d) else {
            return;
        };
        for e in s.entries {
            dom.active.push_spooled(e);
        }
        self.read_back(d);
    }

    /// Asks for the queue's next entries in the spool when its ready mail
    /// is down to half of its room and nothing is being read already.
    pub(super) fn read_back(&mut self, d: DomainId) {
        if self.backlog.is_none() || self.draining {
            return;
        }
        let Some(dom) = self.domain_mut(d) else {
            return;
        };
        let limit = dom.limits.in_memory;
        let held = dom.held();
        if dom.reading || dom.active.spooled() == 0 || dom.active.len() > limit / 2 || held >= limit
        {
            return;
        }
        let entries = dom.active.take_spooled((limit - held).min(READ_AT_ONCE));
        dom.reading = true;
        self.actions.push(Action::ReadBack(d, entries));
    }

    /// Entries read back join the ready mail in order. Those that could
    /// not be read wait at the head of the spooled ones, and the queue
    /// reads nothing more until it asks again, a second later.
    fn read_done(&mut self, r: ReadBack) {
        let BacklogRead { messages, retry } = r.read;
        // Still reading while they are queued: no other read starts on
        // the room they take.
        for m in messages {
            self.queue(r.domain, m);
        }
        let Some(dom) = self.domain_mut(r.domain) else {
            return;
        };
        if retry.is_empty() {
            dom.reading = false;
        } else {
            dom.active.unread(retry);
            self.timers
                .at(Instant::now() + READ_RETRY, Timer::ReadBack(r.domain));
        }
        self.read_back(r.domain);
    }

    /// The wait after a failed read is over.
    pub(super) fn read_again(&mut self, d: DomainId) {
        if let Some(dom) = self.domain_mut(d) {
            dom.reading = false;
        }
        self.read_back(d);
    }
}

impl Scheduler {
    /// Reads entries back on the spool's reader threads; the answer comes
    /// back as a message, so no future waits on this actor.
    pub(super) fn read_back(&mut self, d: DomainId, entries: Vec<Spooled>, ctx: &Context<Self>) {
        let Some(backlog) = self.core.backlog.clone() else {
            return;
        };
        let me = ctx.address();
        let read = backlog.read(entries);
        actix::spawn(async move {
            me.do_send(ReadBack {
                domain: d,
                read: read.await,
            });
        });
    }
}

impl Handler<SubmitSpooled> for Scheduler {
    type Result = ();

    fn handle(&mut self, s: SubmitSpooled, ctx: &mut Context<Self>) {
        self.core.submit_spooled(s);
        self.sync(ctx);
    }
}

impl Handler<ReadBack> for Scheduler {
    type Result = ();

    fn handle(&mut self, r: ReadBack, ctx: &mut Context<Self>) {
        self.core.read_done(r);
        self.sync(ctx);
    }
}
