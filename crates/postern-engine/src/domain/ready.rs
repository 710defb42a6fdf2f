//! A domain's ready mail: batches waiting for a connection, counted in one
//! engine-wide total that the listener reads to push back on clients.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::message::Batch;

/// Ready batches of one domain, in order.
#[derive(Debug)]
pub(crate) struct Ready {
    batches: VecDeque<Batch>,
    total: Arc<AtomicUsize>,
}

impl Ready {
    pub(crate) fn new(total: Arc<AtomicUsize>) -> Self {
        Self {
            batches: VecDeque::new(),
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

    pub(crate) fn pop_front(&mut self) -> Option<Batch> {
        let batch = self.batches.pop_front()?;
        self.total.fetch_sub(1, Ordering::Relaxed);
        Some(batch)
    }

    /// Takes every batch.
    pub(crate) fn take_all(&mut self) -> Vec<Batch> {
        self.total.fetch_sub(self.batches.len(), Ordering::Relaxed);
        self.batches.drain(..).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.batches.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        self.total.fetch_sub(self.batches.len(), Ordering::Relaxed);
    }
}
