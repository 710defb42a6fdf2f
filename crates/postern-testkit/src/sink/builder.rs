//! How a test asks a sink to behave, and how the sink starts.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_smtp::Reply;
use postern_smtp::server::ServerSettings;
use tokio::sync::oneshot;

use super::{Behaviour, Shared, Sink, State, key, run};

/// Builds a sink.
#[derive(Debug, Clone)]
pub struct SinkBuilder {
    ip: IpAddr,
    port: u16,
    behaviour: Behaviour,
}

impl SinkBuilder {
    /// A sink on 127.0.0.1 that accepts everything.
    pub(super) fn new() -> Self {
        Self {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            behaviour: Behaviour::default(),
        }
    }

    /// Listen on this loopback address (any 127.0.0.x, or ::1).
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = ip;
        self
    }

    /// Listen on this port (default: any free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Speak LMTP instead of SMTP.
    pub fn lmtp(mut self) -> Self {
        self.behaviour.lmtp = true;
        self
    }

    /// Answer `RCPT TO:<recipient>` with 451 4.2.1.
    pub fn tempfail_rcpt(mut self, recipient: &str) -> Self {
        let r = Reply::with_status(451, (4, 2, 1), "mailbox busy, try later");
        self.behaviour.at_rcpt.insert(key(recipient), r);
        self
    }

    /// Answer `RCPT TO:<recipient>` with 550 5.1.1.
    pub fn permfail_rcpt(mut self, recipient: &str) -> Self {
        let r = Reply::with_status(550, (5, 1, 1), "no such user");
        self.behaviour.at_rcpt.insert(key(recipient), r);
        self
    }

    /// LMTP: accept `recipient` at RCPT, then answer `reply` for it after
    /// DATA (the other recipients get 250).
    pub fn lmtp_reply(mut self, recipient: &str, reply: Reply) -> Self {
        self.behaviour.after_data.insert(key(recipient), reply);
        self
    }

    /// Answer the end of DATA with 451 4.3.0 for the first `n` messages.
    pub fn tempfail_first(mut self, n: usize) -> Self {
        self.behaviour.tempfail_first = n;
        self
    }

    /// Close the connection as soon as the body starts arriving.
    pub fn drop_during_data(mut self) -> Self {
        self.behaviour.drop_during_data = true;
        self
    }

    /// Close the connection after the final dot, without a reply.
    pub fn drop_after_data(mut self) -> Self {
        self.behaviour.drop_after_data = true;
        self
    }

    /// Wait this long before every reply (greeting included).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.behaviour.delay = delay;
        self
    }

    /// Offer STARTTLS with this configuration.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.behaviour.tls = Some(config);
        self
    }

    /// Speak TLS from the first byte (SMTPS) with this configuration.
    pub fn implicit_tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.behaviour.tls = Some(config);
        self.behaviour.implicit_tls = true;
        self
    }

    /// Refuse MAIL (530 5.7.0) until STARTTLS.
    pub fn require_tls(mut self) -> Self {
        self.behaviour.require_tls = true;
        self
    }

    /// Offer AUTH PLAIN and LOGIN for these credentials, with or without
    /// TLS (a client must decide whether to send them in the clear).
    pub fn auth(mut self, user: &str, password: &str) -> Self {
        self.behaviour.auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Refuse MAIL (530 5.7.0) until AUTH.
    pub fn require_auth(mut self) -> Self {
        self.behaviour.require_auth = true;
        self
    }

    /// Greet with `421 4.7.0 too many connections` while more than `n`
    /// connections are open (a provider's connection limit).
    pub fn refuse_beyond(mut self, n: usize) -> Self {
        self.behaviour.refuse_beyond = Some(n);
        self
    }

    /// Answer `MAIL` with `451 4.7.28 rate limited` beyond `n` messages
    /// in a second (a provider's rate limit).
    pub fn rate_limit(mut self, n: u32) -> Self {
        self.behaviour.rate_limit = Some(n);
        self
    }

    /// Answer every `n`-th message with `451 4.3.0` at the end of DATA.
    pub fn tempfail_every(mut self, n: usize) -> Self {
        self.behaviour.tempfail_every = Some(n.max(1));
        self
    }

    /// Answer every `n`-th message with `550 5.1.1` at the end of DATA.
    pub fn permfail_every(mut self, n: usize) -> Self {
        self.behaviour.permfail_every = Some(n.max(1));
        self
    }

    /// Close the first `n` connections as soon as they are accepted.
    pub fn drop_first(mut self, n: usize) -> Self {
        self.behaviour.drop_first = n;
        self
    }

    /// Do not offer SMTPUTF8 (a next hop that cannot take non-ASCII
    /// addresses).
    pub fn no_smtputf8(mut self) -> Self {
        self.behaviour.no_smtputf8 = true;
        self
    }

    /// Do not offer CHUNKING (clients send DATA).
    pub fn no_chunking(mut self) -> Self {
        self.behaviour.no_chunking = true;
        self
    }

    /// Offer XCLIENT (Postfix's extension) and record its attributes with
    /// each message (a primary server that trusts this client).
    pub fn xclient(mut self) -> Self {
        self.behaviour.xclient = true;
        self
    }

    /// Offer XCLIENT but take it once a connection: a later one gets
    /// `550 5.7.0` and the session goes on for the first client.
    pub fn xclient_once(mut self) -> Self {
        self.behaviour.xclient = true;
        self.behaviour.xclient_once = true;
        self
    }

    /// Keep only envelopes, Message-IDs and arrival times, not bodies
    /// (for load tests with many messages).
    pub fn drop_bodies(mut self) -> Self {
        self.behaviour.drop_bodies = true;
        self
    }

    /// Binds and starts serving.
    pub fn start(self) -> io::Result<Sink> {
        let listener = std::net::TcpListener::bind(SocketAddr::new(self.ip, self.port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            allowed: self.behaviour.refuse_beyond,
            ..State::default()
        }));
        let mut settings = ServerSettings::new("sink.test");
        let b = &self.behaviour;
        settings.lmtp = b.lmtp;
        settings.tls = b.tls.clone();
        settings.implicit_tls = b.implicit_tls;
        settings.auth_without_tls = true;
        settings.require_tls = b.require_tls;
        settings.smtputf8 = !b.no_smtputf8;
        settings.chunking = !b.no_chunking;
        settings.xclient = b.xclient;
        settings.offer_auth = b.auth.is_some();
        settings.require_auth = b.require_auth;
        settings.command_timeout = Duration::from_secs(30);
        settings.data_timeout = Duration::from_secs(30);
        let shared = Shared {
            behaviour: Arc::new(self.behaviour),
            state: state.clone(),
            settings: Arc::new(settings),
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("testkit-sink-{addr}"))
            .spawn(move || run(listener, shared, stop_rx))?;
        Ok(Sink {
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}
