//! The client session: Postern delivering to an MX host, a smart host or
//! an LMTP server.
//!
//! [`Session::connect`] runs connect, implicit TLS, greeting, EHLO (HELO
//! fallback; HELO for plain SMTP; LHLO for LMTP), STARTTLS under the TLS
//! policy, and AUTH. [`Session::send`] runs one transaction (pipelined when
//! the server offers PIPELINING) and gives each recipient's [`Outcome`];
//! [`Session::send_many`] sends several in one write where it can.
//! Every wait has the deadline of its phase.

mod error;
mod pipeline;
mod session;
mod transaction;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_conf::{AuthMech, TlsMode};

pub use self::error::{Phase, SessionError};
pub use self::pipeline::Sent;
pub use self::session::Session;
pub use self::transaction::Transaction;
use crate::reply::Reply;

/// Which protocol the session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// EHLO and extensions, HELO when EHLO is refused.
    Esmtp,
    /// HELO only, no extensions (`Delivery_Method = SMTP`).
    Smtp,
    /// LHLO, one reply per recipient after the body (RFC 2033).
    Lmtp,
}

/// The deadline of each phase, from the `*_Timeout` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `Connect_Timeout`.
    pub connect: Duration,
    /// `EHLO_Timeout`: greeting, EHLO, STARTTLS, AUTH.
    pub ehlo: Duration,
    /// `MAIL_FROM_Timeout` (and RSET).
    pub mail_from: Duration,
    /// `RCPT_TO_Timeout` (and DATA's 354).
    pub rcpt_to: Duration,
    /// `Data_Timeout`: sending the body and the reply after the final dot.
    pub data: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        Self {
            connect: s(300),
            ehlo: s(300),
            mail_from: s(300),
            rcpt_to: s(300),
            data: s(600),
        }
    }
}

/// AUTH credentials. The password never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// PLAIN or LOGIN.
    pub mechanism: AuthMech,
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} {}, ********)", self.mechanism, self.user)
    }
}

/// Everything a session needs to know about the host and the route.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The name sent with EHLO/HELO/LHLO (`Hostname`).
    pub helo_name: String,
    /// SMTP, ESMTP or LMTP.
    pub protocol: Protocol,
    /// TLS from the first byte (`smtps://`).
    pub implicit_tls: bool,
    /// The STARTTLS policy.
    pub tls: TlsMode,
    /// The rustls configuration (verification level and trust anchors);
    /// without one, TLS is never attempted.
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
    /// The host's name, for SNI and `TLS_Verify = host`.
    pub server_name: String,
    /// AUTH credentials, if the route has any.
    pub auth: Option<Credentials>,
    /// The route says `tls=no` explicitly, so AUTH may go unencrypted.
    pub auth_without_tls: bool,
    /// The source address (`Bind_Address`).
    pub bind: Option<IpAddr>,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// Keep a [`Step`] for everything said while connecting (for
    /// `postern verify-gateway`).
    pub trace: bool,
    /// Send XCLIENT with each message's original client when the server
    /// offers it (`Outbound_XCLIENT`, `xclient=yes`).
    pub xclient: bool,
    /// Check, without acting on it, whether the session's TLS would satisfy
    /// a policy demanding a trusted certificate for `server_name` (an
    /// MTA-STS policy in `testing` mode): [`Session::tls_check`].
    pub tls_check: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    /// Send each message with one `BDAT LAST` (RFC 3030) when the server
    /// offers CHUNKING and PIPELINING (`Outbound_Chunking`): the envelope
    /// and the body go in one write, one round trip per message.
    pub chunking: bool,
}

impl ClientSettings {
    /// Settings with defaults: ESMTP, `TLS = ifavailable` without a TLS
    /// configuration (so no TLS), no AUTH.
    pub fn new(helo_name: impl Into<String>, server_name: impl Into<String>) -> Self {
        Self {
            helo_name: helo_name.into(),
            protocol: Protocol::Esmtp,
            implicit_tls: false,
            tls: TlsMode::IfAvailable,
            tls_config: None,
            server_name: server_name.into(),
            auth: None,
            auth_without_tls: false,
            bind: None,
            timeouts: Timeouts::default(),
            trace: false,
            xclient: false,
            tls_check: None,
            chunking: true,
        }
    }
}

/// What became of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted for delivery (the final reply).
    Delivered(Reply),
    /// Failed for now: retry later.
    Transient(Reply),
    /// Failed for good: bounce.
    Permanent(Reply),
}

impl Outcome {
    /// The outcome a reply stands for.
    pub fn from_reply(reply: Reply) -> Self {
        match reply.class() {
            crate::Class::Positive => Outcome::Delivered(reply),
            crate::Class::Transient => Outcome::Transient(reply),
            crate::Class::Permanent => Outcome::Permanent(reply),
        }
    }

    /// The reply behind it.
    pub fn reply(&self) -> &Reply {
        match self {
            Outcome::Delivered(r) | Outcome::Transient(r) | Outcome::Permanent(r) => r,
        }
    }
}

/// One step of setting up a session, as `postern verify-gateway` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What was done: `connect`, `greeting`, the command sent (AUTH
    /// payloads masked), `TLS handshake`.
    pub what: String,
    /// What came of it: the reply, or the error.
    pub outcome: String,
    /// Whether it succeeded.
    pub ok: bool,
}
