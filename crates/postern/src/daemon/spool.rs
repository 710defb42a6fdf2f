//! The daemon's side of the spool: its options from the configuration,
//! bodies read back for the engine, recovered messages queued again with
//! their stored schedule, and the pressure the listener pushes back with.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use postern_conf::{Config, Directive, Value};
use postern_engine::{
    Backlog, BacklogRead, Body, BodyError, BodySource, Handle, QueuedMessage, Spooled,
};
use postern_smtp::xclient::Xclient;
use postern_spool::{Bodies, Envelope, Options, Recovered, Spool};

pub(crate) fn dir(config: &Config) -> PathBuf {
    match config.global.value_or_default(Directive::SpoolDir) {
        Some(Value::Path(p)) => p.clone(),
        _ => PathBuf::from("/var/spool/postern"),
    }
}

fn count(config: &Config, d: Directive, default: usize) -> usize {
    match config.global.value_or_default(d) {
        Some(Value::Count(n)) => usize::try_from(*n).unwrap_or(usize::MAX),
        _ => default,
    }
}

fn size(config: &Config, d: Directive, default: u64) -> u64 {
    match config.global.value_or_default(d) {
        Some(Value::Size(n)) => *n,
        _ => default,
    }
}

/// `Spool_Segment_Size`, `Spool_Reserve`, `Spool_Body_Cache`,
/// `Spool_Zero_Fill`, `Spool_Spare_Segments`.
pub(crate) fn options(config: &Config) -> Options {
    let d = Options::default();
    Options {
        segment_size: size(config, Directive::SpoolSegmentSize, d.segment_size),
        reserve: size(config, Directive::SpoolReserve, d.reserve),
        body_cache: size(config, Directive::SpoolBodyCache, d.body_cache),
        zero_fill: !matches!(
            config.global.value_or_default(Directive::SpoolZeroFill),
            Some(Value::Bool(false))
        ),
        spares: count(config, Directive::SpoolSpareSegments, d.spares),
    }
}

/// The spool's bodies, for the engine's connections.
#[derive(Debug)]
pub(crate) struct SpoolBodies(pub(crate) Bodies);

impl BodySource for SpoolBodies {
    fn load(&self, queue_id: u64) -> BoxFuture<'static, Result<Arc<[u8]>, BodyError>> {
        FutureExt::map(self.0.load(queue_id), |r| {
            r.map_err(|e| match e {
                postern_spool::BodyError::Gone(_) | postern_spool::BodyError::Damaged(_) => {
                    BodyError::Lost(e.to_string())
                }
                postern_spool::BodyError::Io(_) | postern_spool::BodyError::Closed => {
                    BodyError::Unavailable(e.to_string())
                }
            })
        })
        .boxed()
    }
}

/// Queues every recovered entry, in order, by reference: each queue reads
/// its envelopes back from the spool as it has room in memory, and holds
/// each until its stored next attempt.
pub(crate) fn requeue(recovered: Vec<Recovered>, engine: &Handle) -> usize {
    let entries = recovered.len();
    let mut queues: HashMap<(Arc<str>, Arc<str>), Vec<Spooled>> = HashMap::new();
    for r in recovered {
        queues
            .entry((r.binding, r.domain))
            .or_default()
            .push(Spooled {
                message: r.message,
                entry: r.entry,
            });
    }
    for ((binding, domain), list) in queues {
        engine.submit_spooled(binding, domain, list);
    }
    entries
}

/// Reads queued entries back from the spool for the engine.
#[derive(Debug)]
pub(crate) struct SpoolBacklog {
    pub(crate) bodies: Bodies,
    pub(crate) body: Body,
}

impl Backlog for SpoolBacklog {
    fn read(&self, entries: Vec<Spooled>) -> BoxFuture<'static, BacklogRead> {
        let mut ids: Vec<u64> = entries.iter().map(|e| e.message).collect();
        ids.dedup();
        let read = self.bodies.envelopes(ids);
        let body = self.body.clone();
        async move {
            let found = match read.await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(error = %e, "queued mail cannot be read back from the spool now; trying again");
                    return BacklogRead {
                        messages: Vec::new(),
                        retry: entries,
                    };
                }
            };
            let mut envelopes: HashMap<u64, Envelope> = HashMap::new();
            let mut unreadable = Vec::new();
            for (id, r) in found {
                match r {
                    Ok(envelope) => {
                        envelopes.insert(id, envelope);
                    }
                    // Finished meanwhile.
                    Err(postern_spool::BodyError::Gone(_)) => {}
                    Err(e @ postern_spool::BodyError::Damaged(_)) => {
                        tracing::error!(error = %e, "a queued message cannot be read back; it is left in the spool");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "a queued message cannot be read back now; trying again");
                        unreadable.push(id);
                    }
                }
            }
            let mut read = BacklogRead::default();
            for s in entries {
                if unreadable.contains(&s.message) {
                    read.retry.push(s);
                } else if let Some(m) = envelopes
                    .get(&s.message)
                    .and_then(|e| queued(e, s.entry, &body))
                {
                    read.messages.push(m);
                }
            }
            read
        }
        .boxed()
    }
}

