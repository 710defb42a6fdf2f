//! Why a client session failed, typed so that the engine can tell a host
//! problem (try another host, mark this one down) from a message problem.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::command::UnsafeArgument;
use crate::{CodecError, Reply};

/// Where in the session something happened; each has its own deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TCP connect (`Connect_Timeout`).
    Connect,
    /// The 220 greeting (`EHLO_Timeout`).
    Greeting,
    /// EHLO, HELO or LHLO (`EHLO_Timeout`).
    Hello,
    /// STARTTLS and the handshake, or implicit TLS (`EHLO_Timeout`).
    Tls,
    /// AUTH (`EHLO_Timeout`).
    Auth,
    /// RSET before a further message (`MAIL_FROM_Timeout`).
    Rset,
    /// MAIL FROM (`MAIL_FROM_Timeout`).
    MailFrom,
    /// RCPT TO and DATA (`RCPT_TO_Timeout`).
    RcptTo,
    /// Sending the body (`Data_Timeout`).
    Data,
    /// The reply after the final dot (`Data_Timeout`). A session lost
    /// here may have delivered the message.
    DataEnd,
    /// QUIT.
    Quit,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connect",
            Phase::Greeting => "greeting",
            Phase::Hello => "EHLO",
            Phase::Tls => "TLS",
            Phase::Auth => "AUTH",
            Phase::Rset => "RSET",
            Phase::MailFrom => "MAIL FROM",
            Phase::RcptTo => "RCPT TO",
            Phase::Data => "DATA",
            Phase::DataEnd => "end of DATA",
            Phase::Quit => "QUIT",
        })
    }
}

/// A session that cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The TCP connection could not be made (refused, unreachable).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where to.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A deadline passed.
    #[error("timeout in {phase}")]
    Timeout {
        /// Waiting for what.
        phase: Phase,
    },
    /// The connection broke.
    #[error("connection lost in {phase}: {source}")]
    Io {
        /// When.
        phase: Phase,
        /// Why.
        source: io::Error,
    },
    /// The TLS handshake failed (or the certificate was refused).
    #[error("TLS failure: {0}")]
    Tls(String),
    /// `TLS = required`, and the host does not offer STARTTLS (or refused it).
    #[error("TLS is required and {0}")]
    TlsRequired(String),
    /// The server refused the session: a non-220 greeting, EHLO refused, or
    /// 421 at any point.
    #[error("{phase} refused: {reply}")]
    Rejected {
        /// When.
        phase: Phase,
        /// What the server said.
        reply: Reply,
    },
    /// AUTH cannot be done here, or failed.
    #[error("AUTH failed: {0}")]
    Auth(String),
    /// The server sent something that is not SMTP.
    #[error("protocol error in {phase}: {error}")]
    Protocol {
        /// When.
        phase: Phase,
        /// What.
        error: CodecError,
    },
    /// An address or name that cannot be sent.
    #[error(transparent)]
    Argument(#[from] UnsafeArgument),
    /// The session speaks for a client (XCLIENT) other than this
    /// message's, and the server did not take XCLIENT for the message's
    /// client (or for the session's own address), or no longer offers
    /// it: the message must go on another session.
    #[error("the session speaks for another client: {0}")]
    OtherClient(String),
}

impl SessionError {
    pub(crate) fn io(phase: Phase, e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::TimedOut {
            SessionError::Timeout { phase }
        } else {
            SessionError::Io { phase, source: e }
        }
    }

    /// The phase it happened in, when it is known.
    pub fn phase(&self) -> Option<Phase> {
        match self {
            SessionError::Timeout { phase }
            | SessionError::Io { phase, .. }
            | SessionError::Rejected { phase, .. }
            | SessionError::Protocol { phase, .. } => Some(*phase),
            _ => None,
        }
    }

    /// True when this machine ran out of something (file descriptors,
    /// local ports, buffers): not the host's fault, and not a reason to
    /// skip it.
    pub fn is_local_resource(&self) -> bool {
        const ENFILE: i32 = 23;
        const EMFILE: i32 = 24;
        const ENOBUFS: i32 = 105;
        const EADDRNOTAVAIL: i32 = 99;
        let os = match self {
            SessionError::Connect { source, .. } | SessionError::Io { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        };
        matches!(os, Some(ENFILE | EMFILE | ENOBUFS | EADDRNOTAVAIL))
    }

    /// True when retrying the message cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SessionError::Argument(_))
    }

    /// The reply that stands for this failure in the delivery log and in a
    /// bounce: the server's own when it gave one.
    pub fn reply(&self) -> Reply {
        let text = self.to_string();
        match self {
            SessionError::Rejected { reply, .. } => reply.clone(),
            SessionError::Connect { .. } => Reply::with_status(451, (4, 4, 1), text),
            SessionError::Timeout { .. } => Reply::with_status(451, (4, 4, 2), text),
            SessionError::Io { .. } | SessionError::Protocol { .. } => {
                Reply::with_status(451, (4, 4, 2), text)
            }
            SessionError::Tls(_) => Reply::with_status(451, (4, 7, 5), text),
            SessionError::TlsRequired(_) => Reply::with_status(451, (4, 7, 6), text),
            SessionError::Auth(_) => Reply::with_status(451, (4, 7, 8), text),
            SessionError::Argument(_) => Reply::with_status(553, (5, 1, 3), text),
            SessionError::OtherClient(_) => Reply::with_status(451, (4, 3, 0), text),
        }
    }
}
