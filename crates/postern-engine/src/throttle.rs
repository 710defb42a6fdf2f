//! Token buckets for `Outbound_Throttle_Messages` and
//! `Outbound_Throttle_Connections`: `N` per `S` seconds, with bursts of
//! up to `N`.

use std::time::{Duration, Instant};

use postern_conf::Throttle;

/// One bucket, shared by every queue that takes the throttle from the same
/// setting.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    capacity: f64,
    tokens: f64,
    per_second: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket for `throttle` (which limits something).
    pub(crate) fn new(throttle: Throttle, now: Instant) -> Self {
        let capacity = f64::from(throttle.count.max(1));
        Self {
            capacity,
            tokens: capacity,
            per_second: capacity / f64::from(throttle.per_secs.max(1)),
            at: now,
        }
    }

    /// Takes a token, or tells when the next one will be there.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), Instant> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / self.per_second;
        Err(now + Duration::from_secs_f64(wait))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let now = Instant::now();
        let mut b = Bucket::new(
            Throttle {
                count: 10,
                per_secs: 1,
            },
            now,
        );
        for _ in 0..10 {
            assert!(b.take(now).is_ok());
        }
        let next = b.take(now).unwrap_err();
        assert_eq!(next.duration_since(now).as_millis(), 100);
        assert!(b.take(next).is_ok());
        let mut slow = Bucket::new(
            Throttle {
                count: 2,
                per_secs: 60,
            },
            now,
        );
        slow.take(now).unwrap();
        slow.take(now).unwrap();
        assert_eq!(
            slow.take(now).unwrap_err().duration_since(now).as_secs(),
            30
        );
    }
}
