//! Postern's delivery engine, on actix.
//!
//! [`Engine::start`] starts a control event loop (the scheduler, which
//! keeps every domain's queue and every MX host's pool of connections) and
//! `Event_Loops` delivery event loops where connection actors run, each
//! new connection on the least loaded loop. The daemon [`submit`]s queued
//! messages; a [`Report`] per recipient and attempt, and every bounce, go
//! to the [`Outcomes`] it gave at the start; [`queue`] and [`summary`]
//! show the engine's state.
//!
//! - `domain/`: one queue per (binding, domain): routing table, ready and
//!   delayed mail, its own limits.
//! - `mx_host/`: one host per (source, address, delivery profile): the
//!   pool of connections shared by every domain routed there, its limit,
//!   its reachability.
//! - `connection/`: the connection actor and what its failures mean.
//! - `scheduler/`: the control plane that ties them, and its actor.
//!
//! The scheduling rule (DESIGN.md): a domain's mail goes to the best
//! preference level that has a host which is reachable and has an idle
//! connection or a free slot; a worse host gets no new connection and no
//! batch of that domain while a better host is reachable and free.
//!
//! [`submit`]: Engine::submit
//! [`queue`]: Engine::queue
//! [`summary`]: Engine::summary
#![warn(missing_docs)]

#[doc(hidden)]
pub mod bench;
mod bounce;
mod class;
mod connection;
mod domain;
mod ids;
mod lease;
mod message;
mod messages;
mod mx_host;
pub mod outbound;
mod outcomes;
mod scheduler;
mod throttle;

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::thread::JoinHandle;

use actix::prelude::*;
use postern_conf::{Config, Directive, Value};
use postern_dns::Dns;

pub use bounce::{Bounce, FailedRecipient, Settlement};
pub use domain::QueueKey;
pub use message::{
    Backlog, BacklogRead, Body, BodyError, BodySource, HostInfo, QueuedMessage, Report, Spooled,
};
use messages::Submit;
pub use outcomes::{Channels, Outcomes};
use scheduler::{
    Command, Control, Drain, EndCallout, Fault, QueryQueue, QueryQueues, QuerySummary,
    ReserveCallout, Scheduler, SubmitSpooled,
};
pub use scheduler::{HostSummary, HostView, QueueRow, QueueView, Summary};

/// A running engine. Dropping it stops its event loops.
#[derive(Debug)]
pub struct Engine {
    handle: Handle,
    ready: Arc<AtomicUsize>,
    system: System,
    thread: Option<JoinHandle<()>>,
}

/// A running engine's handle, for any thread: submit messages, query the
/// state, hold and release queues.
#[derive(Debug, Clone)]
pub struct Handle(pub(crate) Addr<Scheduler>);

impl Handle {
    /// Queues a message for delivery; returns at once.
    pub fn submit(&self, message: QueuedMessage) {
        self.0.do_send(Submit(vec![message]));
    }

    /// Queues messages in order, in one hand-off to the control loop.
    pub fn submit_all(&self, messages: Vec<QueuedMessage>) {
        self.0.do_send(Submit(messages));
    }

    /// Queues entries found in the spool at start, oldest first; their
    /// envelopes are read back as the queue has room for them.
    pub fn submit_spooled(&self, binding: Arc<str>, domain: Arc<str>, entries: Vec<Spooled>) {
        self.0.do_send(SubmitSpooled {
            binding,
            domain,
            entries,
        });
    }

    /// Holds the queue: nothing more is delivered until [`resume`](Self::resume).
    pub fn suspend(&self, binding: &str, domain: &str) {
        self.0
            .do_send(Control(key(binding, domain), Command::Suspend));
    }

    /// Delivers a held queue again.
    pub fn resume(&self, binding: &str, domain: &str) {
        self.0
            .do_send(Control(key(binding, domain), Command::Resume));
    }

    /// Retries the queue's delayed mail now.
    pub fn flush(&self, binding: &str, domain: &str) {
        self.0
            .do_send(Control(key(binding, domain), Command::Flush));
    }

    /// The state of the (binding, domain) queue, if it exists.
    pub async fn queue(&self, binding: &str, domain: &str) -> Option<QueueView> {
        self.0
            .send(QueryQueue(key(binding, domain)))
            .await
            .ok()
            .flatten()
    }

    /// Connections per event loop, queue totals.
    pub async fn summary(&self) -> Option<Summary> {
        self.0.send(QuerySummary).await.ok()
    }

    /// Test hook: the next connection given a batch for `recipient` panics
    /// while carrying it (its guard must give the batch back).
    #[doc(hidden)]
    pub fn panic_on_recipient(&self, recipient: &str) {
        self.0.do_send(Fault(recipient.to_owned()));
    }

