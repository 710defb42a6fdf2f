//! The daemon's counts: each recorded once here, into the metrics
//! (`postern_metrics`) and into totals that the admin API's summary shows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use postern_conf::Config;
use postern_metrics as m;
use postern_smtp::client::Outcome;

/// Totals since start.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) received: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) transient: AtomicU64,
    pub(crate) permanent: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) bounces: AtomicU64,
}

/// Why the listener refused something (the `reason` label).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rejection {
    RelayingDenied,
    Callout,
    UnknownBinding,
    SpoolFull,
    SpoolError,
}

impl Rejection {
    const ALL: [Rejection; 5] = [
        Rejection::RelayingDenied,
        Rejection::Callout,
        Rejection::UnknownBinding,
        Rejection::SpoolFull,
        Rejection::SpoolError,
    ];

    fn label(self) -> &'static str {
        match self {
            Rejection::RelayingDenied => "relaying_denied",
            Rejection::Callout => "callout",
            Rejection::UnknownBinding => "unknown_binding",
            Rejection::SpoolFull => "spool_full",
            Rejection::SpoolError => "spool_error",
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

impl Totals {
    /// Makes every counter exist at zero, so that dashboards see a value
    /// before the first event of its kind.
    pub(crate) fn register(config: &Config) {
        let bindings = std::iter::once("default").chain(config.bindings.keys().map(String::as_str));
        for binding in bindings {
            for name in BY_BINDING {
                metrics::counter!(name, "binding" => binding.to_owned()).increment(0);
            }
        }
        for r in Rejection::ALL {
            metrics::counter!(m::REJECTIONS, "reason" => r.label()).increment(0);
        }
        for kind in ["messages", "connections"] {
            metrics::counter!(m::THROTTLE_DELAYS, "kind" => kind).increment(0);
        }
        for result in ["ok", "nodata", "nxdomain", "failure"] {
            metrics::counter!(m::DNS_LOOKUPS, "result" => result).increment(0);
        }
        metrics::counter!(m::SESSIONS).increment(0);
        metrics::counter!(m::CONNECTION_FAILURES).increment(0);
    }

    pub(crate) fn received(&self, binding: &str) {
        self.received.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::MESSAGES_RECEIVED, "binding" => binding.to_owned()).increment(1);
    }

    pub(crate) fn session() {
        metrics::counter!(m::SESSIONS).increment(1);
    }

    pub(crate) fn rejected(reason: Rejection) {
        metrics::counter!(m::REJECTIONS, "reason" => reason.label()).increment(1);
    }

    /// One recipient's outcome; `age` is the time since reception.
    pub(crate) fn outcome(&self, binding: &str, outcome: &Outcome, expired: bool, age: Duration) {
        let (total, name) = match outcome {
            Outcome::Delivered(_) => {
                metrics::histogram!(m::DELIVERY_LATENCY).record(age.as_secs_f64());
                (&self.delivered, m::MESSAGES_DELIVERED)
            }
            Outcome::Transient(_) => (&self.transient, m::TRANSIENT_FAILURES),
            Outcome::Permanent(_) if expired => (&self.expired, m::MESSAGES_EXPIRED),
            Outcome::Permanent(_) => (&self.permanent, m::PERMANENT_FAILURES),
        };
        total.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(name, "binding" => binding.to_owned()).increment(1);
    }

    pub(crate) fn bounce(&self, binding: &str) {
        self.bounces.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::BOUNCES, "binding" => binding.to_owned()).increment(1);
    }
}
