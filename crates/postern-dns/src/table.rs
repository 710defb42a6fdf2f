//! A queue's routing table and the ways building one can fail.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_conf::{Origin, Scheme, TlsMode, TlsVerify};

use crate::DnsError;
use crate::mta_sts::MtaSts;

/// Which setting decided how a queue is routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// `Gateway`, set where the origin says.
    Gateway(Origin),
    /// `Routes`, set where the origin says.
    Routes(Origin),
    /// Neither is set: the domain's own MX records.
    Mx,
    /// A route given directly (`postern verify-gateway`).
    Given,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Gateway(origin) => write!(f, "Gateway in {origin}"),
            Decision::Routes(origin) => write!(f, "Routes in {origin}"),
            Decision::Mx => f.write_str("the domain's MX records (no Gateway or Routes applies)"),
            Decision::Given => f.write_str("the route given"),
        }
    }
}

/// Whose credentials a host is given for AUTH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthSource {
    /// The route's `auth=NAME`: the `Auth NAME { }` stanza.
    Stanza(String),
    /// The scope's `Outbound_SMTP_AUTH_User` (and `_Pass`).
    Scope {
        /// The user name.
        user: String,
    },
}

impl fmt::Display for AuthSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthSource::Stanza(name) => write!(f, "Auth {name}"),
            AuthSource::Scope { user } => write!(f, "user {user}"),
        }
    }
}

/// One address and port to deliver to, with everything a connection to it
/// needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// The host name the address belongs to (an MX exchanger, a gateway or
    /// route host), or the IP literal as written.
    pub name: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// The protocol: SMTP (STARTTLS per `tls`), SMTPS or LMTP.
    pub scheme: Scheme,
    /// STARTTLS policy (the route's `tls=`, else the scope's `TLS`).
    pub tls: TlsMode,
    /// Certificate checks (the route's `tls_verify=`, else `TLS_Verify`).
    pub tls_verify: TlsVerify,
    /// Credentials for AUTH, if any.
    pub auth: Option<AuthSource>,
    /// The route itself says `tls=no`, which allows AUTH without TLS.
    pub plaintext_auth: bool,
    /// The `Host` stanza's `Max_Outbound_Connections` for this address or
    /// host name (the address's stanza first), counted across all queues.
    pub host_limit: Option<u64>,
    /// Why this host is in the table: the item and, for MX answers, the
    /// MX preference.
    pub via: String,
    /// Tell it each message's original client with XCLIENT when it offers
    /// it (the route's `xclient=`, else `Outbound_XCLIENT`).
    pub xclient: bool,
    /// An MX host under an MTA-STS policy in `testing` mode: its sessions'
    /// TLS is checked as `enforce` would, and a failure only reported.
    pub sts_testing: bool,
}

/// Hosts of one preference level; they share connections evenly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLevel {
    /// The level number: lower is used first.
    pub level: u32,
    /// The hosts, in the order their items and MX records list them.
    pub hosts: Vec<RouteEntry>,
}

/// Something of the configuration or of DNS that is not in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    /// The item, host or address.
    pub what: String,
    /// Why it was left out.
    pub why: String,
}

/// The routing table of one (binding, domain) queue.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// The binding.
    pub binding: String,
    /// The destination domain.
    pub domain: String,
    /// What decided the routing.
    pub decision: Decision,
    /// Preference levels, best first; never empty.
    pub levels: Vec<RouteLevel>,
    /// When the table must be built again (the first TTL or `ttl=` to run
    /// out); `None` when nothing in it came from DNS.
    pub refresh_at: Option<Instant>,
    /// Items, hosts and addresses left out, with the reason.
    pub left_out: Vec<LeftOut>,
    /// The destination's MTA-STS policy in `enforce` or `testing` mode,
    /// when its MX hosts are in the table and `MTA_STS` is on.
    pub mta_sts: Option<Arc<MtaSts>>,
}

impl RouteTable {
    /// Every entry, best level first.
    pub fn entries(&self) -> impl Iterator<Item = (u32, &RouteEntry)> {
        self.levels
            .iter()
            .flat_map(|l| l.hosts.iter().map(move |h| (l.level, h)))
    }

    /// Time left before the table is built again.
    pub fn ttl(&self) -> Option<Duration> {
        self.refresh_at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

/// Why a queue has no routing table now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// A DNS failure left no host.
    #[error(transparent)]
    Dns(#[from] DnsError),
    /// This server is the best mail exchanger left for the domain.
    #[error(
        "{domain}: mail loops back to this server: it is {host} (MX preference {preference}) and no MX host with a lower preference exists"
    )]
    Loop {
        /// The destination domain.
        domain: String,
        /// The MX host that is this server.
        host: String,
        /// Its MX preference.
        preference: u16,
    },
    /// Every address found is in `Prohibited_Hosts`.
    #[error("{domain}: every address is in Prohibited_Hosts ({})", list(.addresses))]
    Prohibited {
        /// The destination domain.
        domain: String,
        /// The prohibited addresses.
        addresses: Vec<IpAddr>,
    },
    /// Every route item is `status=disabled`.
    #[error("{domain}: every route is disabled (status=disabled) in {decision}")]
    Disabled {
        /// The destination domain.
        domain: String,
        /// The setting whose items are all disabled.
        decision: Decision,
    },
    /// The destination's MTA-STS policy (`enforce`) names none of its MX
    /// hosts.
    #[error("{domain}: no MX host is named by the MTA-STS policy {id} (enforce; the policy names {})", .names.join(", "))]
    MtaSts {
        /// The destination domain.
        domain: String,
        /// The policy id.
        id: String,
        /// The policy's `mx` patterns.
        names: Vec<String>,
    },
    /// The binding is not configured.
    #[error("binding {binding:?} is not configured")]
    UnknownBinding {
        /// The binding's name.
        binding: String,
    },
}

fn list(addresses: &[IpAddr]) -> String {
    addresses
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl RouteError {
    /// True when retrying cannot help: the mail bounces. A disabled route
    /// or a missing binding is the operator's to fix, so mail waits.
    pub fn is_permanent(&self) -> bool {
        match self {
            RouteError::Dns(e) => e.is_permanent(),
            RouteError::Loop { .. } | RouteError::Prohibited { .. } => true,
            RouteError::Disabled { .. }
            | RouteError::UnknownBinding { .. }
            | RouteError::MtaSts { .. } => false,
        }
    }

    /// True when the destination's own policy refuses every host (MTA-STS):
    /// a table built before it must not be used meanwhile, as it would be
    /// after a DNS failure.
    pub fn is_policy(&self) -> bool {
        matches!(self, RouteError::MtaSts { .. })
    }

    /// The SMTP reply code and enhanced status code (RFC 3463) for a
    /// delivery report or a bounce.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            RouteError::Dns(e) => e.status(),
            RouteError::Loop { .. } => (550, "5.4.6"),
            RouteError::Prohibited { .. } => (550, "5.4.4"),
            RouteError::Disabled { .. } => (451, "4.4.4"),
            RouteError::UnknownBinding { .. } => (451, "4.3.5"),
            RouteError::MtaSts { .. } => (451, "4.7.5"),
        }
    }
}
