//! Building a queue's routing table from `Gateway`, `Routes` or the
//! domain's own MX records, as CONFIG.md ("Routing") describes.
//!
//! Each item is resolved on its own (all at once). An item with `pref=P`
//! sits at level P; one without sits one level above the highest level
//! before it (0 when first). An MX answer spreads over consecutive levels
//! from there, one per distinct MX preference. Then the backup-MX rule and
//! `Prohibited_Hosts` remove hosts and addresses, and an address listed
//! twice keeps its best level.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;
use ipnet::IpNet;
use postern_conf::{
    Config, DeliveryMethod, Directive, Effective, HostSpec, Lookup, Origin, RouteItem, Routing,
    Scheme, Target, TlsMode, TlsVerify, Value,
};

use crate::cache::Freshness;
use crate::mta_sts::{MtaSts, StsMode};
use crate::table::{AuthSource, Decision, LeftOut, RouteEntry, RouteError, RouteLevel, RouteTable};
use crate::{Dns, DnsError, Mx, MxHost};

/// The default port of `smtps://`.
const SMTPS_PORT: u16 = 465;

/// Where an item's hosts come from.
enum Source {
    /// The destination domain's MX records (`__mx__`, or no routing set).
    DomainMx,
    /// A name, resolved as `lookup` says.
    Name(String, Lookup),
    /// An IP literal, used as is.
    Ip(IpAddr),
}

/// A `Gateway` or one `Routes` item, with the scope's settings applied.
struct Spec {
    /// The item as written, for reports.
    what: String,
    source: Source,
    scheme: Scheme,
    port: u16,
    pref: Option<u32>,
    freshness: Freshness,
    tls: TlsMode,
    tls_verify: TlsVerify,
    auth: Option<AuthSource>,
    /// The route itself says `tls=no`: AUTH may go unencrypted.
    plaintext_auth: bool,
    xclient: bool,
}

/// A host an item resolved to.
struct Found {
    /// 0 for the item's best MX preference (or a host without MX), 1 for
    /// the next distinct preference, and so on.
    rank: u32,
    name: String,
    mx_preference: Option<u16>,
    addrs: Vec<IpAddr>,
}

/// What one item resolved to.
#[derive(Default)]
struct Resolved {
    hosts: Vec<Found>,
    refresh_at: Option<Instant>,
    left_out: Vec<LeftOut>,
    /// Some lookup failed transiently: build the table again soon.
    transient: bool,
    /// The MTA-STS policy the hosts follow.
    mta_sts: Option<Arc<MtaSts>>,
}

/// The identity the backup-MX rule looks for among MX hosts.
struct Local {
    hostname: String,
    listens: Vec<SocketAddr>,
}

