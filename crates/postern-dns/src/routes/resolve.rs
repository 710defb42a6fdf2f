//! Resolving one item of a queue's routing: a name (MX, then A/AAAA, or
//! A/AAAA only), an IP literal, or the destination's own MX hosts (with
//! its MTA-STS policy); the backup-MX rule applies to every MX answer.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;
use postern_conf::{Config, Lookup};

use super::{Source, Spec, earliest, most_hopeful};
use crate::mta_sts::{MtaSts, StsMode};
use crate::table::{LeftOut, RouteError};
use crate::{Dns, DnsError, Mx, MxHost};

/// A host an item resolved to.
pub(super) struct Found {
    /// 0 for the item's best MX preference (or a host without MX), 1 for
    /// the next distinct preference, and so on.
    pub(super) rank: u32,
    pub(super) name: String,
    pub(super) mx_preference: Option<u16>,
    pub(super) addrs: Vec<IpAddr>,
}

/// What one item resolved to.
#[derive(Default)]
pub(super) struct Resolved {
    pub(super) hosts: Vec<Found>,
    pub(super) refresh_at: Option<Instant>,
    pub(super) left_out: Vec<LeftOut>,
    /// Some lookup failed transiently: build the table again soon.
    pub(super) transient: bool,
    /// The MTA-STS policy the hosts follow.
    pub(super) mta_sts: Option<Arc<MtaSts>>,
}

/// The identity the backup-MX rule looks for among MX hosts.
pub(super) struct Local {
    pub(super) hostname: String,
    pub(super) listens: Vec<SocketAddr>,
}

impl Local {
    pub(super) fn of(config: &Config) -> Self {
        let listens = config
            .listener
            .iter()
            .flat_map(|l| l.listens.iter().map(|x| x.addr))
            .filter(|a| !a.ip().is_unspecified())
            .collect();
        Self {
            hostname: config.hostname(),
            listens,
        }
    }

    fn is(&self, name: &str, addrs: &[IpAddr], port: u16) -> bool {
        name.eq_ignore_ascii_case(&self.hostname)
            || addrs
                .iter()
                .any(|ip| self.listens.contains(&SocketAddr::new(*ip, port)))
    }
}

/// Resolves items for one queue.
pub(super) struct Builder<'a> {
    pub(super) dns: &'a Dns,
    pub(super) domain: String,
    pub(super) local: Local,
    /// `MTA_STS` is on: the domain's policy applies to its MX hosts,
    /// fetched with this `TLS_CA` (or the system's trust store).
    pub(super) mta_sts: Option<Option<PathBuf>>,
}

