//! The command loop of a server session. A message's data (DATA, BDAT
//! and their end) is in `data.rs`, the AUTH exchange in `auth.rs`.

mod auth;
mod data;

use std::io;
use std::sync::Arc;
use std::time::Instant;

use memchr::memchr;
use smtp_proto::{MAIL_BODY_8BITMIME, MAIL_SMTPUTF8, Request};
use tokio::net::TcpStream;

use self::data::Chunks;
use super::{Envelope, Handler, ServerSettings};
use crate::Reply;
use crate::stream::Conn;

/// The longest command line accepted, CRLF included. RFC 5321 asks for at
/// least 512; extensions make lines longer.
const MAX_LINE: usize = 4096;

/// Why the session ended.
#[derive(Debug)]
enum End {
    /// QUIT, or a limit that closed the session with 421.
    Closed,
    /// The client went away.
    Eof,
}

/// A session's state between commands.
struct Session<'h, H: Handler> {
    conn: Conn,
    settings: Arc<ServerSettings>,
    handler: &'h mut H,
    out: Vec<u8>,
    helo: Option<String>,
    auth: Option<String>,
    envelope: Option<Envelope>,
    /// The body so far of a transaction sent with BDAT.
    chunks: Option<Chunks>,
    idle_commands: usize,
    errors: usize,
    /// Reads from the client so far, and the count when the last message
    /// ended: a MAIL read with no read since came in the same write.
    reads: u64,
    ended_at: Option<u64>,
}

fn reply(code: u16, status: (u8, u8, u8), text: &str) -> Reply {
    Reply::with_status(code, status, text)
}

/// Serves one connection until QUIT, a limit, an error or the client
/// leaving. I/O errors and timeouts end the session quietly (a timeout
/// with `421 4.4.2` first); nothing the client sends can panic it.
pub async fn serve<H: Handler>(
    tcp: TcpStream,
    settings: Arc<ServerSettings>,
    handler: &mut H,
) -> io::Result<()> {
    let mut conn = Conn::new(tcp)?;
    if settings.implicit_tls
        && let Some(config) = settings.tls.clone()
    {
        conn = conn.server_tls(config, settings.command_timeout).await?;
    }
    let greeting = handler.greeting(&settings.hostname, conn.peer()).await;
    let mut s = Session {
        conn,
        settings,
        handler,
        out: Vec::with_capacity(1024),
        helo: None,
        auth: None,
        envelope: None,
        chunks: None,
        idle_commands: 0,
        errors: 0,
        reads: 0,
        ended_at: None,
    };
    let refused = greeting.code != 220;
    s.push(&greeting);
    if refused {
        return s.flush().await;
    }
    match s.run().await {
        Ok(_) => {
            s.flush().await?;
            let limit = s.settings.command_timeout;
            s.conn.shutdown(limit).await;
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            s.push(&reply(421, (4, 4, 2), "timeout, closing connection"));
            s.flush().await
        }
        Err(e) => Err(e),
    }
}

