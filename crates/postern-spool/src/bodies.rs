//! Message bodies for delivery, and envelopes read back for queues that
//! keep part of their mail on disk. Memory holds a bounded cache of bodies
//! (new ones, and ones read back for a batch about to go out); the rest
//! are read from their segment by reader threads, never on an event loop.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use crate::record::{Envelope, Record, decode_in};
use crate::{Shared, log};

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The spool holds no such message (finished, or never stored).
    #[error("message {0:x} is not in the spool")]
    Gone(u64),
    /// Its record on disk is damaged.
    #[error("message {0:x}: its spool record is damaged")]
    Damaged(u64),
    /// Reading failed.
    #[error("reading the spool failed: {0}")]
    Io(String),
    /// The spool has stopped.
    #[error("spool closed")]
    Closed,
}

/// Bodies by message id, the oldest dropped first past `capacity` bytes.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    map: HashMap<u64, Arc<[u8]>>,
    order: VecDeque<u64>,
    bytes: u64,
    capacity: u64,
}

impl Cache {
    pub(crate) fn new(capacity: u64) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<[u8]>> {
        self.map.get(&id).cloned()
    }

    pub(crate) fn insert(&mut self, id: u64, body: Arc<[u8]>) {
        let size = body.len() as u64;
        if size > self.capacity {
            return;
        }
        if let Some(old) = self.map.insert(id, body) {
            self.bytes -= old.len() as u64;
        } else {
            self.order.push_back(id);
        }
        self.bytes += size;
        while self.bytes > self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.remove(oldest);
        }
        // Ids of bodies removed since stay in `order` until they come up;
        // keep that list from outgrowing the cache.
        if self.order.len() > 2 * self.map.len() + 1024 {
            let map = &self.map;
            self.order.retain(|id| map.contains_key(id));
        }
    }

    pub(crate) fn remove(&mut self, id: u64) {
        if let Some(old) = self.map.remove(&id) {
            self.bytes -= old.len() as u64;
        }
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// A message's envelope, brought up to date, or why it could not be had.
pub type EnvelopeRead = (u64, Result<Envelope, BodyError>);

/// What a reader thread is asked.
enum Read {
    Body(u64, oneshot::Sender<Result<Arc<[u8]>, BodyError>>),
    Envelopes(Vec<u64>, oneshot::Sender<Vec<EnvelopeRead>>),
}

/// Reads bodies back; clones share the cache and the reader threads.
#[derive(Debug, Clone)]
pub struct Bodies {
    shared: Arc<Shared>,
    reads: Sender<Read>,
    /// `postern_spool_body_reads_total{source="cache"}`.
    from_cache: metrics::Counter,
}

impl Bodies {
    pub(crate) fn start(shared: Arc<Shared>, readers: usize) -> std::io::Result<Bodies> {
        let (reads, rx) = crossbeam_channel::unbounded();
        let from_disk = metrics::counter!(postern_metrics::SPOOL_BODY_READS, "source" => "disk");
        for n in 0..readers.max(1) {
            let (shared, rx, from_disk) = (shared.clone(), rx.clone(), from_disk.clone());
            std::thread::Builder::new()
                .name(format!("postern-spool-read-{n}"))
                .spawn(move || serve(&shared, &rx, &from_disk))?;
        }
        Ok(Bodies {
            shared,
            reads,
            from_cache: metrics::counter!(postern_metrics::SPOOL_BODY_READS, "source" => "cache"),
        })
    }

    /// The body of message `id` (the spool's message id, not an entry's).
    pub fn load(
        &self,
        id: u64,
    ) -> impl Future<Output = Result<Arc<[u8]>, BodyError>> + Send + 'static {
        let hit = self.shared.cache().get(id);
        let pending = match hit {
            Some(_) => {
                self.from_cache.increment(1);
                None
            }
            None => {
                let (answer, rx) = oneshot::channel();
                Some(self.reads.send(Read::Body(id, answer)).ok().map(|()| rx))
            }
        };
        async move {
            match (hit, pending) {
                (Some(body), _) => Ok(body),
                (None, Some(Some(rx))) => rx.await.unwrap_or(Err(BodyError::Closed)),
                (None, _) => Err(BodyError::Closed),
            }
        }
    }

    /// The envelopes of these messages (the spool's message ids), brought
    /// up to date, read from disk on a reader thread. Their bodies go into
    /// the cache: their mail is about to go out.
    pub fn envelopes(
        &self,
        ids: Vec<u64>,
    ) -> impl Future<Output = Result<Vec<EnvelopeRead>, BodyError>> + Send + 'static {
        let (answer, rx) = oneshot::channel();
        let sent = self.reads.send(Read::Envelopes(ids, answer)).is_ok();
        async move {
            if !sent {
                return Err(BodyError::Closed);
            }
            rx.await.map_err(|_| BodyError::Closed)
        }
    }
}

