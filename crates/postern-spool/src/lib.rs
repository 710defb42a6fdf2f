//! Postern's durable message store.
//!
//! An append-only log of segment files in `Spool_Dir`
//! (`docs/adr/0002-spool.md` and `docs/adr/0004-spool-ii.md` say why, with
//! the figures). One thread owns the log. Everyone else sends it requests
//! over a crossbeam channel: a new message to store, a recipient done, an
//! attempt made. The thread takes every request waiting, writes them, and
//! makes them durable with one fsync (group commit). Only then does it
//! answer: a stored message's sender learns that it is durable, and may
//! answer 250. No event loop ever waits on the disk. Segments are
//! zero-filled ahead by a thread of their own, so that a commit
//! overwrites written blocks and its fsync has no metadata to journal
//! (`docs/adr/0012-zero-filled-segments.md`).
//!
//! Memory holds envelopes and where each message lies, not bodies:
//! [`Bodies`] reads them back for delivery. Any segment that is mostly
//! dead is reclaimed (its live messages copied forward). A full disk fails
//! new messages with [`SpoolError::Full`] but never loses an outcome:
//! those wait in memory, and a reserve file gives them room.
#![warn(missing_docs)]

mod bodies;
mod key;
mod live;
mod log;
mod prepare;
mod reclaim;
mod record;
mod writer;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use tokio::sync::oneshot;

use crate::bodies::Cache;
pub use crate::bodies::{Bodies, BodyError, EnvelopeRead};
use crate::live::Live;
use crate::log::Log;
use crate::record::Record;
pub use crate::record::{ClientRecord, EntryRecord, Envelope};
use crate::writer::Writer;

/// Why a message could not be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolError {
    /// The disk is full: answer `452 4.3.1`.
    #[error("spool disk full: {0}")]
    Full(String),
    /// Any other I/O failure.
    #[error("spool write failed: {0}")]
    Io(String),
    /// The spool has stopped.
    #[error("spool closed")]
    Closed,
}

/// A message to store: one body, and its recipients by domain.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// When it was received.
    pub received: SystemTime,
    /// The `Message-ID` header's value, for the delivery log.
    pub message_id: String,
    /// The envelope sender; empty for `<>`.
    pub sender: String,
    /// The binding.
    pub binding: String,
    /// `BODY=8BITMIME`.
    pub eight_bit: bool,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
    /// The client that handed it in, if it is to be told to next hops.
    pub client: Option<Box<ClientRecord>>,
    /// Headers and body, CRLF line endings.
    pub body: Arc<[u8]>,
    /// (domain, recipients) for each queue.
    pub entries: Vec<(String, Vec<String>)>,
    /// Recipients of other entries (entry id, address) that are done when
    /// this message is stored, in the same record: a bounce and the
    /// failures it reports.
    pub completes: Vec<(u64, String)>,
}

/// The ids of a stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The message's id.
    pub message: u64,
    /// One id per entry, in the order given.
    pub entries: Vec<u64>,
}

/// What the spool has done, for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// fsyncs made.
    pub fsyncs: AtomicU64,
    /// Requests written (messages, outcomes, attempts).
    pub records: AtomicU64,
    /// Bytes written.
    pub bytes: AtomicU64,
    /// Requests in the last batch.
    pub last_batch: AtomicU64,
    /// Microseconds the last write and fsync took.
    pub last_fsync_micros: AtomicU64,
}

/// The spool's health, as the listener and `postern summary` see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// New mail can be stored: outcomes are all written, the reserve is in
    /// place and at least as much space again is free.
    pub healthy: bool,
    /// Outcome records waiting in memory for space.
    pub pending: usize,
    /// Requests sent and not yet written.
    pub queued: usize,
    /// Messages with work left.
    pub messages: usize,
    /// Segment files.
    pub segments: usize,
    /// Bytes in segment files.
    pub disk_bytes: u64,
}

/// Who waits for stored messages: one message, or a group stored
/// together (all or none).
enum Waiter {
    One(oneshot::Sender<Result<Stored, SpoolError>>),
    All(oneshot::Sender<Result<Vec<Stored>, SpoolError>>),
}

