//! Opening a client session: connect, TLS, greeting, EHLO, STARTTLS, AUTH.

use std::net::SocketAddr;
use std::time::Duration;

use postern_conf::{AuthMech, TlsMode};
use tokio::net::{TcpSocket, TcpStream};

use super::{ClientSettings, Phase, Protocol, SessionError, Step};
use crate::caps::Capabilities;
use crate::command;
use crate::reply::{Reply, ReplyParser};
use crate::stream::Conn;
use crate::xclient::Xclient;
use rustls::client::danger::ServerCertVerifier;

/// An open session, ready for a transaction.
#[derive(Debug)]
pub struct Session {
    pub(super) conn: Conn,
    parser: ReplyParser,
    pub(super) settings: ClientSettings,
    pub(super) caps: Capabilities,
    greeting: Reply,
    /// A transaction ran on this session: send RSET before the next.
    pub(super) used: bool,
    /// The client XCLIENT made the server take this session for. A
    /// message of another client, or of none, needs XCLIENT of its own
    /// first (so it never shares a write), and goes on another session
    /// where the server does not take it.
    pub(super) speaks_for: Option<Xclient>,
    /// Who we authenticated as.
    authenticated: Option<String>,
    trace: Vec<Step>,
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

/// How a command shows in a trace: AUTH payloads masked.
fn shown(line: &[u8], phase: Phase) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    if phase != Phase::Auth {
        return text.to_owned();
    }
    let mut words = text.split(' ');
    match (words.next(), words.next(), words.next()) {
        (Some(verb), Some(mechanism), None) if verb.eq_ignore_ascii_case("AUTH") => {
            format!("AUTH {mechanism}")
        }
        (Some(verb), Some(mechanism), Some(_)) if verb.eq_ignore_ascii_case("AUTH") => {
            format!("AUTH {mechanism} ****")
        }
        _ => "****".into(),
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
            Err((SessionError::Tls(_), _))
                if settings.tls == TlsMode::IfAvailable && !settings.implicit_tls =>
            {
                let plain = ClientSettings {
                    tls: TlsMode::No,
                    ..settings.clone()
                };
                Self::open(addr, plain).await.map_err(|(e, _)| e)
            }
            other => other.map_err(|(e, _)| e),
        }
    }

    /// Like [`connect`](Self::connect) without the plaintext retry, with
    /// every step recorded, for a person checking a route.
    pub async fn connect_traced(
        addr: SocketAddr,
        settings: &ClientSettings,
    ) -> (Result<Session, SessionError>, Vec<Step>) {
        let settings = ClientSettings {
            trace: true,
            ..settings.clone()
        };
        match Self::open(addr, settings).await {
            Ok(mut session) => {
                let trace = std::mem::take(&mut session.trace);
                (Ok(session), trace)
            }
            Err((e, trace)) => (Err(e), trace),
        }
    }

    async fn open(
        addr: SocketAddr,
        settings: ClientSettings,
    ) -> Result<Session, (SessionError, Vec<Step>)> {
        let what = format!("connect {addr}");
        let tcp = match tcp_connect(addr, &settings).await {
            Ok(tcp) => tcp,
            Err(e) => {
                let step = Step {
                    what,
                    outcome: e.to_string(),
                    ok: false,
                };
                return Err((e, vec![step]));
            }
        };
        let conn = Conn::new(tcp).map_err(|e| (SessionError::io(Phase::Connect, e), Vec::new()))?;
        let mut session = Session {
            parser: ReplyParser::default(),
            caps: Capabilities::default(),
            greeting: Reply::new(0, None, ""),
            used: false,
            speaks_for: None,
            authenticated: None,
            trace: Vec::new(),
            settings,
            conn,
        };
        let from = format!("connected from {}", session.conn.local());
        session.record(what, from, true);
        match session.handshake().await {
            Ok(()) => Ok(session),
            Err(e) => Err((e, std::mem::take(&mut session.trace))),
        }
    }

    fn record(&mut self, what: String, outcome: String, ok: bool) {
        if self.settings.trace {
            self.trace.push(Step { what, outcome, ok });
        }
    }

    async fn handshake(&mut self) -> Result<(), SessionError> {
        if self.settings.implicit_tls {
            self.start_tls().await?;
        }
        let greeting = self.read(Phase::Greeting).await;
        let shown = greeting
            .as_ref()
            .map_or_else(ToString::to_string, ToString::to_string);
        let ok = matches!(&greeting, Ok(r) if r.code == 220);
        self.record("greeting".into(), shown, ok);
        let greeting = greeting?;
        if !ok {
            return Err(SessionError::Rejected {
                phase: Phase::Greeting,
                reply: greeting,
            });
        }
        self.greeting = greeting;
        self.hello().await?;
        if !self.conn.is_tls() && self.settings.tls != TlsMode::No {
            self.starttls().await?;
        }
        if self.settings.auth.is_some() {
            self.authenticate().await?;
        }
        Ok(())
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

    /// With [`ClientSettings::tls_check`]: why this session would not do
    /// for a policy that demands TLS with a trusted certificate for the
    /// host's name (no TLS, or the certificate's fault); `None` when it
    /// would, or when no check was asked for.
    pub fn tls_check(&self) -> Option<String> {
        let verifier = self.settings.tls_check.as_ref()?;
        let Some((cert, chain)) = self.conn.peer_certificates().and_then(|c| c.split_first())
        else {
            return Some("no TLS".into());
        };
        let name = match crate::tls::server_name(&self.settings.server_name) {
            Ok(n) => n,
            Err(e) => return Some(e.to_string()),
        };
        verifier
            .verify_server_cert(cert, chain, &name, &[], rustls::pki_types::UnixTime::now())
            .err()
            .map(|e| format!("TLS certificate: {e}"))
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
            Phase::Data | Phase::DataEnd => t.data,
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

    /// Sends one command line and reads its reply.
    pub(super) async fn command(
        &mut self,
        line: &[u8],
        phase: Phase,
    ) -> Result<Reply, SessionError> {
        self.write(line, phase).await?;
        let reply = self.read(phase).await;
        if self.settings.trace {
            let outcome = reply
                .as_ref()
                .map_or_else(ToString::to_string, ToString::to_string);
            let ok = matches!(&reply, Ok(r) if r.is_positive());
            self.record(shown(line, phase), outcome, ok);
        }
        reply
    }

    /// Whether a message of `client` needs XCLIENT before it: the session
    /// speaks for another client than `client`, or for none while
    /// `client` is one and the server offers XCLIENT.
    pub(super) fn changes_client(&self, client: Option<&Xclient>) -> bool {
        match &self.speaks_for {
            Some(current) => client != Some(current),
            None => client.is_some() && self.settings.xclient && self.caps.xclient.is_some(),
        }
    }

    /// Tells the server the original client (when it offers XCLIENT),
    /// then says EHLO again; true when the server took it. A refused
    /// XCLIENT leaves a session that speaks for nobody as it was. A
    /// session that speaks for a client cannot carry a message of
    /// another, or of none, unless the server takes its XCLIENT (for no
    /// client: the session's own address, as the server saw it before);
    /// where the server refuses it or no longer offers XCLIENT, the
    /// message must go on another session (`SessionError::OtherClient`).
    pub(super) async fn xclient(&mut self, client: Option<&Xclient>) -> Result<bool, SessionError> {
        if !self.changes_client(client) {
            return Ok(false);
        }
        let own;
        let x = match client {
            Some(x) => x,
            None => {
                own = Xclient {
                    addr: self.local_addr().ip(),
                    name: None,
                    helo: self.settings.helo_name.clone(),
                    proto: match self.settings.protocol {
                        Protocol::Smtp => "SMTP",
                        Protocol::Esmtp | Protocol::Lmtp => "ESMTP",
                    }
                    .to_owned(),
                };
                &own
            }
        };
        let Some(offered) = self.caps.xclient.clone() else {
            return self.unchanged("XCLIENT is no longer offered".to_owned());
        };
        let reply = self.command(&x.command(&offered), Phase::Hello).await?;
        if reply.code != 220 {
            return self.unchanged(format!("XCLIENT refused: {reply}"));
        }
        self.speaks_for = client.cloned();
        self.hello().await?;
        Ok(true)
    }

    /// XCLIENT was not taken: the session goes on as it was, unless it
    /// speaks for a client other than this message's.
    fn unchanged(&self, why: String) -> Result<bool, SessionError> {
        if self.speaks_for.is_some() {
            return Err(SessionError::OtherClient(why));
        }
        Ok(false)
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

    /// The TLS handshake on the open connection (implicit TLS or after
    /// STARTTLS's 220).
    async fn start_tls(&mut self) -> Result<(), SessionError> {
        let Some(config) = self.settings.tls_config.clone() else {
            return Err(SessionError::Tls("no TLS configuration".into()));
        };
        let name = crate::tls::server_name(&self.settings.server_name)
            .map_err(|e| SessionError::Tls(e.to_string()))?;
        let limit = self.deadline(Phase::Tls);
        let result = self.conn.take().client_tls(config, name, limit).await;
        match result {
            Ok(conn) => {
                self.conn = conn;
                self.parser = ReplyParser::default();
                self.caps = Capabilities::default();
                let outcome = self.conn.tls_description();
                self.record("TLS handshake".into(), outcome, true);
                Ok(())
            }
            Err(e) => {
                self.record("TLS handshake".into(), e.to_string(), false);
                Err(match e.kind() {
                    std::io::ErrorKind::TimedOut => SessionError::Timeout { phase: Phase::Tls },
                    _ => SessionError::Tls(e.to_string()),
                })
            }
        }
    }

    async fn starttls(&mut self) -> Result<(), SessionError> {
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
            return Ok(());
        }
        let reply = self.command(b"STARTTLS\r\n", Phase::Tls).await?;
        if reply.code != 220 {
            if required {
                return Err(SessionError::TlsRequired(format!(
                    "STARTTLS was refused: {reply}"
                )));
            }
            return Ok(());
        }
        self.start_tls().await?;
        self.hello().await
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
    pub async fn quit(mut self) -> Result<Reply, SessionError> {
        let reply = self.command(b"QUIT\r\n", Phase::Quit).await?;
        let limit = self.deadline(Phase::Quit);
        self.conn.shutdown(limit).await;
        Ok(reply)
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
