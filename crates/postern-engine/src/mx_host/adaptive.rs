//! The adaptive loop of one MX host: its effective connection limit and
//! message rate, between a floor of one and the configured maximum.
//!
//! - **Slow start.** The limit starts at two connections and rises by
//!   `1/limit` per successful transaction: about one connection per round
//!   of transactions, as in Postfix's concurrency feedback.
//! - **Decrease.** A reply classed `too_many_connections` sets the limit to
//!   three quarters of the connections open when it came; `rate_limited`
//!   sets the rate to three quarters of the rate then (the paced rate, or
//!   the deliveries of the last second). Each pauses new connections for a
//!   second. Only a session opened after the last decrease can cause the
//!   next one (one decrease per cohort), so the replies of the sessions
//!   that were already open count once.
//! - **Back up.** Below the point of the last decrease (the ceiling) the
//!   limit and rate climb back by themselves, gradually. At the ceiling
//!   they wait a quiet period (5 s, doubled each time a probe above the
//!   ceiling is refused again, at most 10 min) before trying one step
//!   above it. Postfix forgets where the trouble began and probes again at
//!   once; remembering the ceiling is what keeps refusals rare once the
//!   loop has converged.
//!
//! With `Adaptive_Delivery = false` nothing moves: the configured limit
//! holds, and "slow down" replies only send their mail back uncounted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use postern_conf::ReplyClass;

use crate::ids::ConnId;

const INITIAL_LIMIT: f64 = 2.0;
const DECREASE: f64 = 0.75;
const PAUSE: Duration = Duration::from_secs(1);
const FIRST_QUIET: Duration = Duration::from_secs(5);
const MAX_QUIET: Duration = Duration::from_secs(600);
/// The rate at a `rate_limited` reply overshot the allowance: the ceiling
/// is set a little below it, and the rate cut less than the connections.
const RATE_CEILING: f64 = 0.95;
const RATE_DECREASE: f64 = 0.85;
/// The rate's growth per second below its ceiling, and above it.
const RATE_GROWTH: f64 = 0.05;
const RATE_PROBE_GROWTH: f64 = 0.02;

/// The last change the loop made, for the console.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) at: Instant,
    /// What caused it: a reply class, or `None` for growth after successes.
    pub(crate) class: Option<ReplyClass>,
    /// The reply that caused it.
    pub(crate) reply: String,
}

/// One host's loop.
#[derive(Debug)]
pub(crate) struct Adaptive {
    enabled: bool,
    max: Option<usize>,
    limit: f64,
    ceiling: Option<f64>,
    rate: Option<f64>,
    rate_ceiling: Option<f64>,
    quiet: Duration,
    last_signal: Option<Instant>,
    last_rate_cut: Option<Instant>,
    paused_until: Option<Instant>,
    /// Sessions with a smaller id were open at the last decrease.
    cohort: ConnId,
    /// Tokens for the rate, refilled continuously.
    tokens: f64,
    refilled: Instant,
    /// When the deliveries of the last second were made (the rate at a
    /// signal).
    recent: VecDeque<Instant>,
    /// When the rate last grew.
    grown: Instant,
    pub(crate) last_change: Option<Change>,
}

impl Adaptive {
    pub(crate) fn new(enabled: bool, max: Option<usize>, now: Instant) -> Self {
        Self {
            enabled,
            max,
            limit: INITIAL_LIMIT,
            ceiling: None,
            rate: None,
            rate_ceiling: None,
            quiet: FIRST_QUIET,
            last_signal: None,
            last_rate_cut: None,
            paused_until: None,
            cohort: 0,
            tokens: 1.0,
            refilled: now,
            recent: VecDeque::new(),
            grown: now,
            last_change: None,
        }
    }

    /// The configured maximum changed (a stricter binding's `Host` limit).
    pub(crate) fn set_max(&mut self, max: Option<usize>) {
        self.max = max;
    }

    /// The connection limit in force.
    pub(crate) fn limit(&self) -> Option<usize> {
        if !self.enabled {
            return self.max;
        }
        // The limit is at least 1 and at most `max`, so the cast is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let adaptive = self.limit.floor().max(1.0) as usize;
        Some(self.max.map_or(adaptive, |m| adaptive.min(m)))
    }

    /// The message rate in force (per second), if any.
    pub(crate) fn rate(&self) -> Option<f64> {
        self.rate.filter(|_| self.enabled)
    }

