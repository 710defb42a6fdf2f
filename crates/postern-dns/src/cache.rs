//! The answer cache in front of the resolver.
//!
//! hickory's own cache is switched off so that this one is the only one:
//! it clamps TTLs between [`CachePolicy`]'s bounds, keeps negative answers
//! (NXDOMAIN, no records, Null MX) for their SOA's negative TTL, and lets
//! every concurrent lookup of one name wait on the single query in flight.
//! A transient failure (SERVFAIL, timeout) is handed to the lookups that
//! waited on that query and is never served to a later one.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::DnsError;

/// How long answers are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// An answer is kept at least this long, whatever its TTL.
    pub min_ttl: Duration,
    /// An answer is kept at most this long, whatever its TTL.
    pub max_ttl: Duration,
    /// A negative answer is kept at least this long.
    pub negative_min_ttl: Duration,
    /// A negative answer is kept at most this long.
    pub negative_max_ttl: Duration,
}

impl Default for CachePolicy {
    /// Records with a TTL of 0 are still kept 5 s, so that a burst of mail
    /// to one domain makes one query; nothing is kept past a day; a name
    /// that does not exist is asked again after 10 minutes at most.
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(86_400),
            negative_min_ttl: Duration::from_secs(5),
            negative_max_ttl: Duration::from_secs(600),
        }
    }
}

impl CachePolicy {
    /// The time an answer with `ttl` seconds stays valid.
    pub(crate) fn keep(&self, ttl: u32, negative: bool) -> Duration {
        let ttl = Duration::from_secs(u64::from(ttl));
        if negative {
            ttl.clamp(self.negative_min_ttl, self.negative_max_ttl)
        } else {
            ttl.clamp(self.min_ttl, self.max_ttl)
        }
    }
}

/// One answer and when it was fetched.
#[derive(Debug, Clone)]
pub(crate) struct Fetched<T> {
    /// The answer, or the failure.
    pub(crate) value: Result<T, DnsError>,
    /// When the query was answered.
    pub(crate) fetched: Instant,
    /// Until when the answer may be served (its clamped TTL).
    pub(crate) expires: Instant,
}

impl<T> Fetched<T> {
    /// An answer that stays valid for `keep`.
    pub(crate) fn new(value: Result<T, DnsError>, keep: Duration) -> Self {
        let fetched = Instant::now();
        Self {
            value,
            fetched,
            expires: fetched + keep,
        }
    }

    /// A transient failure: handed to whoever waited, kept for nobody.
    pub(crate) fn transient(error: DnsError) -> Self {
        Self::new(Err(error), Duration::ZERO)
    }

    /// Until when a caller with `freshness` may use this answer.
    pub(crate) fn valid_until(&self, freshness: Freshness) -> Instant {
        match (&self.value, freshness) {
            (Err(e), _) if !e.is_permanent() => self.fetched,
            (_, Freshness::Dns) => self.expires,
            (_, Freshness::Fixed(ttl)) => self.fetched + ttl,
        }
    }
}

/// How old an answer a lookup accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// As long as the record's (clamped) TTL.
    Dns,
    /// As long as this, whatever the TTL (a route's `ttl=`).
    Fixed(Duration),
}

type Slot<T> = Arc<OnceCell<Fetched<T>>>;

/// Answers of one record kind by lower-case name.
#[derive(Debug)]
pub(crate) struct Cache<T> {
    slots: Mutex<Slots<T>>,
}

#[derive(Debug)]
struct Slots<T> {
    map: HashMap<String, Slot<T>>,
    /// The map size at which stale slots are swept out.
    sweep_at: usize,
}

const FIRST_SWEEP: usize = 1024;

impl<T: Clone> Cache<T> {
    pub(crate) fn new() -> Self {
        Self {
            slots: Mutex::new(Slots {
                map: HashMap::new(),
                sweep_at: FIRST_SWEEP,
            }),
        }
    }

