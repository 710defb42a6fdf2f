//! A driver for benchmarks of the control plane: the scheduler's own
//! decisions (which host, which connection, which domain's batch next)
//! without actix, DNS or sockets. Routing tables are given; a connection
//! the plane opens connects at once, and every transaction is delivered.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crossbeam_channel::Receiver;
use postern_conf::{Config, Scheme, TlsMode, TlsVerify};
use postern_dns::{Decision, RouteEntry, RouteLevel, RouteTable};
use postern_smtp::Reply;
use postern_smtp::client::Outcome;

use crate::bounce::Bounce;
use crate::domain::QueueKey;
use crate::ids::ConnId;
use crate::ids::HostId;
use crate::message::Body;
use crate::message::{Batch, QueuedMessage, Report};
use crate::messages::{End, Finished};
use crate::outcomes::Channels;
use crate::scheduler::{Action, Answer, Core};

/// The control plane alone, driven by hand.
pub struct Plane {
    core: Core,
    reports: Receiver<Report>,
    _bounces: Receiver<Bounce>,
    /// Idle connections by host, waiting for a batch.
    waiting: HashMap<HostId, Vec<(ConnId, Waiting)>>,
    hosts: HashMap<ConnId, HostId>,
    /// The hosts of the domain last submitted to: where a batch may
    /// have been handed.
    touched: Vec<HostId>,
    body: Arc<[u8]>,
}

type Waiting = tokio::sync::oneshot::Receiver<Option<Batch>>;

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
            hosts: HashMap::new(),
            touched: Vec::new(),
            body: Arc::from(&b"Subject: bench\r\n\r\nhello\r\n"[..]),
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

    /// Queues a one-recipient message for `domain`.
    pub fn submit(&mut self, id: u64, domain: &str) {
        let key = QueueKey {
            binding: "default".into(),
            domain: domain.into(),
        };
        let d = self.core.domain_id(&key);
        self.touched = self.core.hosts_of(d);
        self.core.submit(QueuedMessage {
            id,
            queue_id: id,
            message_id: Box::default(),
            binding: "default".into(),
            domain: domain.into(),
            sender: "bench@example.org".into(),
            recipients: vec![format!("r@{domain}")],
            body: Body::Memory(self.body.clone()),
            eight_bit: false,
            smtputf8: false,
            attempts: 0,
            received: SystemTime::now(),
            not_before: None,
            client: None,
        });
    }

    /// Plays every connection until all of them wait for work: opened
    /// ones connect, handed batches are delivered and the connection asks
    /// for the next. Returns the batches delivered.
    pub fn run(&mut self) -> usize {
        let mut delivered = 0;
        let mut carrying: Vec<(ConnId, Batch)> = Vec::new();
        loop {
            for action in self.core.take_actions() {
                if let Action::Open { conn, host, .. } = action {
                    self.hosts.insert(conn, host);
                    self.core.connected(conn);
                    let answer = self.core.want_work(conn, None, false);
                    self.answer(conn, answer, &mut carrying);
                }
            }
            for h in std::mem::take(&mut self.touched) {
                let Some(list) = self.waiting.get_mut(&h) else {
                    continue;
                };
                list.retain_mut(|(c, rx)| match rx.try_recv() {
                    Ok(Some(b)) => {
                        carrying.push((*c, b));
                        false
                    }
                    Ok(None) => false,
                    Err(_) => true,
                });
            }
            let Some((conn, batch)) = carrying.pop() else {
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
            let answer = self.core.want_work(conn, Some(finished), false);
            self.answer(conn, answer, &mut carrying);
            self.touched.extend(self.hosts.get(&conn).copied());
        }
        self.core.fire(Instant::now());
        self.reports.try_iter().for_each(drop);
        delivered
    }

    fn answer(&mut self, conn: ConnId, answer: Answer, carrying: &mut Vec<(ConnId, Batch)>) {
        match answer {
            Answer::Now(Some(b)) => carrying.push((conn, b)),
            Answer::Now(None) => {
                self.hosts.remove(&conn);
                self.core.ended(conn, End::Closed);
            }
            Answer::Later(rx) => {
                if let Some(h) = self.hosts.get(&conn) {
                    self.waiting.entry(*h).or_default().push((conn, rx));
                }
            }
        }
    }
}
