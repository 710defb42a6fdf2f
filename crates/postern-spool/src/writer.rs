//! The log thread: group commit, outcomes that wait for space, health,
//! and housekeeping between batches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::live::Loc;
use crate::log::Log;
use crate::record::{EntryRecord, Envelope, Record};
use crate::{NewMessage, Options, Request, Shared, SpoolError, Stored, Waiter, free_space, millis};

/// Requests taken into one batch at most.
const MAX_BATCH: usize = 8192;

/// How often housekeeping runs with no requests coming in.
const TICK: Duration = Duration::from_millis(500);

/// How long outcome records (done, attempted) wait for a store to share
/// its fsync. A crash within it can deliver a message again; it never
/// loses one.
const LINGER: Duration = Duration::from_millis(10);

fn error(e: &std::io::Error) -> SpoolError {
    if e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull {
        SpoolError::Full(e.to_string())
    } else {
        SpoolError::Io(e.to_string())
    }
}

/// A message being stored: its record.
struct Store {
    envelope: Envelope,
    body: Arc<[u8]>,
    completes: Vec<(u64, String)>,
}

/// Messages stored together, and who waits for them.
struct Group {
    stores: Vec<Store>,
    waiter: Waiter,
}

/// The log thread's state.
pub(crate) struct Writer {
    pub(crate) log: Log,
    pub(crate) shared: Arc<Shared>,
    next_id: u64,
    options: Options,
    /// Outcomes not yet written (a full disk), oldest first.
    pending: Vec<Record<'static>>,
    /// Attempts held back while the disk is short of space, the latest per
    /// entry: the reserve is kept for done records, which free space.
    held: BTreeMap<u64, (u32, u64)>,
    /// The last write failed.
    failing: bool,
}

impl Writer {
    pub(crate) fn new(log: Log, shared: Arc<Shared>, next_id: u64, options: Options) -> Self {
        Self {
            log,
            shared,
            next_id,
            options,
            pending: Vec::new(),
            held: BTreeMap::new(),
            failing: false,
        }
    }

    /// Serves requests until every sender is gone; returns the outcome
    /// records it could not write. Outcome records alone wait up to
    /// [`LINGER`] for stores (or a barrier) to go with them: one fsync
    /// instead of two.
    pub(crate) fn run(mut self, rx: &Receiver<Request>) -> usize {
        let mut checked = Instant::now();
        let mut lingering: Vec<Request> = Vec::new();
        let mut until: Option<Instant> = None;
        loop {
            let wait = until.map_or(TICK, |t| t.saturating_duration_since(Instant::now()));
            match rx.recv_timeout(wait) {
                Ok(first) => {
                    let mut batch = std::mem::take(&mut lingering);
                    batch.reserve((rx.len() + 1).min(MAX_BATCH));
                    let mut urgent = !matches!(first, Request::Record(_));
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(r) => {
                                urgent |= !matches!(r, Request::Record(_));
                                batch.push(r);
                            }
                            Err(_) => break,
                        }
                    }
                    let now = Instant::now();
                    let due = until.is_some_and(|t| t <= now);
                    if !urgent && !due && batch.len() < MAX_BATCH {
                        until.get_or_insert(now + LINGER);
                        lingering = batch;
                    } else {
                        until = None;
                        self.commit(batch);
                        self.make_room();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if until.take().is_some() {
                        self.commit(std::mem::take(&mut lingering));
                        self.make_room();
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    if !lingering.is_empty() {
                        self.commit(lingering);
                    }
                    break;
                }
            }
            if checked.elapsed() >= TICK {
                self.housekeeping();
                checked = Instant::now();
            }
        }
        let held = self.take_held();
        if !self.pending.is_empty() || !held.is_empty() {
            self.write_outcomes(held);
        }
        self.pending.len() + self.held.len()
    }

    /// Whether space is short: attempts are then held back.
    fn short(&self) -> bool {
        self.failing || !self.pending.is_empty() || !self.log.reserve_present()
    }

    /// Whether a reclaimed segment may be kept as a spare: space is not
    /// short, and a segment more and the reserve stay free beside it.
    pub(crate) fn room_for_spare(&self) -> bool {
        !self.short() && free_space(self.log.dir()) >= self.spare_room()
    }

    /// The space to leave free beside a spare: a segment more and the
    /// reserve.
    fn spare_room(&self) -> u64 {
        self.options
            .reserve
            .saturating_add(self.options.segment_size)
    }