impl Waiter {
    fn answer(self, result: Result<Vec<Stored>, SpoolError>) {
        // A caller that stopped waiting lets the answer go.
        match self {
            Waiter::One(reply) => {
                let _ = reply.send(result.and_then(|mut v| v.pop().ok_or(SpoolError::Closed)));
            }
            Waiter::All(reply) => {
                let _ = reply.send(result);
            }
        }
    }
}

enum Request {
    Store(Vec<NewMessage>, Waiter),
    Record(Record<'static>),
    Barrier(oneshot::Sender<()>),
}

/// Options of the store.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// A new segment starts past this size.
    pub segment_size: u64,
    /// Space kept back (a file of this size) for outcomes on a full disk.
    pub reserve: u64,
    /// Bytes of bodies kept in memory for delivery.
    pub body_cache: u64,
    /// Segments are zero-filled ahead by a thread of their own.
    pub zero_fill: bool,
    /// Reclaimed segments kept for later segments to overwrite, at most.
    pub spares: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            segment_size: 64 * 1024 * 1024,
            reserve: 1024 * 1024,
            body_cache: 64 * 1024 * 1024,
            zero_fill: true,
            spares: 2,
        }
    }
}

/// What the writer thread and the readers share.
#[derive(Debug)]
pub(crate) struct Shared {
    dir: PathBuf,
    /// The key records are read back with.
    key: key::Key,
    live: Mutex<Live>,
    cache: Mutex<Cache>,
    stats: Stats,
    healthy: AtomicBool,
    pending: AtomicUsize,
    queued: AtomicUsize,
    segments: AtomicUsize,
    disk_bytes: AtomicU64,
    messages: AtomicUsize,
}

impl Shared {
    fn live(&self) -> MutexGuard<'_, Live> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The store; clones share it. The log thread ends when the last clone is
/// dropped, after writing what it was sent.
#[derive(Debug, Clone)]
pub struct Spool {
    tx: Sender<Request>,
    shared: Arc<Shared>,
    bodies: Bodies,
    thread: Arc<Mutex<Option<JoinHandle<usize>>>>,
}

/// An entry with work left, as found at start: which message and queue
/// it is. Its envelope stays on disk until the queue reads it back
/// ([`Bodies::envelopes`]), so that a large spool does not come back into
/// memory at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The message's id.
    pub message: u64,
    /// The entry's id.
    pub entry: u64,
    /// Its binding.
    pub binding: Arc<str>,
    /// Its destination domain.
    pub domain: Arc<str>,
}

/// What opening found.
#[derive(Debug)]
pub struct Opened {
    /// The store.
    pub spool: Spool,
    /// Entries with work left, oldest message first.
    pub recovered: Vec<Recovered>,
    /// Damage found, as log lines.
    pub damage: Vec<String>,
}

/// Free bytes beside `dir` (for an unprivileged user).
pub(crate) fn free_space(dir: &Path) -> u64 {
    rustix::fs::statvfs(dir).map_or(u64::MAX, |s| s.f_bavail.saturating_mul(s.f_frsize))
}

