//! The one catalogue of Postern's metrics.
//!
//! Every metric is named `postern_*` and declared here once, in
//! [`CATALOGUE`], with its kind, help text, labels and (for histograms)
//! buckets. Code records through the name constants below. [`install`]
//! registers the Prometheus recorder with the catalogue's help and buckets.
//!
//! Labels are bounded: bindings and event loops come from the
//! configuration; `host` is capped to the busiest hosts
//! (`Metrics_Host_Labels`, the rest summed as `other`); `result`,
//! `reason`, `state` and `kind` take a fixed set of values.
#![warn(missing_docs)]

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution, in buckets.
    Histogram,
}

/// One metric of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Its name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Help text, shown by Prometheus.
    pub help: &'static str,
    /// Its labels (each with a bounded set of values).
    pub labels: &'static [&'static str],
    /// Histogram bucket bounds.
    pub buckets: &'static [f64],
}

macro_rules! catalogue {
    ($($konst:ident $name:literal $kind:ident [$($label:literal)*] [$($b:literal)*] $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $konst: &str = $name;
        )*
        /// Every metric Postern exports.
        pub const CATALOGUE: &[Spec] = &[
            $(Spec { name: $name, kind: Kind::$kind, help: $help, labels: &[$($label),*], buckets: &[$($b),*] },)*
        ];
    };
}