impl<H: Handler> Session<'_, H> {
    /// Ends the open transaction, if any (its chunks too).
    fn reset(&mut self) {
        self.envelope = None;
        self.chunks = None;
    }

    fn push(&mut self, r: &Reply) {
        r.write_to(&mut self.out);
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let result = self
            .conn
            .write_all(&out, self.settings.command_timeout)
            .await;
        self.out = out;
        self.out.clear();
        result
    }

    /// Sends what is pending, then reads more input before `deadline`;
    /// `Ok(false)` at EOF, or when the server stops while the session
    /// waits for a command with no transaction open (after `421 4.3.2`).
    async fn fill(&mut self, deadline: Instant) -> io::Result<bool> {
        self.flush().await?;
        let limit = deadline.saturating_duration_since(Instant::now());
        if limit.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let mut shutdown = self
            .settings
            .shutdown
            .clone()
            .filter(|_| self.envelope.is_none());
        let stopping = async {
            match shutdown.as_mut() {
                Some(s) => {
                    let _ = s.wait_for(|stop| *stop).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            n = self.conn.read_more(limit) => {
                self.reads += 1;
                Ok(n? > 0)
            }
            () = stopping => {
                self.push(&reply(421, (4, 3, 2), "shutting down, try again later"));
                self.flush().await?;
                Ok(false)
            }
        }
    }

    /// Reads complete command lines and runs them. A line longer than
    /// [`MAX_LINE`] is skipped through its end and answered `500 5.5.2`.
    async fn run(&mut self) -> io::Result<End> {
        let mut discarding = false;
        // Each command must arrive whole within `command_timeout`.
        let mut deadline = crate::stream::deadline(self.settings.command_timeout);
        loop {
            let Some(end) = memchr(b'\n', &self.conn.buf) else {
                if self.conn.buf.len() > MAX_LINE {
                    self.conn.buf.clear();
                    discarding = true;
                }
                if !self.fill(deadline).await? {
                    return Ok(End::Eof);
                }
                continue;
            };
            deadline = crate::stream::deadline(self.settings.command_timeout);
            let line: Vec<u8> = self.conn.buf.drain(..=end).collect();
            if std::mem::take(&mut discarding) || line.len() > MAX_LINE {
                if self.error(&reply(500, (5, 5, 2), "line too long")) {
                    return Ok(End::Closed);
                }
                continue;
            }
            if self.settings.xclient
                && let Some(attributes) = crate::xclient::parse(&line)
            {
                if let Some(refusal) = self.handler.xclient(attributes).await {
                    self.push(&refusal);
                    continue;
                }
                self.reset();
                self.helo = None;
                let greeting = reply(220, (2, 0, 0), &format!("{} ESMTP", self.settings.hostname));
                self.push(&greeting);
                continue;
            }
            let request = match parse_command(&line) {
                Ok(request) => request,
                Err(r) => {
                    if self.error(&r) {
                        return Ok(End::Closed);
                    }
                    continue;
                }
            };
            if let Some(end) = self.command(request).await? {
                return Ok(end);
            }
        }
    }

    /// Answers a bad command; true when that was one too many.
    fn error(&mut self, r: &Reply) -> bool {
        self.push(r);
        self.errors += 1;
        if self.errors > self.settings.max_errors {
            self.push(&reply(
                421,
                (4, 7, 0),
                "too many errors, closing connection",
            ));
            return true;
        }
        false
    }

    /// Counts a command that starts no transaction; true when over limit.
    fn idle(&mut self) -> bool {
        self.idle_commands += 1;
        if self.idle_commands > self.settings.max_idle_commands {
            self.push(&reply(
                421,
                (4, 7, 0),
                "too many commands without mail, closing connection",
            ));
            return true;
        }
        false
    }

    fn auth_offered(&self) -> bool {
        self.settings.offer_auth && (self.conn.is_tls() || self.settings.auth_without_tls)
    }

    fn ehlo_reply(&self, extended: bool) -> Reply {
        let mut lines = vec![format!("{} greets you", self.settings.hostname)];
        if extended {
            lines.extend(["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"].map(String::from));
            if self.settings.smtputf8 {
                lines.push("SMTPUTF8".into());
            }
            lines.push(format!("SIZE {}", self.settings.max_message_size));
            if self.settings.chunking {
                lines.push("CHUNKING".into());
            }
            if self.settings.tls.is_some() && !self.conn.is_tls() {
                lines.push("STARTTLS".into());
            }
            if self.auth_offered() {
                lines.push("AUTH PLAIN LOGIN".into());
            }
            if self.settings.xclient {
                lines.push("XCLIENT ADDR NAME HELO PROTO".into());
            }
        }
        Reply {
            code: 250,
            status: None,
            lines,
        }
    }

    /// Runs one command; `Some` ends the session.
    async fn command(&mut self, request: Request<String>) -> io::Result<Option<End>> {
        let lmtp = self.settings.lmtp;
        let idle = matches!(
            request,
            Request::Ehlo { .. }
                | Request::Helo { .. }
                | Request::Lhlo { .. }
                | Request::Rset
                | Request::Noop { .. }
                | Request::Vrfy { .. }
                | Request::Help { .. }
        );
        match request {
            Request::Ehlo { .. } | Request::Helo { .. } if lmtp => {
                let r = reply(500, (5, 5, 1), "this is an LMTP server: use LHLO");
                return Ok(self.error(&r).then_some(End::Closed));
            }
            Request::Lhlo { .. } if !lmtp => {
                let r = reply(500, (5, 5, 1), "LHLO is for LMTP: use EHLO");
                return Ok(self.error(&r).then_some(End::Closed));
            }
            Request::Ehlo { host } | Request::Lhlo { host } => {
                self.reset();
                self.helo = Some(host);
                let r = self.ehlo_reply(true);
                self.push(&r);
            }
            Request::Helo { host } => {
                self.reset();
                self.helo = Some(host);
                let r = self.ehlo_reply(false);
                self.push(&r);
            }
            Request::Mail { from } => self.mail(from).await,
            Request::Rcpt { to } => return Ok(self.rcpt(to.address).await),
            Request::Data => return self.data().await,
            Request::Bdat {
                chunk_size,
                is_last,
            } if self.settings.chunking => return self.bdat(chunk_size, is_last).await,
            Request::Rset => {
                self.reset();
                self.push(&reply(250, (2, 0, 0), "reset"));
            }
            Request::Noop { .. } => self.push(&reply(250, (2, 0, 0), "ok")),
            Request::Quit => {
                self.push(&reply(221, (2, 0, 0), "bye"));
                return Ok(Some(End::Closed));
            }
            Request::Vrfy { .. } => self.push(&reply(
                252,
                (2, 5, 2),
                "cannot verify, send mail to find out",
            )),
            Request::Help { .. } => self.push(&reply(214, (2, 0, 0), "see RFC 5321")),
            Request::StartTls => return self.starttls().await,
            Request::Auth {
                mechanism,
                initial_response,
            } => return self.authenticate(mechanism, initial_response).await,
            Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }
            | Request::Bdat { .. } => {
                let r = reply(502, (5, 5, 1), "command not implemented");
                return Ok(self.error(&r).then_some(End::Closed));
            }
        }
        if idle && self.idle() {
            return Ok(Some(End::Closed));
        }
        Ok(None)
    }

    async fn mail(&mut self, from: smtp_proto::MailFrom<String>) {
        let Some(helo) = self.helo.clone() else {
            self.push(&reply(503, (5, 5, 1), "send EHLO or HELO first"));
            return;
        };
        if self.envelope.is_some() {
            self.push(&reply(
                503,
                (5, 5, 1),
                "a transaction is already open: RSET first",
            ));
            return;
        }
        if self.settings.require_tls && !self.conn.is_tls() {
            self.push(&reply(
                530,
                (5, 7, 0),
                "must issue a STARTTLS command first",
            ));
            return;
        }
        if self.settings.require_auth && self.auth.is_none() {
            self.push(&reply(530, (5, 7, 0), "authentication required"));
            return;
        }
        let declared = (from.size > 0).then_some(from.size as u64);
        if declared.is_some_and(|n| n > self.settings.max_message_size) {
            self.push(&reply(
                552,
                (5, 3, 4),
                "message size exceeds fixed maximum message size",
            ));
            return;
        }
        let smtputf8 = self.settings.smtputf8 && from.flags & MAIL_SMTPUTF8 != 0;
        if !from.address.is_ascii() && !smtputf8 {
            self.push(&reply(
                553,
                (5, 6, 7),
                "a non-ASCII address needs the SMTPUTF8 parameter",
            ));
            return;
        }
        let envelope = Envelope {
            peer: self.conn.peer(),
            local: self.conn.local(),
            helo,
            tls: self.conn.is_tls(),
            auth: self.auth.clone(),
            mail_from: without_trailing_dot(from.address),
            declared_size: declared,
            eight_bit: from.flags & MAIL_BODY_8BITMIME != 0,
            smtputf8,
            rcpt_to: Vec::new(),
            chunked: false,
            pipelined: self.ended_at == Some(self.reads),
        };
        let r = self.handler.mail_from(&envelope).await;
        if r.is_positive() {
            self.envelope = Some(envelope);
            self.chunks = None;
            self.idle_commands = 0;
        }
        self.push(&r);
    }

    async fn rcpt(&mut self, to: String) -> Option<End> {
        let Some(envelope) = self.envelope.take() else {
            let r = reply(503, (5, 5, 1), "send MAIL first");
            return self.error(&r).then_some(End::Closed);
        };
        if !to.is_ascii() && !envelope.smtputf8 {
            self.envelope = Some(envelope);
            self.push(&reply(
                553,
                (5, 6, 7),
                "a non-ASCII address needs MAIL FROM with SMTPUTF8",
            ));
            return None;
        }
        // `postmaster` alone is this server's postmaster.
        let to = match to.eq_ignore_ascii_case("postmaster") {
            true => format!("postmaster@{}", self.settings.hostname),
            false => without_trailing_dot(to),
        };
        if envelope.rcpt_to.len() >= self.settings.max_recipients {
            self.push(&reply(452, (4, 5, 3), "too many recipients"));
            self.envelope = Some(envelope);
            return None;
        }
        let r = self.handler.rcpt_to(&envelope, &to).await;
        let mut envelope = envelope;
        if r.is_positive() {
            envelope.rcpt_to.push(to);
        }
        self.envelope = Some(envelope);
        self.push(&r);
        None
    }

    async fn starttls(&mut self) -> io::Result<Option<End>> {
        let Some(config) = self.settings.tls.clone() else {
            let r = reply(502, (5, 5, 1), "STARTTLS not available");
            return Ok(self.error(&r).then_some(End::Closed));
        };
        if self.conn.is_tls() {
            let r = reply(503, (5, 5, 1), "TLS is already active");
            return Ok(self.error(&r).then_some(End::Closed));
        }
        self.push(&reply(220, (2, 0, 0), "ready to start TLS"));
        self.flush().await?;
        // Anything the client sent after STARTTLS is refused by the
        // upgrade (no plaintext may cross into the TLS session).
        self.conn = self
            .conn
            .take()
            .server_tls(config, self.settings.command_timeout)
            .await?;
        self.helo = None;
        self.auth = None;
        self.reset();
        Ok(None)
    }
}

