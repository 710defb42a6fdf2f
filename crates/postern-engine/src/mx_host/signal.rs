//! Replies that speak about the host's load, not about the message: a 421
//! at any stage, or a transient reply that says "too many connections" or
//! "rate limited". The host answered, so it is not down; the batch goes
//! back without an attempt counted, and the host slows down.

use postern_smtp::{EnhancedStatus, Reply};

/// `4.7.28`: the sender's rate is too high (a code large providers use).
const RATE_LIMITED: EnhancedStatus = EnhancedStatus::new(4, 7, 28);

/// Phrases of transient replies that mean "slow down".
const PHRASES: [&str; 5] = [
    "too many connections",
    "too many concurrent",
    "rate limit",
    "rate-limit",
    "throttl",
];

/// True when the reply asks the sender to slow down.
pub(crate) fn asks_to_slow_down(reply: &Reply) -> bool {
    if reply.code == 421 || reply.status == Some(RATE_LIMITED) {
        return true;
    }
    if !(400..500).contains(&reply.code) {
        return false;
    }
    let text = reply.text().to_ascii_lowercase();
    PHRASES.iter().any(|p| text.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_replies_are_signals_and_others_are_not() {
        let r = |code, s: (u8, u8, u8), t: &str| Reply::with_status(code, s, t);
        assert!(asks_to_slow_down(&r(421, (4, 7, 0), "try again later")));
        assert!(asks_to_slow_down(&r(451, (4, 7, 28), "slow down")));
        assert!(asks_to_slow_down(&r(
            450,
            (4, 2, 1),
            "Too many connections from your IP"
        )));
        assert!(asks_to_slow_down(&r(452, (4, 3, 0), "Rate limit exceeded")));
        assert!(!asks_to_slow_down(&r(451, (4, 3, 0), "temporary failure")));
        assert!(!asks_to_slow_down(&r(
            550,
            (5, 7, 1),
            "rate limit: blocked"
        )));
        assert!(!asks_to_slow_down(&r(250, (2, 0, 0), "ok")));
    }
}