catalogue! {
    MESSAGES_RECEIVED "postern_messages_received_total" Counter ["binding"] []
        "Messages accepted by the listener (answered 250), by binding.";
    MESSAGES_DELIVERED "postern_messages_delivered_total" Counter ["binding"] []
        "Recipients delivered (accepted by the destination), by binding.";
    TRANSIENT_FAILURES "postern_transient_failures_total" Counter ["binding"] []
        "Delivery attempts that failed for now (the recipient is retried), by binding.";
    PERMANENT_FAILURES "postern_permanent_failures_total" Counter ["binding"] []
        "Recipients failed for good (5xx, Null MX, NXDOMAIN, retries exhausted), by binding.";
    MESSAGES_EXPIRED "postern_messages_expired_total" Counter ["binding"] []
        "Recipients failed because Message_Expiration passed, by binding.";
    BOUNCES "postern_bounces_generated_total" Counter ["binding"] []
        "Bounces (RFC 3464 reports) queued to senders, by binding.";
    QUEUE "postern_queue_messages" Gauge ["state"] []
        "Queued batches, by state: active (ready now), delayed (waiting for a retry) or spooled (ready entries a queue left in the spool beyond Max_Queued_In_Memory).";
    CONNECTIONS "postern_outbound_connections" Gauge ["event_loop"] []
        "Outbound connections open or opening, by delivery event loop.";
    HOST_CONNECTIONS "postern_host_connections" Gauge ["host"] []
        "Outbound connections per destination address and port (the busiest hosts; the rest as other).";
    HOST_LIMIT "postern_host_connection_limit" Gauge ["host"] []
        "The Host stanza's connection limit of each host shown (absent: unlimited).";
    HOST_REACHABLE "postern_host_reachable" Gauge ["host"] []
        "1 when the host may be tried, 0 while it is skipped after a failure.";
    CONNECTION_FAILURES "postern_connection_failures_total" Counter [] []
        "Outbound connections that failed before or during a transaction.";
    DELIVERY_LATENCY "postern_delivery_latency_seconds" Histogram [] [0.1 0.5 1.0 5.0 15.0 60.0 300.0 900.0 3600.0 14400.0 86400.0]
        "Time from reception to delivery of a recipient.";
    TRANSACTION "postern_smtp_transaction_seconds" Histogram [] [0.005 0.01 0.025 0.05 0.1 0.25 0.5 1.0 2.5 5.0 10.0 30.0]
        "Duration of one outbound SMTP/LMTP transaction (MAIL to the final reply).";
    DNS_LOOKUPS "postern_dns_lookups_total" Counter ["result"] []
        "DNS queries sent (not cache hits), by result: ok, nodata, nxdomain, failure.";
    DNS_SECONDS "postern_dns_lookup_seconds" Histogram [] [0.001 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1.0 5.0]
        "Duration of a DNS query.";
    SPOOL_FSYNC "postern_spool_fsync_seconds" Histogram [] [0.0001 0.00025 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.5]
        "Duration of one spool batch write with its fsync.";
    SPOOL_BATCH "postern_spool_batch_size" Histogram [] [1.0 2.0 5.0 10.0 20.0 50.0 100.0 500.0 1000.0 8192.0]
        "Requests (messages and outcomes) made durable by one fsync.";
    SPOOL_HEALTHY "postern_spool_healthy" Gauge [] []
        "1 while the spool takes new mail; 0 while the disk is (nearly) full or outcomes wait for space, and the listener refuses new mail.";
    SPOOL_PENDING "postern_spool_pending_records" Gauge [] []
        "Outcome records (done, attempted) held in memory until the disk has room for them.";
    SPOOL_MESSAGES "postern_spool_messages" Gauge [] []
        "Messages in the spool with recipients left.";
    SPOOL_SEGMENTS "postern_spool_segments" Gauge [] []
        "Segment files in the spool.";
    SPOOL_DISK_BYTES "postern_spool_disk_bytes" Gauge [] []
        "Bytes of records in the spool's segment files (room written ahead and not yet used, and spares, are not counted).";
    SPOOL_CACHED_BYTES "postern_spool_cached_body_bytes" Gauge [] []
        "Bytes of message bodies held in memory for delivery.";
    SPOOL_BODY_READS "postern_spool_body_reads_total" Counter ["source"] []
        "Bodies fetched for delivery, by source: cache or disk.";
    SPOOL_SEGMENTS_STARTED "postern_spool_segments_started_total" Counter ["start"] []
        "Segments started, by how: `reused` (a spare, a reclaimed segment kept for it: see `Spool_Spare_Segments`), `zero_filled` (made ahead: see `Spool_Zero_Fill`), or `empty` (neither was there: no reclaimed segment yet, the zero-filled one not ready, or the disk short of room).";
    SPOOL_RECLAIMED "postern_spool_segments_reclaimed_total" Counter [] []
        "Segments retired (kept as spares or deleted) after their live messages were copied forward.";
    SPOOL_COPIED_BYTES "postern_spool_reclaim_copied_bytes_total" Counter [] []
        "Bytes copied forward (live messages and tombstones) to reclaim segments.";
    SPOOL_DAMAGED "postern_spool_damaged_records_total" Counter [] []
        "Damaged stretches skipped when the spool was read back (torn tails not counted).";
    SESSIONS "postern_listener_sessions_total" Counter [] []
        "SMTP sessions accepted by the listener.";
    REJECTIONS "postern_listener_rejections_total" Counter ["reason"] []
        "Recipients, messages or transactions refused by the listener, by reason: relaying_denied, callout, unknown_binding, spool_full, spool_error, spool_unhealthy (MAIL refused while the disk is full), backpressure (MAIL refused while delivery is far behind), too_many_sessions and client_limit (connections refused with 421 beyond Max_Inbound_Sessions or Max_Sessions_Per_Client).";
    LISTENER_DELAYED "postern_listener_delayed_replies_total" Counter [] []
        "Replies to MAIL delayed because delivery is behind (Max_Ready_Batches).";
    BACKPRESSURE "postern_listener_backpressure" Gauge [] []
        "How far delivery is behind, as the listener sees it: ready mail over Max_Ready_Batches (delays from 0.5, refusals at 1).";
    THROTTLE_DELAYS "postern_throttle_delays_total" Counter ["kind"] []
        "Times a throttle made a queue wait, by kind: messages or connections.";
    REPLIES "postern_replies_total" Counter ["class"] []
        "Replies to delivery attempts (and connection failures standing for one), by class: delivered, invalid_recipient, rate_limited, too_many_connections, ...";
    ADAPTIVE_ADJUSTMENTS "postern_adaptive_adjustments_total" Counter ["reason"] []
        "Times a host asked to slow down (a reply classed too_many_connections or rate_limited), by that class.";
    HOST_EFFECTIVE_LIMIT "postern_host_effective_connection_limit" Gauge ["host"] []
        "The connection limit the adaptive loop holds each host shown to (at most its Host limit).";
    HOST_EFFECTIVE_RATE "postern_host_effective_message_rate" Gauge ["host"] []
        "The message rate (per second) the adaptive loop holds each host shown to; 0 when not limited.";
    UPTIME "postern_uptime_seconds" Gauge [] []
        "Seconds since the daemon started.";
    SCANS "postern_scans_total" Counter ["verdict"] []
        "Messages scanned by content filters (Milter stanzas), by verdict: accept, quarantine (a filter asked for it), reject, tempfail, discard, failed (a filter could not be asked and On_Failure tempfailed the message).";
    SPAM_LEVELS "postern_spam_levels_total" Counter ["level"] []
        "Scanned messages that reached a spam level (not those a filter refused, tempfailed or discarded), by level: none, low, medium, high, unscored.";
    MILTER_FAILURES "postern_milter_failures_total" Counter [] []
        "Content filter sessions that failed (refused, timed out, protocol error); On_Failure decided.";
    MTA_STS_FETCHES "postern_mta_sts_fetches_total" Counter ["result"] []
        "MTA-STS policy fetches (https://mta-sts.DOMAIN/.well-known/mta-sts.txt), by result: ok, failed.";
    MTA_STS_POLICY_FAILURES "postern_mta_sts_policy_failures_total" Counter ["mode"] []
        "MTA-STS policy failures, by mode: enforce (a routing table built while the policy did not name every MX host; those hosts left out), testing (such a table, or a session whose TLS enforce would refuse; used, and logged).";
    DKIM_SIGNATURES "postern_dkim_signatures_total" Counter ["algorithm"] []
        "DKIM signatures made at reception, by algorithm: rsa-sha256, ed25519-sha256.";
    DKIM_FAILURES "postern_dkim_failures_total" Counter [] []
        "Messages a DKIM_Sign stanza applied to that could not be signed (they go unsigned, logged).";
    CLUSTER_REDIS_UP "postern_cluster_redis_up" Gauge [] []
        "1 while this node shares its limits through Redis; 0 while it falls back to local shares (only with a Cluster stanza).";
    CLUSTER_NODES "postern_cluster_nodes" Gauge [] []
        "Live nodes seen in Redis at the last heartbeat: the divisor of the local shares.";
    CLUSTER_LEASES "postern_cluster_leases" Gauge [] []
        "Connection leases this node holds (one per connection to a host with a Host limit).";
    CLUSTER_LEASE_SECONDS "postern_cluster_lease_seconds" Histogram [] [0.0002 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25]
        "Time to take a connection lease from Redis, granted or refused.";
    CLUSTER_LEASE_REFUSALS "postern_cluster_lease_refusals_total" Counter [] []
        "Leases Redis refused because the host's limit was reached across the cluster.";
    CLUSTER_REDIS_CALLS "postern_cluster_redis_calls_total" Counter ["op"] []
        "Calls to Redis, by operation: acquire, release, heartbeat, take, signal, status, connect.";
    CLUSTER_REDIS_ERRORS "postern_cluster_redis_errors_total" Counter ["op"] []
        "Calls to Redis that failed or took longer than their deadline, by operation.";
    CLUSTER_FALLBACKS "postern_cluster_fallbacks_total" Counter [] []
        "Times this node lost Redis and fell back to local shares of its limits.";
}