impl Builder<'_> {
    pub(super) async fn resolve(&self, spec: &Spec) -> Result<Resolved, RouteError> {
        match &spec.source {
            Source::Ip(ip) => Ok(Resolved {
                hosts: vec![Found {
                    rank: 0,
                    name: ip.to_string(),
                    mx_preference: None,
                    addrs: vec![*ip],
                }],
                ..Resolved::default()
            }),
            Source::Name(name, Lookup::A) => {
                let fetched = self.dns.addresses_fetched(name, spec.freshness).await;
                let refresh_at = fetched.valid_until(spec.freshness);
                Ok(Resolved {
                    hosts: vec![Found {
                        rank: 0,
                        name: name.clone(),
                        mx_preference: None,
                        addrs: fetched.value?,
                    }],
                    refresh_at: Some(refresh_at),
                    ..Resolved::default()
                })
            }
            Source::Name(name, Lookup::Mx) => self.resolve_mx(name, spec).await,
            Source::DomainMx => self.resolve_domain_mx(spec).await,
        }
    }

    /// The destination's own MX hosts, as its MTA-STS policy allows.
    async fn resolve_domain_mx(&self, spec: &Spec) -> Result<Resolved, RouteError> {
        let Some(ca) = &self.mta_sts else {
            return self.resolve_mx(&self.domain, spec).await;
        };
        let (resolved, lookup) = futures_util::join!(
            self.resolve_mx(&self.domain, spec),
            self.dns.mta_sts(&self.domain, ca.as_deref())
        );
        let mut resolved = resolved?;
        if let Some(problem) = lookup.problem {
            resolved.left_out.push(LeftOut {
                what: format!("MTA-STS policy of {}", self.domain),
                why: problem,
            });
        }
        resolved.refresh_at = earliest(resolved.refresh_at, lookup.refresh_at);
        let Some((id, policy)) = lookup.policy else {
            return Ok(resolved);
        };
        if policy.mode == StsMode::None {
            return Ok(resolved);
        }
        let unnamed: Vec<String> = resolved
            .hosts
            .iter()
            .filter(|h| !policy.names(&h.name))
            .map(|h| h.name.clone())
            .collect();
        if !unnamed.is_empty() {
            metrics::counter!(postern_metrics::MTA_STS_POLICY_FAILURES, "mode" => policy.mode.as_str())
                .increment(1);
            tracing::warn!(
                domain = %self.domain,
                policy = %id,
                mode = %policy.mode,
                mx = %unnamed.join(" "),
                "MX hosts not named by the MTA-STS policy"
            );
        }
        if policy.mode == StsMode::Enforce {
            for name in &unnamed {
                resolved.left_out.push(LeftOut {
                    what: name.clone(),
                    why: format!("not named by the MTA-STS policy {id} (enforce)"),
                });
            }
            resolved.hosts.retain(|h| policy.names(&h.name));
            if resolved.hosts.is_empty() {
                return Err(RouteError::MtaSts {
                    domain: self.domain.clone(),
                    id,
                    names: policy.mx.clone(),
                });
            }
        }
        resolved.mta_sts = Some(Arc::new(MtaSts {
            id,
            policy,
            unnamed,
        }));
        Ok(resolved)
    }

    /// `name`'s MX hosts (or `name` itself when it has no MX records) with
    /// their addresses, after the backup-MX rule.
    async fn resolve_mx(&self, name: &str, spec: &Spec) -> Result<Resolved, RouteError> {
        let fresh = spec.freshness;
        let mx = self.dns.mx_fetched(name, fresh).await;
        let mut out = Resolved {
            refresh_at: Some(mx.valid_until(fresh)),
            ..Resolved::default()
        };
        let (hosts, implicit) = match mx.value? {
            Mx::Hosts(hosts) => (hosts, false),
            Mx::Implicit => {
                let host = MxHost {
                    preference: 0,
                    name: name.to_owned(),
                };
                (vec![host], true)
            }
        };
        let lookups = join_all(
            hosts
                .iter()
                .map(|h| self.dns.addresses_fetched(&h.name, fresh)),
        )
        .await;
        let mut resolved: Vec<(&MxHost, Vec<IpAddr>)> = Vec::new();
        let mut failed: Vec<(&MxHost, DnsError)> = Vec::new();
        for (host, fetched) in hosts.iter().zip(lookups) {
            let until = fetched.valid_until(fresh);
            match fetched.value {
                Ok(addrs) => {
                    out.refresh_at = earliest(out.refresh_at, Some(until));
                    resolved.push((host, addrs));
                }
                Err(e) => failed.push((host, e)),
            }
        }
        let label = |h: &MxHost| {
            if implicit {
                format!("{} (no MX records: the domain's own address)", h.name)
            } else {
                format!("{} (MX {})", h.name, h.preference)
            }
        };
        if let Some(own) = resolved
            .iter()
            .filter(|(h, addrs)| self.local.is(&h.name, addrs, spec.port))
            .map(|(h, _)| *h)
            .chain(
                hosts
                    .iter()
                    .filter(|h| self.local.is(&h.name, &[], spec.port)),
            )
            .min_by_key(|h| h.preference)
        {
            let why = format!(
                "this server is {} (MX preference {}): only MX hosts with a lower preference are used",
                own.name, own.preference
            );
            for h in hosts.iter().filter(|h| h.preference >= own.preference) {
                out.left_out.push(LeftOut {
                    what: label(h),
                    why: why.clone(),
                });
            }
            if !hosts.iter().any(|h| h.preference < own.preference) {
                return Err(RouteError::Loop {
                    domain: self.domain.clone(),
                    host: own.name.clone(),
                    preference: own.preference,
                });
            }
            resolved.retain(|(h, _)| h.preference < own.preference);
            failed.retain(|(h, _)| h.preference < own.preference);
        }
        for (h, e) in &failed {
            out.transient |= !e.is_permanent();
            out.left_out.push(LeftOut {
                what: label(h),
                why: e.to_string(),
            });
        }
        if resolved.is_empty() {
            let errors: Vec<DnsError> = failed.into_iter().map(|(_, e)| e).collect();
            return Err(most_hopeful(&errors, DnsError::is_permanent)
                .map_or_else(|| RouteError::Dns(no_address(name)), RouteError::Dns));
        }
        let mut preferences: Vec<u16> = resolved.iter().map(|(h, _)| h.preference).collect();
        preferences.dedup();
        for (h, addrs) in resolved {
            let rank = preferences
                .iter()
                .position(|p| *p == h.preference)
                .unwrap_or(0);
            out.hosts.push(Found {
                rank: u32::try_from(rank).unwrap_or(u32::MAX),
                name: h.name.clone(),
                mx_preference: (!implicit).then_some(h.preference),
                addrs,
            });
        }
        Ok(out)
    }
}

pub(super) fn no_address(name: &str) -> DnsError {
    DnsError::NoAddress {
        name: name.to_owned(),
    }
}