    /// A place at `addr` for a recipient callout of `binding` (from
    /// `bind`, its `Bind_Address`), counted against the `Host` limit
    /// there until the slot is dropped; `None` while that host is at its
    /// limit.
    pub async fn callout_slot(
        &self,
        binding: &str,
        bind: Option<std::net::IpAddr>,
        addr: std::net::SocketAddr,
    ) -> Option<CalloutSlot> {
        let source = match bind {
            Some(ip) => mx_host::Source::Address(ip),
            None => mx_host::Source::Binding(binding.to_owned()),
        };
        let id = self.0.send(ReserveCallout((source, addr))).await.ok()??;
        Some(CalloutSlot {
            id,
            scheduler: self.0.clone(),
        })
    }

    /// The `limit` queues with the most mail.
    pub async fn queues(&self, limit: usize) -> Vec<QueueRow> {
        self.0.send(QueryQueues(limit)).await.unwrap_or_default()
    }
}

/// A recipient callout's place in a host's pool; given back when dropped.
#[derive(Debug)]
pub struct CalloutSlot {
    id: u64,
    scheduler: Addr<Scheduler>,
}

impl Drop for CalloutSlot {
    fn drop(&mut self) {
        self.scheduler.do_send(EndCallout(self.id));
    }
}

/// `Event_Loops`, or the number of CPUs.
fn event_loops(config: &Config) -> usize {
    match config.global.get(Directive::EventLoops).map(|s| &s.value) {
        Some(Value::Count(n)) => usize::try_from(*n).unwrap_or(1).max(1),
        _ => std::thread::available_parallelism().map_or(1, usize::from),
    }
}

type Started = io::Result<(Addr<Scheduler>, System)>;

fn key(binding: &str, domain: &str) -> QueueKey {
    QueueKey {
        binding: binding.into(),
        domain: domain.to_ascii_lowercase().into(),
    }
}

impl Engine {
    /// Starts the control loop and the delivery loops for `config`; every
    /// outcome and bounce goes to `outcomes`. With a `backlog`, a queue
    /// keeps at most `Max_Queued_In_Memory` batches in memory and leaves
    /// the rest of its mail in the spool. With a `cluster`, host limits
    /// and throttles count every node of it.
    pub fn start(
        config: Arc<Config>,
        outcomes: Box<dyn Outcomes>,
        backlog: Option<Arc<dyn Backlog>>,
        cluster: Option<postern_cluster::Cluster>,
    ) -> io::Result<Engine> {
        let (started_tx, started_rx) = std::sync::mpsc::channel::<Started>();
        let ready = Arc::new(AtomicUsize::new(0));
        let counted = ready.clone();
        let thread = std::thread::Builder::new()
            .name("postern-control".into())
            .spawn(move || {
                let system = System::new();
                let arbiters: Vec<Arbiter> =
                    (0..event_loops(&config)).map(|_| Arbiter::new()).collect();
                let handles = arbiters.iter().map(Arbiter::handle).collect();
                let started = system.block_on(async move {
                    // The control loop's own resolver, used only here.
                    let dns =
                        Dns::from_config(&config).map_err(|e| io::Error::other(e.to_string()))?;
                    let scheduler =
                        Scheduler::new(config, dns, handles, outcomes, backlog, counted, cluster)
                            .start();
                    Ok((scheduler, System::current()))
                });
                let ok = started.is_ok();
                let _ = started_tx.send(started);
                if ok {
                    let _ = system.run();
                }
                for a in &arbiters {
                    a.stop();
                }
                for a in arbiters {
                    let _ = a.join();
                }
            })?;
        let (scheduler, system) = started_rx
            .recv()
            .map_err(|_| io::Error::other("the engine's control loop did not start"))??;
        Ok(Engine {
            handle: Handle(scheduler),
            ready,
            system,
            thread: Some(thread),
        })
    }

    /// A handle for any thread: submit, query, control.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Batches ready for delivery and waiting for a connection, in all
    /// queues: how far delivery is behind.
    pub fn ready(&self) -> Arc<AtomicUsize> {
        self.ready.clone()
    }

    /// Stops delivering: connections finish their transaction and QUIT.
    /// Returns once none is open, or after `deadline`.
    pub async fn drain(&self, deadline: std::time::Duration) {
        self.handle.0.do_send(Drain);
        let until = std::time::Instant::now() + deadline;
        while std::time::Instant::now() < until {
            match self.summary().await {
                Some(s) if s.connections > 0 => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                _ => return,
            }
        }
    }
}

impl std::ops::Deref for Engine {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.system.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