/// Installs the Prometheus recorder (with the catalogue's buckets) as the
/// process's recorder, registers every help text, and returns the handle
/// that renders `/metrics`.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let mut builder = PrometheusBuilder::new();
    for spec in CATALOGUE.iter().filter(|s| s.kind == Kind::Histogram) {
        builder =
            builder.set_buckets_for_metric(Matcher::Full(spec.name.to_owned()), spec.buckets)?;
    }
    let handle = builder.install_recorder()?;
    for spec in CATALOGUE {
        match spec.kind {
            Kind::Counter => metrics::describe_counter!(spec.name, spec.help),
            Kind::Gauge => metrics::describe_gauge!(spec.name, spec.help),
            Kind::Histogram => metrics::describe_histogram!(spec.name, spec.help),
        }
    }
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_postern_named_once_with_help() {
        let mut names: Vec<&str> = CATALOGUE.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len(), "a name is declared twice");
        for s in CATALOGUE {
            assert!(s.name.starts_with("postern_"), "{}", s.name);
            assert!(!s.help.is_empty());
            assert_eq!(
                s.kind == Kind::Counter,
                s.name.ends_with("_total"),
                "{}",
                s.name
            );
            assert_eq!(
                s.kind == Kind::Histogram,
                !s.buckets.is_empty(),
                "{}",
                s.name
            );
        }
    }
}
