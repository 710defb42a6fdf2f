//! The server session: the injection listener, and the test sinks.
//!
//! [`serve`] speaks SMTP (or LMTP) on one accepted connection. It parses
//! commands with smtp-proto's receiver, pipelined or not, and asks a
//! [`Handler`] what to answer to MAIL, RCPT, DATA and AUTH. Protocol
//! errors get their RFC 5321 reply here: out of sequence 503, syntax 501,
//! unknown 500, too big 552, too many recipients 452, too many commands or
//! errors 421 and the connection closed.

mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use self::session::{parse_command, serve};
use crate::Reply;

/// Limits and features of a server session.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Speak LMTP (LHLO, one reply per recipient after DATA).
    pub lmtp: bool,
    /// The largest message accepted, in bytes (`Max_Message_Size`).
    pub max_message_size: u64,
    /// Recipients per transaction; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Commands that start no transaction (NOOP, RSET, VRFY, HELO, ...)
    /// allowed in a row; past that the session ends with `421 4.7.0`.
    pub max_idle_commands: usize,
    /// Bad commands allowed; past that the session ends with `421 4.7.0`.
    pub max_errors: usize,
    /// STARTTLS is offered with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS from the first byte (SMTPS) with `tls`, instead of STARTTLS.
    pub implicit_tls: bool,
    /// AUTH PLAIN and LOGIN are offered (over TLS, unless
    /// `auth_without_tls`).
    pub offer_auth: bool,
    /// AUTH is offered on unencrypted sessions too.
    pub auth_without_tls: bool,
    /// MAIL is refused (`530 5.7.0`) until STARTTLS.
    pub require_tls: bool,
    /// SMTPUTF8 (RFC 6531) is offered; without it a non-ASCII address is
    /// refused with `553 5.6.7`.
    pub smtputf8: bool,
    /// MAIL is refused (`530 5.7.0`) until AUTH.
    pub require_auth: bool,
    /// How long a command may take to arrive, from its first byte to its
    /// end (a client trickling bytes does not restart it).
    pub command_timeout: Duration,
    /// How long the whole message body may take, from 354 to the final dot.
    pub data_timeout: Duration,
    /// Turns true when the server stops: a session waiting for a command
    /// with no transaction open gets `421 4.3.2` and is closed at once.
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
    /// XCLIENT is offered (`XCLIENT ADDR NAME HELO PROTO`) and its
    /// attributes are handed to [`Handler::xclient`]; for test servers
    /// standing in for a primary mail server.
    pub xclient: bool,
    /// CHUNKING (RFC 3030) is offered and BDAT taken; without it, BDAT
    /// gets `502 5.5.1`.
    pub chunking: bool,
}

impl ServerSettings {
    /// An SMTP server with the usual limits: 25 MiB messages, 1000
    /// recipients, 100 idle commands, 20 errors, 5 minutes per command,
    /// 10 for the body.
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            lmtp: false,
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 1000,
            max_idle_commands: 100,
            max_errors: 20,
            tls: None,
            implicit_tls: false,
            offer_auth: false,
            auth_without_tls: false,
            require_tls: false,
            smtputf8: true,
            require_auth: false,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            shutdown: None,
            xclient: false,
            chunking: true,
        }
    }
}

/// The transaction so far, as the handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The client's address.
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    /// The EHLO/HELO/LHLO name.
    pub helo: String,
    /// The session is encrypted.
    pub tls: bool,
    /// The user the client authenticated as.
    pub auth: Option<String>,
    /// The envelope sender (empty for `<>`).
    pub mail_from: String,
    /// `SIZE=` as declared.
    pub declared_size: Option<u64>,
    /// `BODY=8BITMIME`.
    pub eight_bit: bool,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
    /// Accepted recipients, in order.
    pub rcpt_to: Vec<String>,
    /// The body came with BDAT (RFC 3030), not DATA.
    pub chunked: bool,
    /// MAIL came in the same read as the end of the session's previous
    /// message: the client sent both in one write (RFC 2920).
    pub pipelined: bool,
}

/// The answer to the end of DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataReply {
    /// One reply (SMTP), or the same reply for every recipient (LMTP).
    One(Reply),
    /// One reply per accepted recipient, in order (LMTP).
    PerRecipient(Vec<Reply>),
    /// Close the connection without a reply.
    Drop,
}

/// What the session asks its owner. Every method has the answer of a
/// server that accepts everything except AUTH.
#[async_trait::async_trait]
pub trait Handler: Send {
    /// The greeting (a 554 refuses the session).
    async fn greeting(&mut self, hostname: &str, _peer: SocketAddr) -> Reply {
        Reply::new(220, None, format!("{hostname} ESMTP Postern"))
    }

    /// A MAIL FROM that passed the protocol checks.
    async fn mail_from(&mut self, _envelope: &Envelope) -> Reply {
        Reply::with_status(250, (2, 1, 0), "sender ok")
    }

    /// A RCPT TO that passed the protocol checks.
    async fn rcpt_to(&mut self, _envelope: &Envelope, _recipient: &str) -> Reply {
        Reply::with_status(250, (2, 1, 5), "recipient ok")
    }

    /// A complete message (dot-unstuffed, within the size limit).
    async fn data(&mut self, _envelope: &Envelope, _body: Vec<u8>) -> DataReply {
        DataReply::One(Reply::with_status(250, (2, 0, 0), "message accepted"))
    }

    /// The attributes of an XCLIENT command (names upper-case, values
    /// decoded), when [`ServerSettings::xclient`] offers it. `None` takes
    /// them: the session then greets again and waits for EHLO. A reply
    /// (4xx or 5xx; the session stays open, so not 421) refuses them and
    /// leaves the session as it was.
    async fn xclient(&mut self, _attributes: Vec<(String, String)>) -> Option<Reply> {
        None
    }

    /// Whether `user` with `password` may authenticate.
    async fn auth(&mut self, _user: &str, _password: &str) -> bool {
        false
    }

    /// Close the connection as soon as the body starts (for tests of
    /// connections lost during DATA).
    fn drop_during_data(&self) -> bool {
        false
    }
}
