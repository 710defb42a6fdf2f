//! SMTP and LMTP sinks: real servers on loopback that do what a test tells
//! them and record what they saw.
//!
//! A sink speaks through postern-smtp's server session, on its own thread
//! and runtime, and stops when dropped. Interoperability with servers
//! nobody here wrote is tested separately (aiosmtpd, smtplib). How a
//! test asks for a behaviour is in `builder.rs`.

mod builder;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postern_smtp::Reply;
use postern_smtp::server::{DataReply, Envelope, Handler, ServerSettings, serve};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use self::builder::SinkBuilder;

/// One message as the sink received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The envelope sender (empty for `<>`).
    pub mail_from: String,
    /// The recipients the message was accepted for.
    pub rcpt_to: Vec<String>,
    /// The message, dot-unstuffed, CRLF line endings.
    pub body: Vec<u8>,
    /// The client's address (its source address).
    pub peer: SocketAddr,
    /// The EHLO/HELO/LHLO name.
    pub helo: String,
    /// The session was encrypted.
    pub tls: bool,
    /// The user the client authenticated as.
    pub auth: Option<String>,
    /// `BODY=8BITMIME` was given.
    pub eight_bit: bool,
    /// The message's `Message-ID` header, if it has one.
    pub message_id: Option<String>,
    /// When the sink accepted it.
    pub at: Instant,
    /// The XCLIENT attributes given in the session before it (names
    /// upper-case); empty without XCLIENT.
    pub xclient: Vec<(String, String)>,
    /// The body came with BDAT, not DATA.
    pub chunked: bool,
    /// It came in the same write as the message before it on its session.
    pub pipelined: bool,
}

impl Received {
    /// The client address XCLIENT gave before it (`ADDR`), if any.
    pub fn xclient_addr(&self) -> Option<&str> {
        self.xclient
            .iter()
            .find(|(k, _)| k == "ADDR")
            .map(|(_, v)| v.as_str())
    }
}

/// The `Message-ID` header's value, from the header block.
fn message_id(body: &[u8]) -> Option<String> {
    let end = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(body.len());
    let head = String::from_utf8_lossy(body.get(..end).unwrap_or_default());
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("Message-ID")
            .then(|| value.trim().to_owned())
    })
}

/// How the sink behaves.
#[derive(Debug, Clone, Default)]
struct Behaviour {
    lmtp: bool,
    /// RCPT replies by recipient (lower-case).
    at_rcpt: HashMap<String, Reply>,
    /// LMTP: the reply after DATA by recipient (lower-case).
    after_data: HashMap<String, Reply>,
    tempfail_first: usize,
    drop_during_data: bool,
    drop_after_data: bool,
    delay: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
    implicit_tls: bool,
    require_tls: bool,
    auth: Option<(String, String)>,
    require_auth: bool,
    /// Keep bodies (off for load tests: only envelopes and ids are kept).
    drop_bodies: bool,
    no_smtputf8: bool,
    no_chunking: bool,
    /// Offer XCLIENT and record what it is told.
    xclient: bool,
    /// Refuse XCLIENT after the first on a connection.
    xclient_once: bool,
    /// Greet with 421 while more than this many connections are open (the
    /// starting value of the sink's `allowed` connections).
    refuse_beyond: Option<usize>,
    /// Answer MAIL with 451 4.7.28 beyond this many messages a second.
    rate_limit: Option<u32>,
    /// Every n-th transaction gets 451 4.3.0, or 550 5.1.1.
    tempfail_every: Option<usize>,
    permfail_every: Option<usize>,
    /// Close this many connections, the first ones, without a word.
    drop_first: usize,
}

fn key(address: &str) -> String {
    address.to_ascii_lowercase()
}