    /// The held attempts as records, to write now.
    fn take_held(&mut self) -> Vec<Record<'static>> {
        std::mem::take(&mut self.held)
            .into_iter()
            .map(|(entry, (attempts, next_ms))| Record::Attempted {
                entry,
                attempts,
                next_ms,
            })
            .collect()
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn envelope(&mut self, m: NewMessage) -> Store {
        let id = self.id();
        let entries = m
            .entries
            .into_iter()
            .map(|(domain, recipients)| EntryRecord {
                entry: self.id(),
                domain,
                recipients,
                attempts: 0,
                next_ms: 0,
            })
            .collect();
        Store {
            envelope: Envelope {
                id,
                received_ms: millis(m.received),
                message_id: m.message_id,
                sender: m.sender,
                binding: m.binding,
                eight_bit: m.eight_bit,
                smtputf8: m.smtputf8,
                client: m.client,
                entries,
            },
            body: m.body,
            completes: m.completes,
        }
    }

    /// Writes a batch with one fsync, then answers it.
    fn commit(&mut self, batch: Vec<Request>) {
        self.shared.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        let mut groups = Vec::with_capacity(batch.len());
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut barriers = Vec::new();
        for request in batch {
            match request {
                Request::Store(messages, waiter) => {
                    let stores = messages.into_iter().map(|m| self.envelope(m)).collect();
                    groups.push(Group { stores, waiter });
                }
                Request::Record(Record::Attempted {
                    entry,
                    attempts,
                    next_ms,
                }) if self.short() => {
                    let slot = self.held.entry(entry).or_default();
                    *slot = (slot.0.max(attempts), next_ms);
                }
                Request::Record(r) => outcomes.push(r),
                Request::Barrier(reply) => barriers.push(reply),
            }
        }
        if groups.is_empty() {
            self.write_outcomes(outcomes);
        } else {
            self.write_all(groups, outcomes);
        }
        for b in barriers {
            let _ = b.send(());
        }
    }

    /// Outcomes (the pending ones first) and messages in one write; when
    /// that fails, the outcomes alone.
    fn write_all(&mut self, groups: Vec<Group>, outcomes: Vec<Record<'static>>) {
        let mut records = std::mem::take(&mut self.pending);
        records.extend(outcomes);
        let mut waiting = Vec::with_capacity(groups.len());
        let mut envelopes = Vec::new();
        let mut bodies = Vec::new();
        for group in groups {
            let mut stored = Vec::with_capacity(group.stores.len());
            for s in group.stores {
                stored.push(Stored {
                    message: s.envelope.id,
                    entries: s.envelope.entries.iter().map(|e| e.entry).collect(),
                });
                bodies.push((s.envelope.id, s.body));
                envelopes.push((s.envelope, s.completes));
            }
            waiting.push((group.waiter, stored));
        }
        let messages: Vec<Record<'_>> = envelopes
            .into_iter()
            .zip(&bodies)
            .map(|((envelope, completes), (_, body))| Record::Message {
                envelope,
                body,
                completes,
            })
            .collect();
        let result = self.write(&records, &messages);
        drop(messages);
        match result {
            Ok(()) => {
                let mut cache = self.shared.cache();
                for (id, body) in bodies {
                    cache.insert(id, body);
                }
                drop(cache);
                for (waiter, stored) in waiting {
                    waiter.answer(Ok(stored));
                }
            }
            Err(e) => {
                for (waiter, _) in waiting {
                    waiter.answer(Err(e.clone()));
                }
                self.write_outcomes(records);
            }
        }
    }

    /// Writes outcomes (the pending ones first). On a full disk the reserve
    /// is given up for them; what still does not fit waits.
    pub(crate) fn write_outcomes(&mut self, outcomes: Vec<Record<'static>>) {
        let mut records = std::mem::take(&mut self.pending);
        records.extend(outcomes);
        if records.is_empty() {
            return;
        }
        let mut result = self.write(&records, &[]);
        if matches!(result, Err(SpoolError::Full(_)))
            && self.log.reserve_present()
            && self.log.release_reserve().is_ok()
        {
            result = self.write(&records, &[]);
        }
        if result.is_err() {
            self.pending = records;
        }
        self.shared
            .pending
            .store(self.pending.len() + self.held.len(), Ordering::Relaxed);
    }