/// One command line (CRLF included) as a request, or the reply that
/// refuses it.
pub fn parse_command(line: &[u8]) -> Result<Request<String>, Reply> {
    if line.len() > MAX_LINE {
        return Err(reply(500, (5, 5, 2), "line too long"));
    }
    if std::str::from_utf8(line).is_err() {
        // Never replaced and passed on: an address must be valid UTF-8.
        let verb = line.get(..4).map(<[u8]>::to_ascii_uppercase);
        return Err(match verb.as_deref() {
            Some(b"MAIL") => reply(553, (5, 1, 7), "the sender address is not valid UTF-8"),
            Some(b"RCPT") => reply(553, (5, 1, 3), "the recipient address is not valid UTF-8"),
            _ => reply(500, (5, 5, 2), "the command is not valid UTF-8"),
        });
    }
    // RFC 5321 4.5.1: `postmaster` without a domain is always accepted.
    let upper = line.to_ascii_uppercase();
    if upper.starts_with(b"RCPT TO:<POSTMASTER>") {
        return Ok(Request::Rcpt {
            to: smtp_proto::RcptTo {
                address: "postmaster".to_owned(),
                ..Default::default()
            },
        });
    }
    Request::parse(&mut line.iter())
        .map(Request::into_owned)
        .map_err(|e| protocol_error(&e))
}