    /// No new connection before this.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// When the loop will next try above its ceiling, if it waits.
    pub(crate) fn next_probe(&self) -> Option<Instant> {
        let at_ceiling = self.ceiling.is_some_and(|c| self.limit + 1.0 > c)
            || self
                .rate_ceiling
                .is_some_and(|c| self.rate.is_some_and(|r| r >= c));
        (self.enabled && at_ceiling)
            .then(|| self.last_signal.map(|t| t + self.quiet))
            .flatten()
    }

    fn quiet_passed(&self, now: Instant) -> bool {
        self.last_signal.is_none_or(|t| now >= t + self.quiet)
    }

    /// A transaction went through; `in_use` connections of the host are
    /// past their setup. Above the ceiling the limit grows only while the
    /// host uses it: a limit one past the connections that carry mail has
    /// not been tried yet, and must not grow on the others' successes
    /// (a write's several outcomes at once would raise it past the probe
    /// before the probe is answered).
    pub(crate) fn success(&mut self, now: Instant, in_use: usize) {
        self.count_delivery(now);
        if !self.enabled {
            return;
        }
        let below = self.ceiling.is_none_or(|c| self.limit + 1.0 <= c);
        #[allow(clippy::cast_precision_loss)]
        let untried = (in_use as f64) < self.limit.floor();
        if below || (self.quiet_passed(now) && !untried) {
            let top = self.max.map_or(f64::MAX, |m| m as f64);
            self.limit = (self.limit + 1.0 / self.limit).min(top);
            if self.ceiling.is_some_and(|c| self.limit >= c + 1.0) {
                // A whole connection past the old ceiling without a
                // refusal: the host allows more now.
                self.ceiling = None;
                self.quiet = FIRST_QUIET;
            }
        }
    }

    fn count_delivery(&mut self, now: Instant) {
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        if now.duration_since(self.grown) >= Duration::from_secs(1) {
            self.grown = now;
            self.grow_rate(now);
        }
    }

    /// Once a second: the rate climbs back.
    fn grow_rate(&mut self, now: Instant) {
        let Some(rate) = self.rate.filter(|_| self.enabled) else {
            return;
        };
        let below = self.rate_ceiling.is_none_or(|c| rate < c);
        let growth = match (below, self.quiet_passed(now)) {
            (true, _) => RATE_GROWTH,
            (false, true) => RATE_PROBE_GROWTH,
            (false, false) => return,
        };
        let grown = (rate * (1.0 + growth)).max(rate + 1.0);
        let grown = self
            .rate_ceiling
            .filter(|_| below)
            .map_or(grown, |c| grown.min(c));
        // Far above where it was refused without trouble: no limit.
        self.rate = self
            .rate_ceiling
            .is_none_or(|c| grown < 2.0 * c)
            .then_some(grown);
    }

    /// The host said "too many connections" or "rate limited" on a
    /// session with id `conn` while `open` sessions were open; `next` is
    /// the id the next session will get. True when the limit or the rate
    /// changed.
    pub(crate) fn signal(
        &mut self,
        class: ReplyClass,
        reply: String,
        conn: ConnId,
        open: usize,
        next: ConnId,
        now: Instant,
    ) -> bool {
        self.paused_until = Some(now + PAUSE);
        if !self.enabled {
            return false;
        }
        let changed = match class {
            ReplyClass::RateLimited => self.cut_rate(now),
            _ => self.cut_limit(conn, open, next, now),
        };
        if changed {
            self.last_change = Some(Change {
                at: now,
                class: Some(class),
                reply,
            });
        }
        changed
    }

    fn cut_limit(&mut self, conn: ConnId, open: usize, next: ConnId, now: Instant) -> bool {
        if conn < self.cohort {
            return false;
        }
        let open = open.max(1) as f64;
        // Refused again at (or below) the same ceiling: wait longer.
        if self.ceiling.is_some_and(|c| open <= c) {
            self.quiet = (self.quiet * 2).min(MAX_QUIET);
        }
        self.ceiling = Some(open);
        self.limit = (self.limit.min(open) * DECREASE).max(1.0);
        self.last_signal = Some(now);
        self.cohort = next;
        true
    }

