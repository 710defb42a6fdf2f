//! The daemon's counts: each recorded once here, into the metrics
//! (`postern_metrics`) and into totals that the admin API's summary shows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Histogram};
use postern_conf::Config;
use postern_metrics as m;
use postern_smtp::client::Outcome;

/// Totals since start, and the counters of each binding.
#[derive(Debug)]
pub(crate) struct Totals {
    pub(crate) received: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) transient: AtomicU64,
    pub(crate) permanent: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) bounces: AtomicU64,
    /// Handles made once per configured binding (in `BY_BINDING` order),
    /// so that counting a message costs no lookup in the registry.
    by_binding: HashMap<String, [Counter; 6]>,
    latency: Histogram,
}

/// Why the listener refused something (the `reason` label).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rejection {
    RelayingDenied,
    Callout,
    UnknownBinding,
    SpoolFull,
    SpoolError,
    SpoolUnhealthy,
    Backpressure,
    TooManySessions,
    ClientLimit,
}

impl Rejection {
    const ALL: [Rejection; 9] = [
        Rejection::RelayingDenied,
        Rejection::Callout,
        Rejection::UnknownBinding,
        Rejection::SpoolFull,
        Rejection::SpoolError,
        Rejection::SpoolUnhealthy,
        Rejection::Backpressure,
        Rejection::TooManySessions,
        Rejection::ClientLimit,
    ];

    fn label(self) -> &'static str {
        match self {
            Rejection::RelayingDenied => "relaying_denied",
            Rejection::Callout => "callout",
            Rejection::UnknownBinding => "unknown_binding",
            Rejection::SpoolFull => "spool_full",
            Rejection::SpoolError => "spool_error",
            Rejection::SpoolUnhealthy => "spool_unhealthy",
            Rejection::Backpressure => "backpressure",
            Rejection::TooManySessions => "too_many_sessions",
            Rejection::ClientLimit => "client_limit",
        }
    }
}

const BY_BINDING: [&str; 6] = [
    m::MESSAGES_RECEIVED,
    m::MESSAGES_DELIVERED,
    m::TRANSIENT_FAILURES,
    m::PERMANENT_FAILURES,
    m::MESSAGES_EXPIRED,
    m::BOUNCES,
];

fn binding_counters(binding: &str) -> [Counter; 6] {
    BY_BINDING.map(|name| metrics::counter!(name, "binding" => binding.to_owned()))
}

impl Totals {
    /// Makes every counter exist at zero, so that dashboards see a value
    /// before the first event of its kind, and keeps each binding's
    /// handles.
    pub(crate) fn new(config: &Config) -> Self {
        let bindings = std::iter::once("default").chain(config.bindings.keys().map(String::as_str));
        let by_binding = bindings
            .map(|b| {
                let counters = binding_counters(b);
                counters.iter().for_each(|c| c.increment(0));
                (b.to_owned(), counters)
            })
            .collect();
        for r in Rejection::ALL {
            metrics::counter!(m::REJECTIONS, "reason" => r.label()).increment(0);
        }
        for kind in ["messages", "connections"] {
            metrics::counter!(m::THROTTLE_DELAYS, "kind" => kind).increment(0);
        }
        for result in ["ok", "nodata", "nxdomain", "failure"] {
            metrics::counter!(m::DNS_LOOKUPS, "result" => result).increment(0);
        }
        for class in postern_conf::ReplyClass::ALL {
            metrics::counter!(m::REPLIES, "class" => class.as_str()).increment(0);
        }
        for reason in ["too_many_connections", "rate_limited"] {
            metrics::counter!(m::ADAPTIVE_ADJUSTMENTS, "reason" => reason).increment(0);
        }
        for result in ["ok", "failed"] {
            metrics::counter!(m::MTA_STS_FETCHES, "result" => result).increment(0);
        }
        for verdict in [
            "accept",
            "quarantine",
            "reject",
            "tempfail",
            "discard",
            "failed",
        ] {
            metrics::counter!(m::SCANS, "verdict" => verdict).increment(0);
        }
        for level in super::scanning::Level::ALL {
            metrics::counter!(m::SPAM_LEVELS, "level" => level.as_str()).increment(0);
        }
        metrics::counter!(m::MILTER_FAILURES).increment(0);
        for mode in ["enforce", "testing"] {
            metrics::counter!(m::MTA_STS_POLICY_FAILURES, "mode" => mode).increment(0);
        }
        metrics::counter!(m::SESSIONS).increment(0);
        metrics::counter!(m::CONNECTION_FAILURES).increment(0);
        let zero = AtomicU64::default;
        Self {
            received: zero(),
            delivered: zero(),
            transient: zero(),
            permanent: zero(),
            expired: zero(),
            bounces: zero(),
            by_binding,
            latency: metrics::histogram!(m::DELIVERY_LATENCY),
        }
    }

    /// Adds one to the binding's counter `which` (an index of `BY_BINDING`).
    fn count(&self, binding: &str, which: usize) {
        match self.by_binding.get(binding).and_then(|c| c.get(which)) {
            Some(c) => c.increment(1),
            None => {
                let name = BY_BINDING
                    .get(which)
                    .copied()
                    .unwrap_or(m::MESSAGES_RECEIVED);
                metrics::counter!(name, "binding" => binding.to_owned()).increment(1);
            }
        }
    }

    pub(crate) fn received(&self, binding: &str) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.count(binding, 0);
    }

    pub(crate) fn session() {
        metrics::counter!(m::SESSIONS).increment(1);
    }

    pub(crate) fn rejected(reason: Rejection) {
        metrics::counter!(m::REJECTIONS, "reason" => reason.label()).increment(1);
    }

    /// One recipient's outcome; `age` is the time since reception.
    pub(crate) fn outcome(&self, binding: &str, outcome: &Outcome, expired: bool, age: Duration) {
        let (total, which) = match outcome {
            Outcome::Delivered(_) => {
                self.latency.record(age.as_secs_f64());
                (&self.delivered, 1)
            }
            Outcome::Transient(_) => (&self.transient, 2),
            Outcome::Permanent(_) if expired => (&self.expired, 4),
            Outcome::Permanent(_) => (&self.permanent, 3),
        };
        total.fetch_add(1, Ordering::Relaxed);
        self.count(binding, which);
    }

    pub(crate) fn bounce(&self, binding: &str) {
        self.bounces.fetch_add(1, Ordering::Relaxed);
        self.count(binding, 5);
    }
}
