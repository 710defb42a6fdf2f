//! Postern's durable message store.
//!
//! An append-only log of segment files in `Spool_Dir`
//! (`docs/adr/0002-spool.md` says why, with the figures). One thread owns
//! the log. Everyone else sends it requests over a crossbeam channel: a
//! new message to store, a recipient done, an attempt made. The thread
//! takes every request waiting, writes them, and makes them durable with
//! one fsync (group commit). Only then does it answer: a stored message's
//! sender learns that it is durable, and may answer 250. No event loop
//! ever waits on the disk.
//!
//! At start, [`Spool::open`] reads the log back and returns every entry
//! with recipients left. A record cut short at the tail (a crash during a
//! write) is skipped with a report, and everything before it kept.
//! A segment is deleted once nothing in it is needed. Its outcomes are
//! durable before that, since they were fsynced with their batch.
#![warn(missing_docs)]

mod live;
mod log;
mod record;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use crate::live::Live;
use crate::log::Log;
pub use crate::record::{EntryRecord, MessageRecord, Record};

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
    /// The envelope sender; empty for `<>`.
    pub sender: String,
    /// The binding.
    pub binding: String,
    /// `BODY=8BITMIME`.
    pub eight_bit: bool,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
    /// Headers and body, CRLF line endings.
    pub body: Arc<[u8]>,
    /// (domain, recipients) for each queue.
    pub entries: Vec<(String, Vec<String>)>,
}

/// The ids of a stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The message's id.
    pub message: u64,
    /// One id per entry, in the order given.
    pub entries: Vec<u64>,
}

/// An entry with recipients left, as read back at start.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The message's record (its other entries included).
    pub message: Arc<MessageRecord>,
    /// This entry.
    pub entry: EntryRecord,
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

enum Request {
    Store(NewMessage, oneshot::Sender<Result<Stored, SpoolError>>),
    Record(Record),
    Barrier(oneshot::Sender<()>),
}

/// Options of the store.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// A new segment starts past this size.
    pub segment_size: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            segment_size: 64 * 1024 * 1024,
        }
    }
}

