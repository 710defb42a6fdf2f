//! [`Dns`]: the resolver and the classification of its answers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as ProtoDnsError, NetError};
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use postern_conf::{Config, Directive, Value};

use crate::DnsError;
use crate::cache::{Cache, CachePolicy, Fetched, Freshness};
use crate::mta_sts::Policies;

/// A query's deadline when the `Resolver` stanza sets no `Timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// One mail exchanger of a domain.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MxHost {
    /// The MX preference (lower is tried first).
    pub preference: u16,
    /// The exchanger's host name, lower-cased, without the trailing dot.
    pub name: String,
}

/// A domain's mail exchangers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mx {
    /// MX records, sorted by preference (then name, for a stable order).
    Hosts(Vec<MxHost>),
    /// No MX records: the domain's own A/AAAA records are its mail
    /// exchanger (RFC 5321 section 5.1, "implicit MX").
    Implicit,
}

/// A resolver for delivery, with its answer cache. Clones share the cache.
/// Create one per event loop: a resolver shared across runtimes can stall.
#[derive(Debug, Clone)]
pub struct Dns {
    resolver: TokioResolver,
    timeout: Duration,
    policy: CachePolicy,
    mx_cache: Arc<Cache<Mx>>,
    ip_cache: Arc<Cache<Vec<IpAddr>>>,
    txt_cache: Arc<Cache<Vec<String>>>,
    policies: Arc<Policies>,
}

/// Absolute form of `name`, so that no search domain is ever appended.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

fn display_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The lowest TTL among an answer's records (the answer lives that long).
fn min_ttl(records: &[Record]) -> u32 {
    records.iter().map(|r| r.ttl).min().unwrap_or(0)
}

/// Counts a query and its duration in the metrics.
fn observe<T>(started: std::time::Instant, fetched: &Fetched<T>) {
    let result = match &fetched.value {
        Ok(_) => "ok",
        Err(DnsError::NxDomain { .. }) => "nxdomain",
        Err(DnsError::NullMx { .. } | DnsError::NoAddress { .. }) => "nodata",
        Err(_) => "failure",
    };
    metrics::counter!(postern_metrics::DNS_LOOKUPS, "result" => result).increment(1);
    metrics::histogram!(postern_metrics::DNS_SECONDS).record(started.elapsed().as_secs_f64());
}

/// The negative TTL of an empty answer (from its SOA), if it has one.
fn negative_ttl(e: &NetError) -> u32 {
    match e {
        NetError::Dns(ProtoDnsError::NoRecordsFound(nr)) => nr.negative_ttl.unwrap_or(0),
        _ => 0,
    }
}

impl Dns {
    /// A resolver for the configuration's `Resolver` stanza: its
    /// `Nameservers` (or the system's when unset) and its `Timeout`.
    pub fn from_config(config: &Config) -> Result<Self, DnsError> {
        let servers = match config
            .resolver
            .get(Directive::Nameservers)
            .map(|s| &s.value)
        {
            Some(Value::SocketAddrs(list)) => list.clone(),
            _ => Vec::new(),
        };
        let timeout = match config
            .resolver
            .get(Directive::ResolverTimeout)
            .map(|s| &s.value)
        {
            Some(Value::Seconds(n)) => Duration::from_secs(*n),
            _ => DEFAULT_TIMEOUT,
        };
        Self::new(&servers, timeout)
    }

    /// A resolver asking `servers` (the system's when empty), giving up on
    /// a query after `timeout`.
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> Result<Self, DnsError> {
        let config_error = |e: NetError| DnsError::Config(e.to_string());
        let mut builder = if servers.is_empty() {
            Resolver::builder_tokio().map_err(config_error)?
        } else {
            let name_servers = servers
                .iter()
                .map(|addr| {
                    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                    for c in &mut ns.connections {
                        c.port = addr.port();
                    }
                    ns
                })
                .collect();
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                TokioRuntimeProvider::default(),
            )
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = timeout;
        opts.attempts = 1;
        opts.ndots = 0;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // Destinations come from DNS only: a local hosts file must not
        // redirect mail.
        opts.use_hosts_file = ResolveHosts::Never;
        // This crate's cache is the only one, so that TTLs, negative
        // answers and shared queries follow one policy.
        opts.cache_size = 0;
        let resolver = builder.build().map_err(config_error)?;
        Ok(Self {
            resolver,
            timeout,
            policy: CachePolicy::default(),
            mx_cache: Arc::new(Cache::new()),
            ip_cache: Arc::new(Cache::new()),
            txt_cache: Arc::new(Cache::new()),
            policies: Arc::new(Policies::default()),
        })
    }

    /// How long answers are kept.
    pub fn policy(&self) -> CachePolicy {
        self.policy
    }

    /// The MTA-STS policies fetched so far (shared by clones).
    pub(crate) fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The same resolver with another cache policy (and an empty cache).
    #[must_use]
    pub fn with_cache_policy(self, policy: CachePolicy) -> Self {
        Self {
            policy,
            mx_cache: Arc::new(Cache::new()),
            ip_cache: Arc::new(Cache::new()),
            txt_cache: Arc::new(Cache::new()),
            policies: Arc::new(Policies::default()),
            ..self
        }
    }