impl Local {
    fn of(config: &Config) -> Self {
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

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The error to report when nothing is left: a transient one if any, so
/// that mail waits rather than bounces while some cause may pass.
fn most_hopeful<E: Clone>(errors: &[E], permanent: impl Fn(&E) -> bool) -> Option<E> {
    errors
        .iter()
        .find(|e| !permanent(e))
        .or_else(|| errors.first())
        .cloned()
}

/// The scope-wide settings every item starts from.
struct Scope {
    method: DeliveryMethod,
    smtp_port: u16,
    lmtp_port: u16,
    tls: TlsMode,
    tls_verify: TlsVerify,
    auth: Option<AuthSource>,
    xclient: bool,
}

impl Scope {
    fn of(eff: &Effective<'_>) -> Self {
        Self {
            method: eff.delivery_method(),
            smtp_port: eff.port(Directive::RemoteSmtpPort).unwrap_or(25),
            lmtp_port: eff.port(Directive::LmtpPort).unwrap_or(2003),
            tls: eff
                .pick(Directive::Tls, |v| match v {
                    Value::Tls(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(TlsMode::IfAvailable),
            tls_verify: eff
                .pick(Directive::TlsVerify, |v| match v {
                    Value::TlsVerify(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(TlsVerify::No),
            auth: eff.pick(Directive::OutboundSmtpAuthUser, |v| match v {
                Value::Text(user) => Some(AuthSource::Scope { user: user.clone() }),
                _ => None,
            }),
            xclient: eff.flag(Directive::OutboundXclient).unwrap_or(false),
        }
    }

    /// The scheme of an item that names none.
    fn scheme(&self) -> Scheme {
        match self.method {
            DeliveryMethod::Lmtp => Scheme::Lmtp,
            DeliveryMethod::Esmtp | DeliveryMethod::Smtp => Scheme::Smtp,
        }
    }

    fn port(&self, scheme: Scheme, written: Option<u16>) -> u16 {
        written.unwrap_or(match scheme {
            Scheme::Smtp => self.smtp_port,
            Scheme::Smtps => SMTPS_PORT,
            Scheme::Lmtp => self.lmtp_port,
        })
    }

    fn spec(&self, what: String, source: Source, port: Option<u16>) -> Spec {
        let scheme = self.scheme();
        Spec {
            what,
            source,
            scheme,
            port: self.port(scheme, port),
            pref: None,
            freshness: Freshness::Dns,
            tls: self.tls,
            tls_verify: self.tls_verify,
            auth: self.auth.clone(),
            plaintext_auth: false,
            xclient: self.xclient,
        }
    }
}

fn source(target: &Target, lookup: Lookup) -> Source {
    match &target.host {
        HostSpec::Ip(ip) => Source::Ip(*ip),
        HostSpec::Name(name) => Source::Name(name.clone(), lookup),
    }
}

/// The items to resolve, and the disabled ones left out.
fn specs(eff: &Effective<'_>, routing: Routing<'_>) -> (Decision, Vec<Spec>, Vec<LeftOut>) {
    let scope = Scope::of(eff);
    match routing {
        Routing::Mx => {
            let spec = scope.spec("__mx__".into(), Source::DomainMx, None);
            (Decision::Mx, vec![spec], Vec::new())
        }
        Routing::Gateway(target, origin) => {
            let what = format!("Gateway {target}");
            let spec = scope.spec(what, source(target, Lookup::Mx), target.port);
            (Decision::Gateway(origin), vec![spec], Vec::new())
        }
        Routing::Routes(items, origin) => {
            let mut specs = Vec::new();
            let mut left_out = Vec::new();
            for item in items {
                let host = match item {
                    RouteItem::Mx => {
                        specs.push(scope.spec("__mx__".into(), Source::DomainMx, None));
                        continue;
                    }
                    RouteItem::Host(h) => h,
                };
                if host.disabled {
                    left_out.push(LeftOut {
                        what: item.to_string(),
                        why: "status=disabled".into(),
                    });
                    continue;
                }
                let lookup = host.lookup.unwrap_or(Lookup::Mx);
                let mut spec = scope.spec(item.to_string(), source(&host.target, lookup), None);
                if host.is_url() {
                    spec.scheme = host.scheme;
                }
                spec.port = scope.port(spec.scheme, host.target.port);
                spec.pref = host.pref;
                if let Some(ttl) = host.ttl {
                    spec.freshness =
                        Freshness::Fixed(std::time::Duration::from_secs(u64::from(ttl)));
                }
                spec.tls = host.tls.unwrap_or(spec.tls);
                spec.plaintext_auth = host.tls == Some(TlsMode::No);
                spec.tls_verify = host.tls_verify.unwrap_or(spec.tls_verify);
                spec.xclient = host.xclient.unwrap_or(spec.xclient);
                if let Some(name) = &host.auth {
                    spec.auth = Some(AuthSource::Stanza(name.clone()));
                }
                specs.push(spec);
            }
            (Decision::Routes(origin), specs, left_out)
        }
    }
}

/// Resolves items for one queue.
struct Builder<'a> {
    dns: &'a Dns,
    domain: String,
    local: Local,
    /// `MTA_STS` is on: the domain's policy applies to its MX hosts,
    /// fetched with this `TLS_CA` (or the system's trust store).
    mta_sts: Option<Option<PathBuf>>,
}

impl Builder<'_> {
    async fn resolve(&self, spec: &Spec) -> Result<Resolved, RouteError> {
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

fn no_address(name: &str) -> DnsError {
    DnsError::NoAddress {
        name: name.to_owned(),
    }
}

fn host_limit(config: &Config, binding: &str, name: &str, ip: IpAddr) -> Option<u64> {
    let stanza = config
        .host(binding, &ip.to_string())
        .or_else(|| config.host(binding, name))?;
    match stanza.options.get(Directive::MaxOutboundConnections)?.value {
        Value::Count(n) => Some(n),
        _ => None,
    }
}

fn effective<'c>(
    config: &'c Config,
    binding: &str,
    domain: &str,
) -> Result<Effective<'c>, RouteError> {
    config
        .effective(binding, domain)
        .ok_or_else(|| RouteError::UnknownBinding {
            binding: binding.to_owned(),
        })
}

fn prohibited(config: &Config) -> &[IpNet] {
    match config.global.value_or_default(Directive::ProhibitedHosts) {
        Some(Value::Cidrs(nets)) => nets,
        _ => &[],
    }
}

impl Dns {
    /// The routing table of mail for `domain` in `binding`, as the engine
    /// uses it: preference levels of addresses with port, protocol, TLS,
    /// credentials and host limits, and when to build it again.
    pub async fn route_table(
        &self,
        config: &Config,
        binding: &str,
        domain: &str,
    ) -> Result<RouteTable, RouteError> {
        let eff = effective(config, binding, domain)?;
        let (decision, specs, left_out) = specs(&eff, eff.routing());
        self.build(config, &eff, decision, specs, left_out).await
    }

    /// The table of one route item (as `postern verify-gateway` is given
    /// it), with the options in force for mail of `binding` to `domain`.
    pub async fn item_table(
        &self,
        config: &Config,
        binding: &str,
        domain: &str,
        item: &RouteItem,
    ) -> Result<RouteTable, RouteError> {
        let eff = effective(config, binding, domain)?;
        let routing = Routing::Routes(std::slice::from_ref(item), Origin::Default);
        let (_, specs, left_out) = specs(&eff, routing);
        self.build(config, &eff, Decision::Given, specs, left_out)
            .await
    }

    async fn build(
        &self,
        config: &Config,
        eff: &Effective<'_>,
        decision: Decision,
        specs: Vec<Spec>,
        mut left_out: Vec<LeftOut>,
    ) -> Result<RouteTable, RouteError> {
        let binding = eff.binding();
        let domain = eff.domain().to_owned();
        if specs.is_empty() {
            return Err(RouteError::Disabled { domain, decision });
        }
        let mta_sts = eff.flag(Directive::MtaSts).unwrap_or(true).then(|| {
            eff.pick(Directive::TlsCa, |v| match v {
                Value::Path(p) => Some(p.clone()),
                _ => None,
            })
        });
        let builder = Builder {
            dns: self,
            domain: domain.clone(),
            local: Local::of(config),
            mta_sts,
        };
        let results = join_all(specs.iter().map(|s| builder.resolve(s))).await;

        let nets = prohibited(config);
        let mut highest: Option<u32> = None;
        let mut entries: Vec<(u32, RouteEntry)> = Vec::new();
        let mut errors = Vec::new();
        let mut refused = Vec::new();
        let mut refresh_at = None;
        let mut transient = false;
        let mut mta_sts = None;
        for (spec, result) in specs.iter().zip(results) {
            let resolved = match result {
                Ok(r) => r,
                Err(e) => {
                    transient |= !e.is_permanent();
                    left_out.push(LeftOut {
                        what: spec.what.clone(),
                        why: e.to_string(),
                    });
                    errors.push(e);
                    continue;
                }
            };
            transient |= resolved.transient;
            refresh_at = earliest(refresh_at, resolved.refresh_at);
            left_out.extend(resolved.left_out);
            // An enforced policy: TLS required, the certificate verified
            // for the MX name (RFC 8461 4.2).
            let sts_testing =
                matches!(&resolved.mta_sts, Some(sts) if sts.policy.mode == StsMode::Testing);
            let (tls, tls_verify) = match &resolved.mta_sts {
                Some(sts) if sts.policy.mode == StsMode::Enforce => {
                    (TlsMode::Required, TlsVerify::Host)
                }
                _ => (spec.tls, spec.tls_verify),
            };
            if mta_sts.is_none() {
                mta_sts = resolved.mta_sts;
            }
            let base = spec
                .pref
                .unwrap_or_else(|| highest.map_or(0, |h| h.saturating_add(1)));
            for found in resolved.hosts {
                let level = base.saturating_add(found.rank);
                highest = highest.max(Some(level));
                let via = match found.mx_preference {
                    Some(p) => format!("{} (MX {p})", spec.what),
                    None => spec.what.clone(),
                };
                for ip in found.addrs {
                    if let Some(net) = nets.iter().find(|n| n.contains(&ip)) {
                        left_out.push(LeftOut {
                            what: format!("{ip} ({})", found.name),
                            why: format!("in Prohibited_Hosts ({net})"),
                        });
                        refused.push(ip);
                        continue;
                    }
                    let entry = RouteEntry {
                        name: found.name.clone(),
                        addr: SocketAddr::new(ip, spec.port),
                        scheme: spec.scheme,
                        tls,
                        tls_verify,
                        auth: spec.auth.clone(),
                        plaintext_auth: spec.plaintext_auth,
                        host_limit: host_limit(config, binding, &found.name, ip),
                        via: via.clone(),
                        xclient: spec.xclient,
                        sts_testing,
                    };
                    entries.push((level, entry));
                }
            }
        }
        if transient {
            let soon = Instant::now() + self.policy().min_ttl;
            refresh_at = earliest(refresh_at, Some(soon));
        }
        let levels = into_levels(entries, &mut left_out);
        if levels.is_empty() {
            let transient_error = errors.iter().find(|e| !e.is_permanent()).cloned();
            return Err(match (transient_error, refused.is_empty()) {
                (Some(e), _) => e,
                (None, false) => RouteError::Prohibited {
                    domain,
                    addresses: refused,
                },
                (None, true) => most_hopeful(&errors, RouteError::is_permanent)
                    .unwrap_or_else(|| RouteError::Dns(no_address(&domain))),
            });
        }
        Ok(RouteTable {
            binding: binding.to_owned(),
            domain,
            decision,
            levels,
            refresh_at,
            left_out,
            mta_sts,
        })
    }
}

/// Groups entries by level, best first; an address and port listed again
/// keeps its first (best) place.
fn into_levels(
    mut entries: Vec<(u32, RouteEntry)>,
    left_out: &mut Vec<LeftOut>,
) -> Vec<RouteLevel> {
    entries.sort_by_key(|(level, _)| *level);
    let mut levels: Vec<RouteLevel> = Vec::new();
    let mut seen: Vec<(SocketAddr, u32)> = Vec::new();
    for (level, entry) in entries {
        if let Some((_, first)) = seen.iter().find(|(a, _)| *a == entry.addr) {
            left_out.push(LeftOut {
                what: format!("{} from {}", entry.addr, entry.via),
                why: format!("already at level {first}"),
            });
            continue;
        }
        seen.push((entry.addr, level));
        match levels.last_mut() {
            Some(last) if last.level == level => last.hosts.push(entry),
            _ => levels.push(RouteLevel {
                level,
                hosts: vec![entry],
            }),
        }
    }
    levels
}
