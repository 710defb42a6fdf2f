//! Mail handed to the engine: each message's batches join its domain's
//! ready mail (or wait in the spool behind it), and the domains are
//! offered once a whole submission is queued.

use std::time::{Instant, SystemTime};

use super::Core;
use crate::domain::QueueKey;
use crate::ids::DomainId;
use crate::message::{Batch, QueuedMessage};

impl Core {
    /// Queues a message: its batches join the domain's ready mail, or it
    /// waits in the spool behind the domain's mail there.
    pub(crate) fn submit(&mut self, message: QueuedMessage) {
        let d = match self.find_domain(&message.binding, &message.domain) {
            Some(d) => d,
            None => self.domain_id(&QueueKey {
                binding: message.binding.clone(),
                domain: message.domain.clone(),
            }),
        };
        if self.spill(d, &message) {
            return;
        }
        self.queue(d, message);
    }

    /// Queues messages, then offers each of their domains once: a host's
    /// idle connection then finds them all waiting, and may take several
    /// for one write.
    pub(crate) fn submit_all(&mut self, messages: Vec<QueuedMessage>) {
        self.holding_offers = true;
        for message in messages {
            self.submit(message);
        }
        self.holding_offers = false;
        let held = std::mem::take(&mut self.held_offers);
        for d in &held {
            if let Some(dom) = self.domain_mut(*d) {
                dom.offer_held = false;
            }
        }
        self.offer_all(&held);
    }

    /// Queues a message in memory: its batches join the domain's ready
    /// mail (or its delayed mail, until a stored next attempt).
    pub(super) fn queue(&mut self, d: DomainId, mut message: QueuedMessage) {
        let Some(dom) = self.domain(d) else {
            return;
        };
        // The queue's copies of the names, not one pair per message.
        message.binding = dom.key.binding.clone();
        message.domain = dom.key.domain.clone();
        let size = dom.limits.batch_size;
        // A stored schedule (after a restart) holds the message until then.
        let wait = message
            .not_before
            .and_then(|t| t.duration_since(SystemTime::now()).ok());
        for batch in Batch::split(message, size, d) {
            if let Some(wait) = wait {
                self.delay(batch, Instant::now() + wait);
                continue;
            }
            self.enter(&batch);
            if let Some(dom) = self.domain_mut(d) {
                dom.active.push_back(batch);
            }
        }
        if !self.holding_offers {
            return self.offer(d);
        }
        if let Some(dom) = self.domain_mut(d)
            && !std::mem::replace(&mut dom.offer_held, true)
        {
            self.held_offers.push(d);
        }
    }
}