    /// A failed query as an answer: NXDOMAIN is a (cached) permanent
    /// error, "no records" is `Ok(empty)` cached for the negative TTL, and
    /// anything else a transient error that is not cached.
    fn failed<T>(&self, name: &str, e: &NetError, empty: T) -> Fetched<T> {
        let name = display_name(name);
        let negative = self.policy.keep(negative_ttl(e), true);
        if e.is_nx_domain() {
            return Fetched::new(Err(DnsError::NxDomain { name }), negative);
        }
        if e.is_no_records_found() {
            return Fetched::new(Ok(empty), negative);
        }
        if matches!(e, NetError::Timeout) {
            return Fetched::transient(DnsError::Timeout {
                name,
                timeout: self.timeout,
            });
        }
        Fetched::transient(DnsError::ServerFailure {
            name,
            detail: e.to_string(),
        })
    }

    /// The domain's mail exchangers. A Null MX (a lone `MX 0 .`) is the
    /// permanent error [`DnsError::NullMx`]; a `.` among real exchangers is
    /// left out.
    pub async fn mx(&self, domain: &str) -> Result<Mx, DnsError> {
        self.mx_fetched(domain, Freshness::Dns).await.value
    }

    pub(crate) async fn mx_fetched(&self, domain: &str, freshness: Freshness) -> Fetched<Mx> {
        let key = display_name(domain);
        self.mx_cache
            .get(&key, freshness, self.query_mx(&key))
            .await
    }

    async fn query_mx(&self, domain: &str) -> Fetched<Mx> {
        let started = std::time::Instant::now();
        let fetched = self.query_mx_now(domain).await;
        observe(started, &fetched);
        fetched
    }

    async fn query_mx_now(&self, domain: &str) -> Fetched<Mx> {
        let lookup = match self.resolver.lookup(fqdn(domain), RecordType::MX).await {
            Ok(l) => l,
            Err(e) => return self.failed(domain, &e, Mx::Implicit),
        };
        let keep = self.policy.keep(min_ttl(lookup.answers()), false);
        let records: Vec<(u16, String)> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, mx.exchange.to_string())),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            return Fetched::new(Ok(Mx::Implicit), keep);
        }
        let mut hosts: Vec<MxHost> = records
            .iter()
            .filter(|(_, exchange)| exchange != ".")
            .map(|(preference, exchange)| MxHost {
                preference: *preference,
                name: display_name(exchange),
            })
            .collect();
        if hosts.is_empty() {
            let null = DnsError::NullMx {
                domain: display_name(domain),
            };
            return Fetched::new(Err(null), keep);
        }
        hosts.sort();
        hosts.dedup();
        Fetched::new(Ok(Mx::Hosts(hosts)), keep)
    }

    /// The host's IPv4 and IPv6 addresses (CNAMEs followed), IPv4 first.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        self.addresses_fetched(host, Freshness::Dns).await.value
    }

    pub(crate) async fn addresses_fetched(
        &self,
        host: &str,
        freshness: Freshness,
    ) -> Fetched<Vec<IpAddr>> {
        let key = display_name(host);
        let mut fetched = self
            .ip_cache
            .get(&key, freshness, self.query_addresses(&key))
            .await;
        if matches!(&fetched.value, Ok(ips) if ips.is_empty()) {
            fetched.value = Err(DnsError::NoAddress { name: key });
        }
        fetched
    }

    async fn query_addresses(&self, host: &str) -> Fetched<Vec<IpAddr>> {
        let started = std::time::Instant::now();
        let fetched = self.query_addresses_now(host).await;
        observe(started, &fetched);
        fetched
    }

    async fn query_addresses_now(&self, host: &str) -> Fetched<Vec<IpAddr>> {
        match self.resolver.lookup_ip(fqdn(host)).await {
            Ok(lookup) => {
                let keep = self
                    .policy
                    .keep(min_ttl(lookup.as_lookup().answers()), false);
                let mut ips: Vec<IpAddr> = lookup.iter().collect();
                ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
                ips.dedup();
                Fetched::new(Ok(ips), keep)
            }
            Err(e) => self.failed(host, &e, Vec::new()),
        }
    }

    /// The name's TXT records, each record's strings joined.
    pub(crate) async fn txt_fetched(
        &self,
        name: &str,
        freshness: Freshness,
    ) -> Fetched<Vec<String>> {
        let key = display_name(name);
        self.txt_cache
            .get(&key, freshness, self.query_txt(&key))
            .await
    }

    async fn query_txt(&self, name: &str) -> Fetched<Vec<String>> {
        let started = std::time::Instant::now();
        let fetched = match self.resolver.lookup(fqdn(name), RecordType::TXT).await {
            Ok(lookup) => {
                let keep = self.policy.keep(min_ttl(lookup.answers()), false);
                let texts = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|part| String::from_utf8_lossy(part))
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect();
                Fetched::new(Ok(texts), keep)
            }
            Err(e) => self.failed(name, &e, Vec::new()),
        };
        observe(started, &fetched);
        fetched
    }
}
