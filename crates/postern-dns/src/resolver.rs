//! [`Dns`]: the resolver and the classification of its answers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use postern_conf::{Config, Directive, Value};

use crate::DnsError;

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

/// A resolver for delivery. Create one per event loop: a resolver shared
/// across runtimes can stall.
#[derive(Debug, Clone)]
pub struct Dns {
    resolver: TokioResolver,
    timeout: Duration,
}

/// An answer with no records of the asked type (NODATA).
struct NoData;

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
        let timeout = match config.resolver.value_or_default(Directive::ResolverTimeout) {
            Some(Value::Seconds(n)) => Duration::from_secs(*n),
            other => {
                return Err(DnsError::Config(format!(
                    "Timeout: expected seconds, found {other:?}"
                )));
            }
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
        let resolver = builder.build().map_err(config_error)?;
        Ok(Self { resolver, timeout })
    }

    fn classify(&self, name: &str, e: &NetError) -> Result<NoData, DnsError> {
        let name = display_name(name);
        if e.is_nx_domain() {
            return Err(DnsError::NxDomain { name });
        }
        if e.is_no_records_found() {
            return Ok(NoData);
        }
        if matches!(e, NetError::Timeout) {
            return Err(DnsError::Timeout {
                name,
                timeout: self.timeout,
            });
        }
        Err(DnsError::ServerFailure {
            name,
            detail: e.to_string(),
        })
    }

    /// The domain's mail exchangers. A Null MX (a lone `MX 0 .`) is the
    /// permanent error [`DnsError::NullMx`]; a `.` among real exchangers is
    /// left out.
    pub async fn mx(&self, domain: &str) -> Result<Mx, DnsError> {
        let lookup = match self.resolver.lookup(fqdn(domain), RecordType::MX).await {
            Ok(l) => l,
            Err(e) => {
                self.classify(domain, &e)?;
                return Ok(Mx::Implicit);
            }
        };
        let records: Vec<(u16, String)> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, mx.exchange.to_string())),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            return Ok(Mx::Implicit);
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
            return Err(DnsError::NullMx {
                domain: display_name(domain),
            });
        }
        hosts.sort();
        hosts.dedup();
        Ok(Mx::Hosts(hosts))
    }

    /// The host's IPv4 and IPv6 addresses (CNAMEs followed), IPv4 first.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let no_address = || DnsError::NoAddress {
            name: display_name(host),
        };
        match self.resolver.lookup_ip(fqdn(host)).await {
            Ok(lookup) => {
                let mut ips: Vec<IpAddr> = lookup.iter().collect();
                ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
                ips.dedup();
                if ips.is_empty() {
                    return Err(no_address());
                }
                Ok(ips)
            }
            Err(e) => {
                self.classify(host, &e)?;
                Err(no_address())
            }
        }
    }
}