#[derive(Debug, Default)]
struct State {
    messages: Vec<Received>,
    transactions: usize,
    connections: usize,
    active: usize,
    max_active: usize,
    peers: HashSet<IpAddr>,
    /// Open and most open at once, by client address.
    active_from: HashMap<IpAddr, usize>,
    max_from: HashMap<IpAddr, usize>,
    refused: usize,
    /// Connections allowed before 421 (changeable while running).
    allowed: Option<usize>,
    /// MAIL commands in the current second, and when it began.
    second: (Option<Instant>, u32),
    rate_limited: usize,
    /// When each refusal (421 or 4.7.28) was given.
    refusals: Vec<Instant>,
}

#[derive(Debug, Clone)]
struct Shared {
    behaviour: Arc<Behaviour>,
    state: Arc<Mutex<State>>,
    settings: Arc<ServerSettings>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn run(
    listener: std::net::TcpListener,
    shared: Shared,
    mut stop: oneshot::Receiver<()>,
) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut stop => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(_) => continue,
                },
            };
            let (n, active) = {
                let mut s = shared.state();
                s.connections += 1;
                s.active += 1;
                s.max_active = s.max_active.max(s.active);
                s.peers.insert(peer.ip());
                let from = s.active_from.entry(peer.ip()).or_default();
                *from += 1;
                let from = *from;
                let max = s.max_from.entry(peer.ip()).or_default();
                *max = (*max).max(from);
                (s.connections, s.active)
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut handler = SinkHandler {
                    shared: shared.clone(),
                    refuse: shared.state().allowed.is_some_and(|limit| active > limit),
                    xclient: Vec::new(),
                };
                if n > shared.behaviour.drop_first {
                    let _ = serve(tcp, shared.settings.clone(), &mut handler).await;
                }
                let mut s = shared.state();
                s.active -= 1;
                if let Some(from) = s.active_from.get_mut(&peer.ip()) {
                    *from -= 1;
                }
            });
        }
    })
}

struct SinkHandler {
    shared: Shared,
    /// This session is over the sink's connection limit.
    refuse: bool,
    /// The session's last XCLIENT attributes.
    xclient: Vec<(String, String)>,
}