    fn cut_rate(&mut self, now: Instant) -> bool {
        if self.last_rate_cut.is_some_and(|t| now < t + PAUSE) {
            return false;
        }
        // What got through in the last second is what the host allows (a
        // burst in less than a second says no more than its count).
        let base = (self.recent.len() as f64).max(1.0);
        if self.rate_ceiling.is_some_and(|c| base <= c) {
            self.quiet = (self.quiet * 2).min(MAX_QUIET);
        }
        self.rate_ceiling = Some((base * RATE_CEILING).max(1.0));
        self.rate = Some((base * RATE_DECREASE).max(1.0));
        self.tokens = 0.0;
        self.refilled = now;
        self.last_rate_cut = Some(now);
        self.last_signal = Some(now);
        true
    }

    /// Gives back a token taken for a batch that was not there.
    pub(crate) fn refund(&mut self) {
        if self.rate().is_some() {
            self.tokens += 1.0;
        }
    }

    /// Takes a token for one batch, or says when the next one comes.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), Instant> {
        let Some(rate) = self.rate() else {
            return Ok(());
        };
        let burst = (rate / 10.0).max(1.0);
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(now + Duration::from_secs_f64((1.0 - self.tokens) / rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_falls_once_per_cohort_and_climbs_back_to_its_ceiling() {
        let now = Instant::now();
        let mut a = Adaptive::new(true, Some(20), now);
        for _ in 0..40 {
            a.success(now, 4);
        }
        let before = a.limit().unwrap_or(0);
        assert!(before >= 6, "slow start grows: {before}");
        a.signal(ReplyClass::TooManyConnections, "421".into(), 10, 4, 11, now);
        assert_eq!(a.limit(), Some(3), "three quarters of the 4 open");
        // The other sessions of the same cohort do not cut again.
        a.signal(ReplyClass::TooManyConnections, "421".into(), 9, 3, 11, now);
        assert_eq!(a.limit(), Some(3));
        let mut seen = vec![3];
        for _ in 0..20 {
            a.success(now, 3);
            seen.push(a.limit().unwrap_or(0));
        }
        // Refused at 4: it climbs back to 3 and waits there.
        assert!(seen.iter().all(|l| *l == 3), "{seen:?}");
        assert!(a.next_probe().is_some(), "waits below the ceiling");
        let later = now + Duration::from_secs(6);
        for _ in 0..10 {
            a.success(later, 3);
        }
        assert_eq!(a.limit(), Some(4), "above the ceiling once it was quiet");
        // The fourth connection is not in use yet: the others' successes
        // do not take the limit past it.
        for _ in 0..10 {
            a.success(later, 3);
        }
        assert_eq!(a.limit(), Some(4), "grew past a limit not yet tried");
        assert!(a.next_probe().is_some(), "the ceiling still stands");
        // Once it carries mail without a refusal, the host allows more.
        for _ in 0..10 {
            a.success(later, 4);
        }
        assert!(a.limit() >= Some(5));
        assert!(a.next_probe().is_none(), "the ceiling is gone");
    }

    #[test]
    fn the_rate_falls_and_climbs_back_gradually() {
        let start = Instant::now();
        let mut a = Adaptive::new(true, None, start);
        for i in 0..100u32 {
            a.success(start + Duration::from_millis(u64::from(i) * 10), 1);
        }
        let t = start + Duration::from_millis(995);
        a.signal(ReplyClass::RateLimited, "451 4.7.28".into(), 1, 1, 2, t);
        let cut = a.rate().unwrap_or(0.0);
        assert!((80.0..=90.0).contains(&cut), "{cut}");
        let mut t = t;
        let mut rates = Vec::new();
        for _ in 0..5 {
            t += Duration::from_millis(1001);
            a.success(t, 1);
            rates.push(a.rate().unwrap_or(0.0));
        }
        // Up to just below where it was refused, a wait there, then a probe.
        assert!(rates.windows(2).all(|w| w[1] >= w[0]), "{rates:?}");
        assert!(rates[0] > cut && rates.contains(&95.0), "{rates:?}");
        assert!(rates.iter().all(|r| *r <= 100.0), "{rates:?}");
        assert!(a.take(t).is_ok());
    }

    #[test]
    fn off_means_the_configured_limit() {
        let now = Instant::now();
        let mut a = Adaptive::new(false, Some(7), now);
        a.signal(ReplyClass::TooManyConnections, "421".into(), 1, 5, 2, now);
        assert_eq!(a.limit(), Some(7));
        assert!(a.paused_until().is_some());
    }
}
