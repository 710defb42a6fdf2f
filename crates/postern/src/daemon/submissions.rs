//! Stored messages on their way to the engine. Those stored within
//! [`GATHER`] of the first are handed over together: one wake-up of the
//! control loop for the sessions of several group commits, and a host's
//! idle connection that finds several messages waiting carries them in
//! one write (ADR 0015).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use postern_engine::QueuedMessage;

/// How long stored messages gather before they are handed over. Under
/// load a group holds the messages of several group commits; a message
/// alone reaches the engine 2–3 ms after it is stored (the timer's ticks
/// are 1 ms), which its delivery does not notice. The client's 250 does
/// not wait for it.
pub(crate) const GATHER: Duration = Duration::from_millis(2);

/// Items gathered for one hand-over: stored messages for the engine.
pub(crate) struct Submissions<T = QueuedMessage> {
    hand_over: Box<dyn Fn(Vec<T>) + Send + Sync>,
    waiting: Mutex<Vec<T>>,
    /// How many are waiting, for the listener's backpressure: they are
    /// ready mail the engine does not count yet.
    count: Arc<AtomicUsize>,
}

impl<T: Send + 'static> Submissions<T> {
    /// Gathers items for `hand_over` (the engine's `submit_all`).
    pub(crate) fn new(hand_over: impl Fn(Vec<T>) + Send + Sync + 'static) -> Self {
        Self {
            hand_over: Box::new(hand_over),
            waiting: Mutex::new(Vec::new()),
            count: Arc::default(),
        }
    }

    /// How many items are waiting to be handed over, kept up to date.
    pub(crate) fn count(&self) -> Arc<AtomicUsize> {
        self.count.clone()
    }

    /// Queues `item`. The first of a group starts a task that waits
    /// [`GATHER`], then hands over all gathered by then. The hand-over is
    /// in the task's drop, so that a runtime that stops before the wait
    /// ends still hands them over; outside a runtime it is at once.
    pub(crate) fn push(self: &Arc<Self>, item: T) {
        let first = {
            let mut waiting = self.lock();
            waiting.push(item);
            self.count.fetch_add(1, Ordering::Relaxed);
            waiting.len() == 1
        };
        if !first {
            return;
        }
        let flush = Flush(self.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _flush = flush;
                    tokio::time::sleep(GATHER).await;
                });
            }
            Err(_) => drop(flush),
        }
    }

    fn flush(&self) {
        let items = std::mem::take(&mut *self.lock());
        if !items.is_empty() {
            let n = items.len();
            (self.hand_over)(items);
            self.count.fetch_sub(n, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<T>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands the gathered items over when dropped.
struct Flush<T: Send + 'static>(Arc<Submissions<T>>);

impl<T: Send + 'static> Drop for Flush<T> {
    fn drop(&mut self) {
        self.0.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Groups = Arc<Mutex<Vec<Vec<u32>>>>;

    fn gatherer() -> (Arc<Submissions<u32>>, Groups) {
        let groups = Groups::default();
        let seen = groups.clone();
        let submissions = Submissions::new(move |items| {
            seen.lock().expect("lock").push(items);
        });
        (Arc::new(submissions), groups)
    }

    fn taken(groups: &Groups) -> Vec<Vec<u32>> {
        std::mem::take(&mut *groups.lock().expect("lock"))
    }

    #[tokio::test(start_paused = true)]
    async fn items_within_the_gathering_time_of_the_first_go_together() {
        let (s, groups) = gatherer();
        let count = s.count();
        s.push(1);
        tokio::time::sleep(GATHER / 2).await;
        let other = s.clone();
        tokio::spawn(async move { other.push(2) })
            .await
            .expect("join");
        assert!(taken(&groups).is_empty(), "nothing before the time is up");
        assert_eq!(count.load(Ordering::Relaxed), 2, "two waiting");
        tokio::time::sleep(GATHER).await;
        assert_eq!(taken(&groups), vec![vec![1, 2]]);
        assert_eq!(count.load(Ordering::Relaxed), 0, "none waiting");
        s.push(3);
        tokio::time::sleep(GATHER * 2).await;
        assert_eq!(
            taken(&groups),
            vec![vec![3]],
            "a new group after the hand-over"
        );
    }

    #[test]
    fn a_runtime_that_stops_while_they_gather_still_hands_them_over() {
        let (s, groups) = gatherer();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            s.push(1);
            s.push(2);
        });
        assert!(taken(&groups).is_empty(), "still gathering");
        drop(runtime);
        assert_eq!(taken(&groups), vec![vec![1, 2]]);
        s.push(3);
        assert_eq!(taken(&groups), vec![vec![3]], "outside a runtime, at once");
    }
}