/// One entry of a stored envelope as a message for the engine, held until
/// its stored next attempt; `None` when the entry has nothing left.
fn queued(m: &Envelope, entry: u64, body: &Body) -> Option<QueuedMessage> {
    let e = m.entries.iter().find(|e| e.entry == entry)?;
    let client = m.client.as_ref().and_then(|c| {
        Some(Arc::new(Xclient {
            addr: c.addr.parse().ok()?,
            name: Some(c.name.clone()).filter(|n| !n.is_empty()),
            helo: c.helo.clone(),
            proto: c.proto.clone(),
        }))
    });
    Some(QueuedMessage {
        id: e.entry,
        queue_id: m.id,
        message_id: m.message_id.as_str().into(),
        binding: m.binding.as_str().into(),
        domain: e.domain.as_str().into(),
        sender: m.sender.as_str().into(),
        recipients: e.recipients.clone(),
        body: body.clone(),
        eight_bit: m.eight_bit,
        smtputf8: m.smtputf8,
        attempts: e.attempts,
        received: UNIX_EPOCH + Duration::from_millis(m.received_ms),
        not_before: (e.next_ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(e.next_ms)),
        client,
    })
}

/// Stores waiting for the disk that count as fully behind: the disk is
/// that much slower than the clients.
const STORES_WAITING: usize = 10_000;

/// What the listener reads before it takes a new transaction.
pub(crate) struct Pressure {
    spool: Spool,
    ready: Arc<AtomicUsize>,
    /// Stored messages not yet handed to the engine
    /// ([`super::submissions::Submissions`]): ready mail too.
    gathered: Arc<AtomicUsize>,
    limit: usize,
    delay: Duration,
    /// `postern_listener_backpressure`.
    gauge: metrics::Gauge,
}

/// What the listener does with a `MAIL`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    /// Take it.
    Go,
    /// Take it after waiting this long.
    Wait(Duration),
    /// Refuse it: delivery is too far behind.
    Behind,
    /// Refuse it: the disk is (nearly) full.
    Full,
}

impl Pressure {
    /// Reads `ready` (batches the engine holds ready) and `gathered`
    /// (stored messages on their way to the engine) as ready mail.
    pub(crate) fn new(
        config: &Config,
        spool: Spool,
        ready: Arc<AtomicUsize>,
        gathered: Arc<AtomicUsize>,
    ) -> Self {
        let limit = count(config, Directive::MaxReadyBatches, 2_000_000);
        let delay = match config.global.value_or_default(Directive::BackpressureDelay) {
            Some(Value::Seconds(n)) => Duration::from_secs(*n),
            _ => Duration::from_secs(2),
        };
        Self {
            spool,
            ready,
            gathered,
            limit: limit.max(1),
            delay,
            gauge: metrics::gauge!(postern_metrics::BACKPRESSURE),
        }
    }

    /// Whether to take a new transaction now.
    pub(crate) fn verdict(&self) -> Verdict {
        let health = self.spool.health();
        if !health.healthy {
            return Verdict::Full;
        }
        let ready = self
            .ready
            .load(Ordering::Relaxed)
            .saturating_add(self.gathered.load(Ordering::Relaxed));
        let ready = ready as f64 / self.limit as f64;
        let fill = ready.max(health.queued as f64 / STORES_WAITING as f64);
        self.gauge.set(fill);
        if fill >= 1.0 {
            Verdict::Behind
        } else if fill > 0.5 {
            Verdict::Wait(self.delay.mul_f64((fill - 0.5) * 2.0))
        } else {
            Verdict::Go
        }
    }
}

/// The log line for outcomes the spool could not write before it
/// stopped, if any.
pub(crate) fn unwritten(n: usize) -> Option<String> {
    (n > 0).then(|| {
        format!(
            "{n} delivery outcomes could not be written (the spool's disk is still full): those recipients may be delivered again after the restart"
        )
    })
}
