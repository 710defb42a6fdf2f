//! A domain's options, read once from the configuration when its queue
//! is made.

use std::sync::Arc;
use std::time::Duration;

use postern_conf::{Config, Directive, Effective, MaxRetries, Origin, Throttle, Value};

use super::QueueKey;

/// The options of a queue, read once from the configuration. Queues with
/// the same options share one copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) batch_size: usize,
    /// `Max_Queued_In_Memory`: ready and delayed batches held in memory.
    pub(crate) in_memory: usize,
    pub(crate) max_deliveries: u64,
    /// `Outbound_Messages_Per_Write`.
    pub(crate) per_write: usize,
    pub(crate) idle: Duration,
    pub(crate) host_failure_retry: Duration,
    pub(crate) failures_to_delay: u32,
    pub(crate) retry_interval: Duration,
    pub(crate) max_retry_interval: Duration,
    /// `Max_Retries`; `None` for `auto` (expiry only).
    pub(crate) max_retries: Option<u32>,
    pub(crate) expiration: Duration,
    pub(crate) bounces: bool,
    pub(crate) suspended: bool,
    /// `Adaptive_Delivery`.
    pub(crate) adaptive: bool,
    /// The throttles, each with the name of the setting it comes from:
    /// queues that fall back to the same setting share one bucket.
    pub(crate) message_throttle: Option<(Arc<str>, Throttle)>,
    pub(crate) connection_throttle: Option<(Arc<str>, Throttle)>,
}

/// A throttle that limits something, named by the directive and the scope
/// that sets it.
fn throttle(eff: &Effective<'_>, d: Directive) -> Option<(Arc<str>, Throttle)> {
    let resolved = eff.get(d)?;
    let Value::Throttle(t) = resolved.value else {
        return None;
    };
    if t.is_unlimited() {
        return None;
    }
    // The same on every node that reads the same configuration, wherever
    // its file lies: the name of a cluster-wide bucket.
    let name = match &resolved.origin {
        Origin::Set { scope, .. } => format!("{d} {scope}"),
        Origin::Default => format!("{d} default"),
    };
    Some((Arc::from(name), *t))
}

impl Limits {
    /// The queue's options; defaults when the binding is not configured.
    pub(crate) fn of(config: &Config, key: &QueueKey) -> Self {
        let Some(eff) = config.effective(&key.binding, &key.domain) else {
            return Self::of(
                config,
                &QueueKey {
                    binding: "default".into(),
                    domain: key.domain.clone(),
                },
            );
        };
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Self {
            max_connections: size(eff.count(Directive::MaxOutboundConnections).unwrap_or(32)),
            batch_size: size(eff.count(Directive::MaxRecipientsPerBatch).unwrap_or(100)),
            in_memory: size(eff.count(Directive::MaxQueuedInMemory).unwrap_or(2000)),
            max_deliveries: eff
                .count(Directive::MaxDeliveriesPerConnection)
                .unwrap_or(0),
            per_write: size(eff.count(Directive::OutboundMessagesPerWrite).unwrap_or(4)),
            idle: eff
                .seconds(Directive::IdleTimeout)
                .unwrap_or(Duration::from_secs(5)),
            host_failure_retry: eff
                .seconds(Directive::HostFailureRetry)
                .unwrap_or(Duration::from_secs(120)),
            failures_to_delay: u32::try_from(eff.count(Directive::MxFailuresToDelay).unwrap_or(50))
                .unwrap_or(u32::MAX),
            retry_interval: eff
                .seconds(Directive::RetryInterval)
                .unwrap_or(Duration::from_secs(1200)),
            max_retry_interval: eff
                .seconds(Directive::MaxRetryInterval)
                .unwrap_or(Duration::from_secs(43_200)),
            max_retries: eff.pick(Directive::MaxRetries, |v| match v {
                Value::MaxRetries(MaxRetries::Limit(n)) => Some(*n),
                _ => None,
            }),
            expiration: eff
                .seconds(Directive::MessageExpiration)
                .unwrap_or(Duration::from_secs(86_400)),
            bounces: eff.flag(Directive::GenerateBounces).unwrap_or(true),
            suspended: eff.flag(Directive::SuspendDelivery).unwrap_or(false),
            adaptive: eff.flag(Directive::AdaptiveDelivery).unwrap_or(true),
            message_throttle: throttle(&eff, Directive::OutboundThrottleMessages),
            connection_throttle: throttle(&eff, Directive::OutboundThrottleConnections),
        }
    }

    /// The wait before attempt `attempts + 1`: `Retry_Interval` doubled per
    /// attempt made, at most `Max_Retry_Interval`.
    pub(crate) fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.retry_interval
            .saturating_mul(1 << doublings)
            .min(self.max_retry_interval)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let config = Config::from_text(
            "Retry_Interval = 10 Max_Retry_Interval = 50",
            std::path::Path::new("t.conf"),
        )
        .unwrap();
        let key = QueueKey {
            binding: "default".into(),
            domain: "example.com".into(),
        };
        let limits = Limits::of(&config, &key);
        let secs: Vec<u64> = (1..=5).map(|n| limits.backoff(n).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 50, 50]);
    }
}