    /// Appends `outcomes` and `messages` with one fsync and applies them.
    pub(crate) fn write(
        &mut self,
        outcomes: &[Record<'static>],
        messages: &[Record<'_>],
    ) -> Result<(), SpoolError> {
        let started = Instant::now();
        let (segment, base) = self.log.position();
        let owner = self.log.key().owner(segment);
        let records: Vec<&Record<'_>> = outcomes.iter().chain(messages).collect();
        let mut bytes = Vec::with_capacity(records.iter().map(|r| r.size_hint()).sum());
        let mut locs = Vec::with_capacity(records.len());
        for r in &records {
            let offset = bytes.len();
            let len = r.encode(&mut bytes, owner);
            locs.push(Loc {
                segment,
                offset: base + offset as u64,
                len: u32::try_from(len).unwrap_or(u32::MAX),
            });
        }
        if let Err(e) = self.log.append(&bytes) {
            // The listener stops taking mail at once; housekeeping says
            // when it may again.
            self.failing = true;
            self.shared.healthy.store(false, Ordering::Relaxed);
            return Err(error(&e));
        }
        self.failing = false;
        let took = started.elapsed();
        let stats = &self.shared.stats;
        stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        stats
            .records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        stats
            .last_batch
            .store(records.len() as u64, Ordering::Relaxed);
        stats.last_fsync_micros.store(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        metrics::histogram!(postern_metrics::SPOOL_FSYNC).record(took.as_secs_f64());
        metrics::histogram!(postern_metrics::SPOOL_BATCH).record(records.len() as f64);
        let mut finished = Vec::new();
        {
            let mut live = self.shared.live();
            live.grew(segment, bytes.len() as u64);
            for (r, loc) in records.iter().zip(locs) {
                finished.extend(live.apply(r, loc));
            }
        }
        let mut cache = self.shared.cache();
        for id in finished {
            cache.remove(id);
        }
        Ok(())
    }

    /// After each batch: a new segment when the current one is full, and
    /// reclaiming.
    fn make_room(&mut self) {
        // A segment that cannot be started now is started after a later
        // batch; the current one grows meanwhile.
        let _ = self.log.roll_if_full(&mut self.shared.live());
        self.reclaim();
    }

    /// Every `TICK`: pending outcomes, room, the reserve, and the health
    /// and figures the listener and the metrics read.
    pub(crate) fn housekeeping(&mut self) {
        if !self.pending.is_empty() {
            self.write_outcomes(Vec::new());
        }
        self.make_room();
        if self.pending.is_empty() && !self.log.reserve_present() {
            let _ = self.log.make_reserve(self.options.reserve);
        }
        if !self.held.is_empty() && !self.short() {
            let held = self.take_held();
            self.write_outcomes(held);
        }
        let mut free = free_space(self.log.dir());
        if self.short() || free < self.spare_room() {
            // Spares give their space back; deleted, not written, they
            // cost nothing to lose.
            if self.log.drop_spares().is_ok() {
                free = free_space(self.log.dir());
            }
        }
        let healthy = self.pending.is_empty()
            && self.held.is_empty()
            && !self.failing
            && self.log.reserve_present()
            && free >= self.options.reserve;
        self.shared.healthy.store(healthy, Ordering::Relaxed);
        let (segments, disk_bytes, messages, cached) = {
            let live = self.shared.live();
            (
                live.segments.len(),
                live.segments.values().map(|s| s.size).sum::<u64>(),
                live.len(),
                self.shared.cache().bytes(),
            )
        };
        let s = &self.shared;
        s.segments.store(segments, Ordering::Relaxed);
        s.disk_bytes.store(disk_bytes, Ordering::Relaxed);
        s.messages.store(messages, Ordering::Relaxed);
        metrics::gauge!(postern_metrics::SPOOL_HEALTHY).set(if healthy { 1.0 } else { 0.0 });
        metrics::gauge!(postern_metrics::SPOOL_PENDING)
            .set((self.pending.len() + self.held.len()) as f64);
        metrics::gauge!(postern_metrics::SPOOL_SEGMENTS).set(segments as f64);
        metrics::gauge!(postern_metrics::SPOOL_DISK_BYTES).set(disk_bytes as f64);
        metrics::gauge!(postern_metrics::SPOOL_MESSAGES).set(messages as f64);
        metrics::gauge!(postern_metrics::SPOOL_CACHED_BYTES).set(cached as f64);
    }
}