fn serve(shared: &Shared, rx: &Receiver<Read>, from_disk: &metrics::Counter) {
    while let Ok(read) = rx.recv() {
        match read {
            Read::Body(id, answer) => {
                let cached = shared.cache().get(id);
                let body = cached.map_or_else(|| body(shared, id, from_disk), Ok);
                let _ = answer.send(body);
            }
            Read::Envelopes(ids, answer) => {
                let found = ids
                    .into_iter()
                    .map(|id| {
                        let read = from_disk_cached(shared, id, from_disk)
                            .and_then(|(envelope, _)| up_to_date(shared, envelope));
                        (id, read)
                    })
                    .collect();
                let _ = answer.send(found);
            }
        }
    }
}

fn body(shared: &Shared, id: u64, from_disk: &metrics::Counter) -> Result<Arc<[u8]>, BodyError> {
    from_disk_cached(shared, id, from_disk).map(|(_, body)| body)
}

/// A message read from disk for delivery: counted, and its body cached
/// for the connection about to take it.
fn from_disk_cached(
    shared: &Shared,
    id: u64,
    from_disk: &metrics::Counter,
) -> Result<(Envelope, Arc<[u8]>), BodyError> {
    let (envelope, body) = message(shared, id)?;
    from_disk.increment(1);
    shared.cache().insert(id, body.clone());
    Ok((envelope, body))
}

/// The envelope of a message with work left, brought up to date.
pub(crate) fn envelope(shared: &Shared, id: u64) -> Result<Envelope, BodyError> {
    let (envelope, _) = message(shared, id)?;
    up_to_date(shared, envelope)
}

/// `envelope` with what is done since it was written left out; gone when
/// nothing is left.
fn up_to_date(shared: &Shared, mut envelope: Envelope) -> Result<Envelope, BodyError> {
    if shared.live().bring_up_to_date(&mut envelope) {
        Ok(envelope)
    } else {
        Err(BodyError::Gone(envelope.id))
    }
}

/// The stored copy of a live message: its envelope as written, and its
/// body.
fn message(shared: &Shared, id: u64) -> Result<(Envelope, Arc<[u8]>), BodyError> {
    // A copy moved forward while being read: its old segment may be gone,
    // or already reused and overwritten; the second look finds the new
    // one.
    for _ in 0..3 {
        let loc = shared.live().locate(id).ok_or(BodyError::Gone(id))?;
        let bytes = match log::read(&shared.dir, loc) {
            Ok(b) => b,
            // Gone, or cut down to a spare's size.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                continue;
            }
            Err(e) => return Err(BodyError::Io(e.to_string())),
        };
        return match decode_in(&bytes, shared.key.owner(loc.segment)) {
            Some((Record::Message { envelope, body, .. }, _)) if envelope.id == id => {
                Ok((envelope, Arc::from(body)))
            }
            _ if shared.live().locate(id) != Some(loc) => continue,
            _ => Err(BodyError::Damaged(id)),
        };
    }
    // Still live, but its record could not be read where it was said to
    // be: moved again each time, or its file cut short.
    Err(BodyError::Io(format!(
        "message {id:x}: its record could not be read (its segment moved or was cut short)"
    )))
}