impl SinkHandler {
    async fn pause(&self) {
        let delay = self.shared.behaviour.delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

#[async_trait::async_trait]
impl Handler for SinkHandler {
    async fn greeting(&mut self, hostname: &str, _peer: SocketAddr) -> Reply {
        self.pause().await;
        if self.refuse {
            let mut s = self.shared.state();
            s.refused += 1;
            s.refusals.push(Instant::now());
            drop(s);
            return Reply::with_status(421, (4, 7, 0), "too many connections, try again later");
        }
        Reply::new(220, None, format!("{hostname} ESMTP testkit sink"))
    }

    async fn mail_from(&mut self, _envelope: &Envelope) -> Reply {
        self.pause().await;
        if let Some(limit) = self.shared.behaviour.rate_limit {
            let mut s = self.shared.state();
            let now = Instant::now();
            if s.second
                .0
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                s.second = (Some(now), 0);
            }
            if s.second.1 >= limit {
                s.rate_limited += 1;
                s.refusals.push(now);
                return Reply::with_status(451, (4, 7, 28), "rate limited, try again later");
            }
            s.second.1 += 1;
        }
        Reply::with_status(250, (2, 1, 0), "sender ok")
    }

    async fn rcpt_to(&mut self, _envelope: &Envelope, recipient: &str) -> Reply {
        self.pause().await;
        match self.shared.behaviour.at_rcpt.get(&key(recipient)) {
            Some(r) => r.clone(),
            None => Reply::with_status(250, (2, 1, 5), "recipient ok"),
        }
    }

    async fn data(&mut self, envelope: &Envelope, body: Vec<u8>) -> DataReply {
        self.pause().await;
        let b = &self.shared.behaviour;
        if b.drop_after_data {
            return DataReply::Drop;
        }
        let attempt = {
            let mut s = self.shared.state();
            s.transactions += 1;
            s.transactions
        };
        let every = |n: Option<usize>| n.is_some_and(|n| attempt % n == 0);
        if attempt <= b.tempfail_first || every(b.tempfail_every) {
            return DataReply::One(Reply::with_status(
                451,
                (4, 3, 0),
                "temporary failure, try again",
            ));
        }
        if every(b.permfail_every) {
            return DataReply::One(Reply::with_status(550, (5, 1, 1), "no such user"));
        }
        let ok = Reply::with_status(250, (2, 0, 0), "message accepted");
        let replies: Vec<Reply> = envelope
            .rcpt_to
            .iter()
            .map(|r| {
                b.after_data
                    .get(&key(r))
                    .cloned()
                    .unwrap_or_else(|| ok.clone())
            })
            .collect();
        let delivered: Vec<String> = envelope
            .rcpt_to
            .iter()
            .zip(&replies)
            .filter(|(_, r)| r.is_positive())
            .map(|(a, _)| a.clone())
            .collect();
        if !delivered.is_empty() {
            let message_id = message_id(&body);
            let body = if b.drop_bodies { Vec::new() } else { body };
            self.shared.state().messages.push(Received {
                mail_from: envelope.mail_from.clone(),
                rcpt_to: delivered,
                body,
                message_id,
                at: Instant::now(),
                peer: envelope.peer,
                helo: envelope.helo.clone(),
                tls: envelope.tls,
                auth: envelope.auth.clone(),
                eight_bit: envelope.eight_bit,
                xclient: self.xclient.clone(),
                chunked: envelope.chunked,
                pipelined: envelope.pipelined,
            });
        }
        if b.lmtp {
            DataReply::PerRecipient(replies)
        } else {
            DataReply::One(ok)
        }
    }

    async fn xclient(&mut self, attributes: Vec<(String, String)>) -> Option<Reply> {
        if self.shared.behaviour.xclient_once && !self.xclient.is_empty() {
            return Some(Reply::with_status(
                550,
                (5, 7, 0),
                "XCLIENT once a connection",
            ));
        }
        self.xclient = attributes;
        None
    }

    async fn auth(&mut self, user: &str, password: &str) -> bool {
        self.shared
            .behaviour
            .auth
            .as_ref()
            .is_some_and(|(u, p)| u == user && p == password)
    }

    fn drop_during_data(&self) -> bool {
        self.shared.behaviour.drop_during_data
    }
}

/// A running sink; stops when dropped.
#[derive(Debug)]
pub struct Sink {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Sink {
    /// A builder for a sink on 127.0.0.1 that accepts everything.
    pub fn builder() -> SinkBuilder {
        SinkBuilder::new()
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every message accepted so far, in order.
    pub fn messages(&self) -> Vec<Received> {
        self.state().messages.clone()
    }

    /// How many messages were accepted.
    pub fn message_count(&self) -> usize {
        self.state().messages.len()
    }

    /// How many connections were accepted in all.
    pub fn connections(&self) -> usize {
        self.state().connections
    }

    /// The most connections open at once.
    pub fn max_concurrent(&self) -> usize {
        self.state().max_active
    }

    /// The most connections open at once from one client address.
    pub fn max_concurrent_from(&self, ip: IpAddr) -> usize {
        self.state().max_from.get(&ip).copied().unwrap_or(0)
    }

    /// How many sessions were refused with 421 for being over the limit.
    pub fn refused(&self) -> usize {
        self.state().refused
    }

    /// How many messages were refused with 451 4.7.28 for the rate.
    pub fn rate_limited(&self) -> usize {
        self.state().rate_limited
    }

    /// When each refusal (a 421 over the connection allowance, or a
    /// 4.7.28 over the rate) was given.
    pub fn refusal_times(&self) -> Vec<Instant> {
        self.state().refusals.clone()
    }

    /// Changes how many connections are allowed before 421 (`None`: all).
    pub fn set_allowed_connections(&self, n: Option<usize>) {
        self.state().allowed = n;
    }

    /// The client addresses seen.
    pub fn peers(&self) -> Vec<IpAddr> {
        self.state().peers.iter().copied().collect()
    }

    /// Waits until `n` messages have arrived; false on timeout.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.message_count() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.message_count() >= n
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