/// The store; clones share it. The log thread ends when the last clone is
/// dropped, after writing what it was sent.
#[derive(Debug, Clone)]
pub struct Spool {
    tx: Sender<Request>,
    stats: Arc<Stats>,
    thread: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

/// What opening found.
#[derive(Debug)]
pub struct Opened {
    /// The store.
    pub spool: Spool,
    /// Entries with recipients left.
    pub recovered: Vec<Recovered>,
    /// Damaged tails skipped, as log lines.
    pub damage: Vec<String>,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Spool {
    /// Opens (or creates) the store in `dir` and reads it back.
    pub fn open(dir: &Path, options: Options) -> io::Result<Opened> {
        let mut live = Live::default();
        let (log, damage) = Log::open(dir, options.segment_size, &mut live)?;
        let recovered = live
            .messages
            .values()
            .flat_map(|m| {
                let message = Arc::new(m.record.clone());
                m.record
                    .entries
                    .iter()
                    .filter(|e| !e.recipients.is_empty())
                    .map(move |e| Recovered {
                        message: message.clone(),
                        entry: e.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        // Ids go on from the largest seen, or from the clock if later, so
        // that they never repeat even when old segments are gone.
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(0));
        let next_id = live.max_id.max(clock) + 1;
        let (tx, rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(Stats::default());
        let writer = Writer {
            log,
            live,
            next_id,
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("postern-spool".into())
            .spawn(move || writer.run(&rx))?;
        Ok(Opened {
            spool: Spool {
                tx,
                stats,
                thread: Arc::new(std::sync::Mutex::new(Some(thread))),
            },
            recovered,
            damage: damage.0,
        })
    }

    /// Stores a message; the answer comes once it is durable.
    pub fn store(&self, message: NewMessage) -> oneshot::Receiver<Result<Stored, SpoolError>> {
        let (reply, answer) = oneshot::channel();
        if let Err(crossbeam_channel::SendError(Request::Store(_, reply))) =
            self.tx.send(Request::Store(message, reply))
        {
            let _ = reply.send(Err(SpoolError::Closed));
        }
        answer
    }

    /// Records that a recipient of an entry is delivered or failed for
    /// good; durable with the next batch.
    pub fn done(&self, entry: u64, recipient: &str) {
        let _ = self.tx.send(Request::Record(Record::Done {
            entry,
            recipient: recipient.to_owned(),
        }));
    }

    /// Records an entry's attempt count after a transient failure.
    pub fn attempted(&self, entry: u64, attempts: u32) {
        let _ = self
            .tx
            .send(Request::Record(Record::Attempted { entry, attempts }));
    }

    /// Waits until everything sent before is durable.
    pub fn sync(&self) -> oneshot::Receiver<()> {
        let (reply, answer) = oneshot::channel();
        let _ = self.tx.send(Request::Barrier(reply));
        answer
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Writes what was sent, then stops the log thread (when this is the
    /// last clone) and waits for it.
    pub fn close(self) {
        let Spool { tx, thread, .. } = self;
        drop(tx);
        if let Ok(mut t) = thread.lock()
            && Arc::strong_count(&thread) == 1
            && let Some(t) = t.take()
        {
            let _ = t.join();
        }
    }
}

/// The log thread's state.
struct Writer {
    log: Log,
    live: Live,
    next_id: u64,
    stats: Arc<Stats>,
}

/// Requests taken into one batch at most.
const MAX_BATCH: usize = 8192;

fn error(e: &io::Error) -> SpoolError {
    if e.raw_os_error() == Some(28) || e.kind() == io::ErrorKind::StorageFull {
        SpoolError::Full(e.to_string())
    } else {
        SpoolError::Io(e.to_string())
    }
}

impl Writer {
    fn run(mut self, rx: &Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Writes a batch with one fsync, then answers it.
    fn commit(&mut self, batch: Vec<Request>) {
        let started = Instant::now();
        let mut bytes = Vec::new();
        let mut written: Vec<(Record, u64)> = Vec::new();
        let mut stores = Vec::new();
        let mut barriers = Vec::new();
        for request in batch {
            let record = match request {
                Request::Store(m, reply) => {
                    let id = self.id();
                    let entries: Vec<EntryRecord> = m
                        .entries
                        .into_iter()
                        .map(|(domain, recipients)| EntryRecord {
                            entry: self.id(),
                            domain,
                            recipients,
                            attempts: 0,
                        })
                        .collect();
                    stores.push((
                        reply,
                        Stored {
                            message: id,
                            entries: entries.iter().map(|e| e.entry).collect(),
                        },
                    ));
                    Record::Message(MessageRecord {
                        id,
                        received_ms: millis(m.received),
                        sender: m.sender,
                        binding: m.binding,
                        eight_bit: m.eight_bit,
                        smtputf8: m.smtputf8,
                        body: m.body,
                        entries,
                    })
                }
                Request::Record(r) => r,
                Request::Barrier(reply) => {
                    barriers.push(reply);
                    continue;
                }
            };
            let before = bytes.len();
            record.encode(&mut bytes);
            written.push((record, (bytes.len() - before) as u64));
        }
        let result = if bytes.is_empty() {
            Ok(())
        } else {
            self.log.append(&bytes)
        };
        match result {
            Ok(()) => {
                let segment = self.log.number();
                self.live.grew(segment, bytes.len() as u64);
                self.stats
                    .fsyncs
                    .fetch_add(u64::from(!bytes.is_empty()), Ordering::Relaxed);
                self.stats
                    .records
                    .fetch_add(written.len() as u64, Ordering::Relaxed);
                self.stats
                    .bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                self.stats
                    .last_batch
                    .store(written.len() as u64, Ordering::Relaxed);
                let took = started.elapsed().min(Duration::from_secs(3600));
                metrics::histogram!(postern_metrics::SPOOL_FSYNC).record(took.as_secs_f64());
                metrics::histogram!(postern_metrics::SPOOL_BATCH).record(written.len() as f64);
                self.stats.last_fsync_micros.store(
                    u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                for (record, size) in written {
                    self.live.apply(record, segment, size);
                }
                for (reply, stored) in stores {
                    let _ = reply.send(Ok(stored));
                }
            }
            Err(e) => {
                let e = error(&e);
                for (reply, _) in stores {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
        for b in barriers {
            let _ = b.send(());
        }
        // Housekeeping failures leave old segments in place: nothing is
        // lost, the next batch tries again.
        let _ = self.log.roll_if_full(&mut self.live);
        let _ = self.log.reclaim(&mut self.live);
    }
}
