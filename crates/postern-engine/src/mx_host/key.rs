//! What makes two outbound sessions interchangeable: the same source, the
//! same destination address and port, and the same delivery profile. Every
//! domain whose routing table names such a host shares its connections.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use postern_conf::{AuthMech, TlsMode};
use postern_smtp::client::{ClientSettings, Protocol};

/// Where connections come from: the binding's `Bind_Address`, or, for a
/// binding without one, the binding itself (its `Host` limits are its own).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// Connections are bound to this address.
    Address(IpAddr),
    /// The system picks the address; the binding names the source.
    Binding(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Address(ip) => write!(f, "{ip}"),
            Source::Binding(b) => write!(f, "binding {b}"),
        }
    }
}

impl Source {
    pub(crate) fn of(binding: &str, settings: &ClientSettings) -> Self {
        match settings.bind {
            Some(ip) => Source::Address(ip),
            None => Source::Binding(binding.to_owned()),
        }
    }
}

/// How a session to the host is made: two sessions with the same profile
/// can carry each other's mail.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Profile {
    protocol: Protocol,
    implicit_tls: bool,
    tls: TlsMode,
    /// The rustls configuration's identity: the engine builds one per
    /// verification level and CA file, and keeps it.
    tls_config: usize,
    /// The name for SNI and certificate checks.
    server_name: String,
    auth: Option<(AuthMech, String)>,
    auth_without_tls: bool,
    helo_name: String,
    xclient: bool,
    tls_check: bool,
    chunking: bool,
}

impl Profile {
    pub(crate) fn of(settings: &ClientSettings) -> Self {
        Self {
            protocol: settings.protocol,
            implicit_tls: settings.implicit_tls,
            tls: settings.tls,
            tls_config: settings
                .tls_config
                .as_ref()
                .map_or(0, |c| Arc::as_ptr(c) as usize),
            server_name: settings.server_name.clone(),
            auth: settings
                .auth
                .as_ref()
                .map(|c| (c.mechanism, c.user.clone())),
            auth_without_tls: settings.auth_without_tls,
            helo_name: settings.helo_name.clone(),
            xclient: settings.xclient,
            tls_check: settings.tls_check.is_some(),
            chunking: settings.chunking,
        }
    }
}

/// One MX host: source, destination, profile.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct HostKey {
    pub(crate) source: Source,
    pub(crate) addr: SocketAddr,
    pub(crate) profile: Profile,
}

/// The hosts that share reachability: a connect failure to an address
/// from a source concerns every profile.
pub(crate) type Peer = (Source, SocketAddr);

impl HostKey {
    pub(crate) fn peer(&self) -> Peer {
        (self.source.clone(), self.addr)
    }
}
