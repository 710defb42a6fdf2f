//! The client session: Postern delivering to an MX host, a smart host or
//! an LMTP server.
//!
//! [`Session::connect`] runs connect, implicit TLS, greeting, EHLO (HELO
//! fallback; HELO for plain SMTP; LHLO for LMTP), STARTTLS under the TLS
//! policy, and AUTH. [`Session::send`] runs one transaction (pipelined when
//! the server offers PIPELINING) and gives each recipient's [`Outcome`].
//! Every wait has the deadline of its phase.

mod error;
mod transaction;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use postern_conf::{AuthMech, TlsMode};
use tokio::net::{TcpSocket, TcpStream};

pub use self::error::{Phase, SessionError};
pub use self::transaction::Transaction;
use crate::caps::Capabilities;
use crate::command;
use crate::reply::{Reply, ReplyParser};
use crate::stream::Conn;

/// Which protocol the session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// An open session, ready for a transaction.
#[derive(Debug)]
pub struct Session {
    conn: Conn,
    parser: ReplyParser,
    settings: ClientSettings,
    caps: Capabilities,
    greeting: Reply,
    /// A transaction ran on this session: send RSET before the next.
    used: bool,
    /// Who we authenticated as.
    authenticated: Option<String>,
}

async fn tcp_connect(
    addr: SocketAddr,
    settings: &ClientSettings,
) -> Result<TcpStream, SessionError> {
    let connect = async {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = settings.bind {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        socket.connect(addr).await
    };
    match tokio::time::timeout(settings.timeouts.connect, connect).await {
        Ok(Ok(tcp)) => Ok(tcp),
        Ok(Err(source)) => Err(SessionError::Connect { addr, source }),
        Err(_) => Err(SessionError::Timeout {
            phase: Phase::Connect,
        }),
    }
}

impl Session {
    /// Connects and runs everything up to the first transaction. With
    /// `TLS = ifavailable`, a failed STARTTLS handshake is retried once on
    /// a new connection without TLS, as opportunistic TLS must.
    pub async fn connect(
        addr: SocketAddr,
        settings: &ClientSettings,
    ) -> Result<Session, SessionError> {
        match Self::open(addr, settings.clone()).await {
            Err(SessionError::Tls(_))
                if settings.tls == TlsMode::IfAvailable && !settings.implicit_tls =>
            {
                let plain = ClientSettings {
                    tls: TlsMode::No,
                    ..settings.clone()
                };
                Self::open(addr, plain).await
            }
            other => other,
        }
    }

    async fn open(addr: SocketAddr, settings: ClientSettings) -> Result<Session, SessionError> {
        let tcp = tcp_connect(addr, &settings).await?;
        let conn = Conn::new(tcp).map_err(|e| SessionError::io(Phase::Connect, e))?;
        let mut session = Session {
            conn,
            parser: ReplyParser::default(),
            caps: Capabilities::default(),
            greeting: Reply::new(0, None, ""),
            used: false,
            authenticated: None,
            settings,
        };
        if session.settings.implicit_tls {
            session = session.start_tls().await?;
        }
        let greeting = session.read(Phase::Greeting).await?;
        if greeting.code != 220 {
            return Err(SessionError::Rejected {
                phase: Phase::Greeting,
                reply: greeting,
            });
        }
        session.greeting = greeting;
        session.hello().await?;
        if !session.conn.is_tls() && session.settings.tls != TlsMode::No {
            session = session.starttls().await?;
        }
        if session.settings.auth.is_some() {
            session.authenticate().await?;
        }
        Ok(session)
    }

    /// The capabilities of the last EHLO/LHLO (empty after HELO).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The server's greeting.
    pub fn greeting(&self) -> &Reply {
        &self.greeting
    }

    /// True when the session is encrypted.
    pub fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    /// The user AUTH succeeded for.
    pub fn authenticated(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    /// The local address of the connection (the source address).
    pub fn local_addr(&self) -> SocketAddr {
        self.conn.local()
    }

    /// The host's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.conn.peer()
    }

    fn deadline(&self, phase: Phase) -> Duration {
        let t = &self.settings.timeouts;
        match phase {
            Phase::Connect => t.connect,
            Phase::Greeting | Phase::Hello | Phase::Tls | Phase::Auth | Phase::Quit => t.ehlo,
            Phase::Rset | Phase::MailFrom => t.mail_from,
            Phase::RcptTo => t.rcpt_to,
            Phase::Data => t.data,
        }
    }

    /// The next reply. A 421 ends the session as the server's refusal.
    pub(crate) async fn read(&mut self, phase: Phase) -> Result<Reply, SessionError> {
        loop {
            let mut bytes = &self.conn.buf[..];
            let parsed = self
                .parser
                .parse(&mut bytes)
                .map_err(|error| SessionError::Protocol { phase, error });
            let used = self.conn.buf.len() - bytes.len();
            self.conn.buf.drain(..used);
            if let Some(reply) = parsed? {
                if reply.code == 421 {
                    return Err(SessionError::Rejected { phase, reply });
                }
                return Ok(reply);
            }
            let n = self
                .conn
                .read_more(self.deadline(phase))
                .await
                .map_err(|e| SessionError::io(phase, e))?;
            if n == 0 {
                let eof =
                    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
                return Err(SessionError::io(phase, eof));
            }
        }
    }

    pub(crate) async fn write(&mut self, bytes: &[u8], phase: Phase) -> Result<(), SessionError> {
        let limit = self.deadline(phase);
        self.conn
            .write_all(bytes, limit)
            .await
            .map_err(|e| SessionError::io(phase, e))
    }

    async fn command(&mut self, line: &[u8], phase: Phase) -> Result<Reply, SessionError> {
        self.write(line, phase).await?;
        self.read(phase).await
    }

    async fn hello(&mut self) -> Result<(), SessionError> {
        let verb = match self.settings.protocol {
            Protocol::Esmtp => "EHLO",
            Protocol::Smtp => "HELO",
            Protocol::Lmtp => "LHLO",
        };
        let mut line = Vec::new();
        command::hello(verb, &self.settings.helo_name, &mut line)?;
        let mut reply = self.command(&line, Phase::Hello).await?;
        if self.settings.protocol == Protocol::Esmtp && matches!(reply.code, 500..=504 | 550) {
            line.clear();
            command::hello("HELO", &self.settings.helo_name, &mut line)?;
            reply = self.command(&line, Phase::Hello).await?;
            self.caps = Capabilities::default();
            return check_hello(reply);
        }
        self.caps = if self.settings.protocol == Protocol::Smtp {
            Capabilities::default()
        } else {
            Capabilities::from_ehlo(&reply)
        };
        check_hello(reply)
    }

    async fn start_tls(self) -> Result<Session, SessionError> {
        let Some(config) = self.settings.tls_config.clone() else {
            return Err(SessionError::Tls("no TLS configuration".into()));
        };
        let name = crate::tls::server_name(&self.settings.server_name)
            .map_err(|e| SessionError::Tls(e.to_string()))?;
        let limit = self.deadline(Phase::Tls);
        let Session {
            conn,
            settings,
            greeting,
            used,
            authenticated,
            ..
        } = self;
        let conn = conn
            .client_tls(config, name, limit)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::TimedOut => SessionError::Timeout { phase: Phase::Tls },
                _ => SessionError::Tls(e.to_string()),
            })?;
        Ok(Session {
            conn,
            parser: ReplyParser::default(),
            settings,
            caps: Capabilities::default(),
            greeting,
            used,
            authenticated,
        })
    }

    async fn starttls(mut self) -> Result<Session, SessionError> {
        let required = self.settings.tls == TlsMode::Required;
        if !self.caps.starttls || self.settings.tls_config.is_none() {
            if required {
                let why = if self.caps.starttls {
                    "no TLS configuration is available".to_owned()
                } else {
                    format!("{} does not offer STARTTLS", self.settings.server_name)
                };
                return Err(SessionError::TlsRequired(why));
            }
            return Ok(self);
        }
        let reply = self.command(b"STARTTLS\r\n", Phase::Tls).await?;
        if reply.code != 220 {
            if required {
                return Err(SessionError::TlsRequired(format!(
                    "STARTTLS was refused: {reply}"
                )));
            }
            return Ok(self);
        }
        let mut session = self.start_tls().await?;
        session.hello().await?;
        Ok(session)
    }

    async fn authenticate(&mut self) -> Result<(), SessionError> {
        let Some(creds) = self.settings.auth.clone() else {
            return Ok(());
        };
        if !self.conn.is_tls() && !self.settings.auth_without_tls {
            return Err(SessionError::Auth(
                "not attempted: the connection is not encrypted (the route must say tls=no to allow that)".into(),
            ));
        }
        let mechanism = creds.mechanism.to_string();
        if !self.caps.offers_auth(&mechanism) {
            return Err(SessionError::Auth(format!(
                "{} does not offer AUTH {mechanism}",
                self.settings.server_name
            )));
        }
        let reply = match creds.mechanism {
            AuthMech::Plain => {
                let line = command::auth_plain(&creds.user, &creds.password);
                self.command(line.as_bytes(), Phase::Auth).await?
            }
            AuthMech::Login => {
                let mut reply = self.command(b"AUTH LOGIN\r\n", Phase::Auth).await?;
                for value in [&creds.user, &creds.password] {
                    if reply.code != 334 {
                        break;
                    }
                    let line = command::sasl_line(value);
                    reply = self.command(line.as_bytes(), Phase::Auth).await?;
                }
                reply
            }
        };
        if reply.code != 235 {
            return Err(SessionError::Auth(format!("{reply}")));
        }
        self.authenticated = Some(creds.user);
        Ok(())
    }

    /// Ends the session politely: QUIT, its reply, and a clean close.
    pub async fn quit(mut self) {
        if self.command(b"QUIT\r\n", Phase::Quit).await.is_ok() {
            let limit = self.deadline(Phase::Quit);
            self.conn.shutdown(limit).await;
        }
    }
}

fn check_hello(reply: Reply) -> Result<(), SessionError> {
    if reply.code == 250 {
        Ok(())
    } else {
        Err(SessionError::Rejected {
            phase: Phase::Hello,
            reply,
        })
    }
}