/// `user@example.com.` as `user@example.com`: one queue, and no dot on
/// the wire.
fn without_trailing_dot(mut address: String) -> String {
    if address.contains('@') && address.ends_with('.') {
        address.pop();
    }
    address
}

/// The reply to a command smtp-proto could not parse.
fn protocol_error(e: &smtp_proto::Error) -> Reply {
    use smtp_proto::Error as E;
    match e {
        E::UnknownCommand => reply(500, (5, 5, 2), "command not recognized"),
        E::InvalidSenderAddress => reply(501, (5, 1, 7), "bad sender address syntax"),
        E::InvalidRecipientAddress => reply(501, (5, 1, 3), "bad recipient address syntax"),
        E::SyntaxError { syntax } => reply(501, (5, 5, 4), &format!("syntax: {syntax}")),
        E::InvalidParameter { param } => {
            reply(501, (5, 5, 4), &format!("invalid parameter {param}"))
        }
        E::UnsupportedParameter { param } => {
            reply(555, (5, 5, 4), &format!("unsupported parameter {param}"))
        }
        E::ResponseTooLong => reply(500, (5, 5, 2), "line too long"),
        E::NeedsMoreData { .. } | E::InvalidResponse { .. } => {
            reply(500, (5, 5, 2), "syntax error")
        }
    }
}
