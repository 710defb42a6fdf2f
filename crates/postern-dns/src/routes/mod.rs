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
use std::time::Instant;

use futures_util::future::join_all;
use ipnet::IpNet;
use postern_conf::{
    Config, DeliveryMethod, Directive, Effective, HostSpec, Lookup, Origin, RouteItem, Routing,
    Scheme, Target, TlsMode, TlsVerify, Value,
};

mod resolve;

use resolve::{Builder, Local, no_address};

use crate::Dns;
use crate::cache::Freshness;
use crate::mta_sts::StsMode;
use crate::table::{AuthSource, Decision, LeftOut, RouteEntry, RouteError, RouteLevel, RouteTable};

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
        let mta_sts = eff
            .flag(Directive::MtaSts)
            .unwrap_or(true)
            .then(|| eff.path(Directive::TlsCa));
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
