//! A driver for benchmarks of the control plane: the scheduler's own
//! decisions (which host, which connection, which domain's batch next)
//! without actix, DNS or sockets. Routing tables are given; a connection
//! the plane opens connects at once, and every transaction is delivered.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;
use postern_conf::{Config, Scheme, TlsMode, TlsVerify};
use postern_dns::{Decision, RouteEntry, RouteLevel, RouteTable};
use postern_smtp::Reply;
use postern_smtp::client::Outcome;

use crate::bounce::Bounce;
use crate::domain::QueueKey;
use crate::ids::ConnId;
use crate::message::Body;
use crate::message::{Batch, QueuedMessage, Report};
use crate::messages::{End, Finished, WantWork};
use crate::outcomes::Channels;
use crate::scheduler::{Action, Core};

/// The control plane alone, driven by hand.
pub struct Plane {
    core: Core,
    reports: Receiver<Report>,
    _bounces: Receiver<Bounce>,
    /// Each connection's open request for work (an answer to a closed
    /// one would give its batch back).
    waiting: HashMap<ConnId, Waiting>,
}

/// A message ready to submit to a [`Plane`].
#[derive(Debug)]
pub struct Message(QueuedMessage);

type Waiting = tokio::sync::oneshot::Receiver<Vec<Batch>>;

impl std::fmt::Debug for Plane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Plane")
    }
}

impl Plane {
    /// A plane for `config` with one delivery loop.
    pub fn new(config: Config) -> Self {
        let (sink, reports, bounces) = Channels::new();
        Self {
            core: Core::new(Arc::new(config), 1, Box::new(sink), Arc::default(), None),
            reports,
            _bounces: bounces,
            waiting: HashMap::new(),
        }
    }

    /// Routes `domain` (binding `default`) to `hosts`, all at one
    /// preference level, on port 25, as DNS would.
    pub fn route(&mut self, domain: &str, hosts: &[SocketAddr]) {
        let entry = |addr: &SocketAddr| RouteEntry {
            name: format!("mx-{}", addr.ip()),
            addr: *addr,
            scheme: Scheme::Smtp,
            tls: TlsMode::No,
            tls_verify: TlsVerify::No,
            auth: None,
            plaintext_auth: false,
            host_limit: None,
            via: "bench".into(),
            xclient: false,
            sts_testing: false,
        };
        let table = RouteTable {
            binding: "default".into(),
            domain: domain.into(),
            decision: Decision::Mx,
            levels: vec![RouteLevel {
                level: 0,
                hosts: hosts.iter().map(entry).collect(),
            }],
            refresh_at: None,
            left_out: Vec::new(),
            mta_sts: None,
        };
        let d = self.core.domain_id(&QueueKey {
            binding: "default".into(),
            domain: domain.into(),
        });
        self.core.table_ready(d, Ok(table));
    }

    /// A one-recipient message for `domain`, made apart from the plane as
    /// the listener makes it in the daemon.
    pub fn message(id: u64, domain: &str, body: &Arc<[u8]>) -> Message {
        Message(QueuedMessage {
            sender: "bench@example.org".into(),
            ..QueuedMessage::new(
                (id, id),
                "default".into(),
                domain.into(),
                vec![format!("r@{domain}")],
                Body::Memory(body.clone()),
            )
        })
    }

    /// The body every message of [`Plane::message`] may share.
    pub fn body() -> Arc<[u8]> {
        Arc::from(&b"Subject: bench\r\n\r\nhello\r\n"[..])
    }

    /// Queues a message.
    pub fn submit(&mut self, message: Message) {
        self.core.submit(message.0);
    }

    /// Ends the connections told to close while they waited for work (by
    /// the server-wide limit, for another host), as a connection does when
    /// its answer is "none". Returns how many.
    pub fn closed(&mut self) -> usize {
        let mut closed = Vec::new();
        for (conn, waiting) in &mut self.waiting {
            if matches!(waiting.try_recv(), Ok(b) if b.is_empty()) {
                closed.push(*conn);
            }
        }
        for conn in &closed {
            self.waiting.remove(conn);
            self.core.ended(*conn, End::Closed, Vec::new());
        }
        closed.len()
    }

    /// Plays every connection until all of them wait for work: opened
    /// ones connect, handed batches are delivered and the connection asks
    /// for the next. Returns the batches delivered.
    pub fn run(&mut self) -> usize {
        let mut delivered = 0;
        let mut carrying: Vec<(ConnId, Batch)> = Vec::new();
        loop {
            let actions = self.core.take_actions();
            let acted = !actions.is_empty();
            for action in actions {
                match action {
                    Action::Open { conn, .. } => {
                        self.core.connected(conn);
                        self.want(conn, Vec::new());
                    }
                    Action::Answer { conn, batches, .. } if batches.is_empty() => {
                        self.waiting.remove(&conn);
                        self.core.ended(conn, End::Closed, Vec::new());
                    }
                    Action::Answer { conn, batches, .. } => {
                        carrying.extend(batches.into_iter().map(|b| (conn, b)));
                    }
                    _ => {}
                }
            }
            let Some((conn, batch)) = carrying.pop() else {
                if acted {
                    continue;
                }
                break;
            };
            delivered += 1;
            let ok = Outcome::Delivered(Reply::with_status(250, (2, 0, 0), "ok"));
            let outcomes = vec![ok; batch.recipients.len()];
            let finished = Finished {
                batch,
                outcomes,
                tls_problem: None,
            };
            self.want(conn, vec![finished]);
        }
        self.core.fire(Instant::now());
        self.reports.try_iter().for_each(drop);
        delivered
    }

    fn want(&mut self, conn: ConnId, finished: Vec<Finished>) {
        let (answer, waiting) = tokio::sync::oneshot::channel();
        self.waiting.insert(conn, waiting);
        self.core.want_work(WantWork {
            id: conn,
            finished,
            closing: false,
            room: 1,
            answer,
        });
    }
}
