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
        self.held_offers = Some(Vec::new());
        for message in messages {
            self.submit(message);
        }
        let held = self.held_offers.take().unwrap_or_default();
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
        match &mut self.held_offers {
            // A domain's messages come in runs: one offer for each.
            Some(held) if held.last() != Some(&d) => held.push(d),
            Some(_) => {}
            None => self.offer(d),
        }
    }
}