    /// The slot for `key` that `freshness` accepts: the current one while it
    /// is in flight or fresh, else a new empty one that replaces it.
    fn slot(&self, key: &str, freshness: Freshness) -> Slot<T> {
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.map.get(key) {
            match slot.get() {
                None => return slot.clone(),
                Some(f) if now < f.valid_until(freshness) => return slot.clone(),
                Some(_) => {}
            }
        }
        if slots.map.len() >= slots.sweep_at {
            slots
                .map
                .retain(|_, s| s.get().is_none_or(|f| now < f.expires));
            slots.sweep_at = (slots.map.len() * 2).max(FIRST_SWEEP);
        }
        let slot: Slot<T> = Arc::new(OnceCell::new());
        slots.map.insert(key.to_owned(), slot.clone());
        slot
    }

    /// The cached answer for `key`, or the one `fetch` gets. Concurrent
    /// callers share one `fetch`.
    pub(crate) async fn get<F>(&self, key: &str, freshness: Freshness, fetch: F) -> Fetched<T>
    where
        F: Future<Output = Fetched<T>>,
    {
        let slot = self.slot(key, freshness);
        slot.get_or_init(|| fetch).await.clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn answer(n: u32, keep: Duration) -> Fetched<u32> {
        Fetched::new(Ok(n), keep)
    }

    #[test]
    fn ttls_are_clamped() {
        let p = CachePolicy::default();
        assert_eq!(p.keep(0, false), Duration::from_secs(5));
        assert_eq!(p.keep(300, false), Duration::from_secs(300));
        assert_eq!(p.keep(u32::MAX, false), Duration::from_secs(86_400));
        assert_eq!(p.keep(86_400, true), Duration::from_secs(600));
    }

    #[tokio::test]
    async fn concurrent_lookups_share_one_fetch() {
        let cache = Cache::new();
        let calls = AtomicUsize::new(0);
        let fetch = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            answer(7, Duration::from_secs(60))
        };
        let (a, b, c) = tokio::join!(
            cache.get("x", Freshness::Dns, fetch()),
            cache.get("x", Freshness::Dns, fetch()),
            cache.get("x", Freshness::Dns, fetch()),
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        for f in [a, b, c] {
            assert_eq!(f.value.unwrap(), 7);
        }
    }

    #[tokio::test]
    async fn transient_failures_are_not_served_again() {
        let cache = Cache::<u32>::new();
        let failure = || async {
            Fetched::transient(DnsError::ServerFailure {
                name: "x".into(),
                detail: "SERVFAIL".into(),
            })
        };
        assert!(
            cache
                .get("x", Freshness::Dns, failure())
                .await
                .value
                .is_err()
        );
        let again = cache
            .get("x", Freshness::Dns, async {
                answer(1, Duration::from_secs(60))
            })
            .await;
        assert_eq!(again.value.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_fixed_freshness_overrides_the_ttl() {
        let cache = Cache::<u32>::new();
        let long = Duration::from_secs(3600);
        cache
            .get("x", Freshness::Dns, async { answer(1, long) })
            .await;
        let shorter = Freshness::Fixed(Duration::ZERO);
        let refetched = cache.get("x", shorter, async { answer(2, long) }).await;
        assert_eq!(refetched.value.unwrap(), 2);
        let cached = cache
            .get("x", Freshness::Dns, async { answer(3, long) })
            .await;
        assert_eq!(cached.value.unwrap(), 2);
    }

    #[tokio::test]
    async fn stale_entries_are_swept() {
        let cache = Cache::<u32>::new();
        for i in 0..FIRST_SWEEP + 1 {
            let key = format!("name{i}");
            cache
                .get(&key, Freshness::Dns, async { answer(1, Duration::ZERO) })
                .await;
        }
        let slots = cache.slots.lock().unwrap();
        assert!(slots.map.len() < FIRST_SWEEP, "{}", slots.map.len());
    }
}
