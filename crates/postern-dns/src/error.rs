//! The crate's one error type. Whether a failure is permanent (the message
//! bounces) or transient (it is retried) is the first thing the engine asks.

use std::time::Duration;

/// Why a name could not be turned into mail exchangers or addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN): permanent.
    #[error("{name}: no such domain (NXDOMAIN)")]
    NxDomain {
        /// The name that was looked up.
        name: String,
    },
    /// The domain publishes a Null MX (RFC 7505), so it takes no mail:
    /// permanent.
    #[error("{domain}: the domain accepts no mail (Null MX, RFC 7505)")]
    NullMx {
        /// The destination domain.
        domain: String,
    },
    /// The name exists but has no A or AAAA records: permanent.
    #[error("{name}: no A or AAAA records")]
    NoAddress {
        /// The host name.
        name: String,
    },
    /// The server answered SERVFAIL or another error code: transient.
    #[error("{name}: DNS server failure ({detail})")]
    ServerFailure {
        /// The name that was looked up.
        name: String,
        /// The response code or the resolver's message.
        detail: String,
    },
    /// No answer in time: transient.
    #[error("{name}: no DNS answer within {timeout:?}")]
    Timeout {
        /// The name that was looked up.
        name: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The `Resolver` configuration (or the system's) cannot be used.
    #[error("resolver configuration: {0}")]
    Config(String),
}

impl DnsError {
    /// True when retrying cannot help: the message fails permanently.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            DnsError::NxDomain { .. } | DnsError::NullMx { .. } | DnsError::NoAddress { .. }
        )
    }

    /// The SMTP reply code and enhanced status code (RFC 3463, RFC 7505)
    /// that stand for this failure in a delivery report or a bounce.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            DnsError::NullMx { .. } => (550, "5.1.10"),
            DnsError::NxDomain { .. } | DnsError::NoAddress { .. } => (550, "5.1.2"),
            DnsError::ServerFailure { .. } | DnsError::Timeout { .. } | DnsError::Config(_) => {
                (451, "4.4.3")
            }
        }
    }
}
