//! A domain's ready mail: batches waiting for a connection, and entries
//! waiting in the spool behind them, counted in one engine-wide total that
//! the listener reads to push back on clients.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::message::{Batch, Spooled};

/// Ready batches of one domain, in order, then its entries left in the
/// spool, in order.
#[derive(Debug)]
pub(crate) struct Ready {
    batches: VecDeque<Batch>,
    spooled: VecDeque<Spooled>,
    total: Arc<AtomicUsize>,
}

impl Ready {
    pub(crate) fn new(total: Arc<AtomicUsize>) -> Self {
        Self {
            batches: VecDeque::new(),
            spooled: VecDeque::new(),
            total,
        }
    }

    pub(crate) fn push_back(&mut self, batch: Batch) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.batches.push_back(batch);
    }

    pub(crate) fn push_front(&mut self, batch: Batch) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.batches.push_front(batch);
    }

    /// The oldest batch. The last one out gives back the list's memory:
    /// of 100,000 domains most have nothing ready, and a list allocated
    /// afresh comes from memory just freed, warm in the cache, where a
    /// list kept for each domain is cold when its next message comes.
    pub(crate) fn pop_front(&mut self) -> Option<Batch> {
        let batch = self.batches.pop_front()?;
        self.total.fetch_sub(1, Ordering::Relaxed);
        if self.batches.is_empty() {
            self.batches = VecDeque::new();
        }
        Some(batch)
    }

    /// Takes every batch, and the list's memory with them (the entries in
    /// the spool stay).
    pub(crate) fn take_all(&mut self) -> Vec<Batch> {
        self.total.fetch_sub(self.batches.len(), Ordering::Relaxed);
        Vec::from(std::mem::take(&mut self.batches))
    }

    /// Batches in memory.
    pub(crate) fn len(&self) -> usize {
        self.batches.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// An entry waits in the spool, behind everything before it.
    pub(crate) fn push_spooled(&mut self, entry: Spooled) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.spooled.push_back(entry);
    }

    /// The first `n` entries waiting in the spool, to read back.
    pub(crate) fn take_spooled(&mut self, n: usize) -> Vec<Spooled> {
        let n = n.min(self.spooled.len());
        self.total.fetch_sub(n, Ordering::Relaxed);
        self.spooled.drain(..n).collect()
    }

    /// Entries that could not be read back wait at the head again.
    pub(crate) fn unread(&mut self, entries: Vec<Spooled>) {
        self.total.fetch_add(entries.len(), Ordering::Relaxed);
        for e in entries.into_iter().rev() {
            self.spooled.push_front(e);
        }
    }

    /// Entries waiting in the spool.
    pub(crate) fn spooled(&self) -> usize {
        self.spooled.len()
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        self.total
            .fetch_sub(self.batches.len() + self.spooled.len(), Ordering::Relaxed);
    }
}