pub(crate) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Spool {
    /// Opens (or creates) the store in `dir` and reads it back.
    pub fn open(dir: &Path, options: Options) -> io::Result<Opened> {
        let mut live = Live::recovering();
        let (log, found) = Log::open(dir, &options, &mut live)?;
        metrics::counter!(postern_metrics::SPOOL_DAMAGED).increment(found.damaged);
        let recovered = live.recovered();
        // Ids go on from the largest seen, or from the clock if later, so
        // that they never repeat even when old segments are gone.
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(0));
        let next_id = live.max_id.max(clock) + 1;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            key: log.key(),
            live: Mutex::new(live),
            cache: Mutex::new(Cache::new(options.body_cache)),
            stats: Stats::default(),
            healthy: AtomicBool::new(true),
            pending: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            segments: AtomicUsize::new(0),
            disk_bytes: AtomicU64::new(0),
            messages: AtomicUsize::new(0),
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut writer = Writer::new(log, shared.clone(), next_id, options);
        writer.housekeeping();
        let thread = std::thread::Builder::new()
            .name("postern-spool".into())
            .spawn(move || writer.run(&rx))?;
        let bodies = Bodies::start(shared.clone(), 2)?;
        Ok(Opened {
            spool: Spool {
                tx,
                shared,
                bodies,
                thread: Arc::new(Mutex::new(Some(thread))),
            },
            recovered,
            damage: found.damage,
        })
    }

    /// Sends a request to the spool thread; gives it back (boxed) when
    /// the thread is gone.
    fn send(&self, request: Request) -> Result<(), Box<Request>> {
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.send(request).map_err(|e| {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            Box::new(e.0)
        })
    }

    /// Stores a message; the answer comes once it is durable.
    pub fn store(&self, message: NewMessage) -> oneshot::Receiver<Result<Stored, SpoolError>> {
        let (reply, answer) = oneshot::channel();
        self.send_store(vec![message], Waiter::One(reply));
        answer
    }

    /// Stores several messages in one write: all are durable when the
    /// answer comes, or none is stored (an HTTP injection request is one
    /// group).
    pub fn store_all(
        &self,
        messages: Vec<NewMessage>,
    ) -> oneshot::Receiver<Result<Vec<Stored>, SpoolError>> {
        let (reply, answer) = oneshot::channel();
        self.send_store(messages, Waiter::All(reply));
        answer
    }

    fn send_store(&self, messages: Vec<NewMessage>, waiter: Waiter) {
        if let Err(request) = self.send(Request::Store(messages, waiter))
            && let Request::Store(_, waiter) = *request
        {
            waiter.answer(Err(SpoolError::Closed));
        }
    }

    /// Records that a recipient of an entry is delivered or failed for
    /// good; durable with the next batch (or, on a full disk, as soon as
    /// there is room).
    pub fn done(&self, entry: u64, recipient: &str) {
        // A spool that is gone has nothing left to record into.
        let _ = self.send(Request::Record(Record::Done {
            entry,
            recipient: recipient.to_owned(),
        }));
    }

    /// Records an entry's attempts after a transient failure, and when
    /// the next one is due (`None`: at once).
    pub fn attempted(&self, entry: u64, attempts: u32, next: Option<SystemTime>) {
        let _ = self.send(Request::Record(Record::Attempted {
            entry,
            attempts,
            next_ms: next.map_or(0, millis),
        }));
    }

    /// Waits until everything sent before is written (or, for outcomes on
    /// a full disk, held for writing).
    pub fn sync(&self) -> oneshot::Receiver<()> {
        let (reply, answer) = oneshot::channel();
        if let Err(request) = self.send(Request::Barrier(reply))
            && let Request::Barrier(reply) = *request
        {
            let _ = reply.send(());
        }
        answer
    }

    /// The stored envelope of a message with work left, brought up to
    /// date; read from disk, so not for an event loop.
    pub fn envelope(&self, id: u64) -> Result<Envelope, BodyError> {
        bodies::envelope(&self.shared, id)
    }

    /// Reads bodies back for delivery.
    pub fn bodies(&self) -> Bodies {
        self.bodies.clone()
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Whether new mail can be stored, and what the spool holds.
    pub fn health(&self) -> Health {
        let s = &self.shared;
        Health {
            healthy: s.healthy.load(Ordering::Relaxed),
            pending: s.pending.load(Ordering::Relaxed),
            queued: s.queued.load(Ordering::Relaxed),
            messages: s.messages.load(Ordering::Relaxed),
            segments: s.segments.load(Ordering::Relaxed),
            disk_bytes: s.disk_bytes.load(Ordering::Relaxed),
        }
    }

    /// Writes what was sent, then stops the log thread (when this is the
    /// last clone) and waits for it. Returns the outcome records that
    /// could not be written (a disk still full): their recipients may be
    /// delivered again after a restart.
    pub fn close(self) -> usize {
        let Spool { tx, thread, .. } = self;
        drop(tx);
        let Ok(mut t) = thread.lock() else {
            return 0;
        };
        if Arc::strong_count(&thread) == 1
            && let Some(t) = t.take()
        {
            return t.join().unwrap_or(0);
        }
        0
    }
}
