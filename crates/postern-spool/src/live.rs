//! What the log means now, without the bodies: where each message's
//! latest copy lies, what is left of its entries, and what each segment
//! holds, so that any segment can be reclaimed without changing what a
//! restart would read.
//!
//! The rule that keeps reclaiming safe: a segment may go when, for every
//! message it says anything about, either no older segment holds a copy of
//! that message, or a newer segment does (a copy is written with the
//! message's state at that time, so it supersedes everything before it).
//! [`Live::plan`] lists the copies and tombstones that make it so.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use smallvec::SmallVec;

use crate::Recovered;
use crate::record::{Envelope, Record};

/// Where a record lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) segment: u32,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// What is left of one entry.
#[derive(Debug, Clone)]
struct LiveEntry {
    entry: u64,
    left: u32,
    attempts: u32,
    next_ms: u64,
    /// Its (binding, domain) queue, by number in [`Queues`]; only known
    /// for entries read at start.
    queue: u32,
    /// Recipients done since the latest copy was written.
    done: Vec<Box<str>>,
}

/// A message with work left. Held for every queued message, so kept
/// small: the entries are an exact slice, not a growable list.
#[derive(Debug, Clone)]
struct LiveMessage {
    at: Loc,
    copies: Copies,
    entries: Box<[LiveEntry]>,
}

/// The segments holding a copy of a message.
type Copies = SmallVec<[u32; 2]>;

/// How much of a segment is still needed, and whom it speaks of.
#[derive(Debug, Clone, Default)]
pub(crate) struct SegmentUse {
    /// Messages with any record here (repeats allowed).
    refs: Vec<u64>,
    /// Bytes of latest copies of live messages.
    pub(crate) live_bytes: u64,
    /// Bytes written.
    pub(crate) size: u64,
    /// Reclaiming was put off: it would copy more than it frees.
    pub(crate) deferred: bool,
}

/// What reclaiming a segment needs written first.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Live messages to copy forward, from where their copy lies.
    pub(crate) copies: Vec<Loc>,
    /// Finished messages that need a tombstone.
    pub(crate) tombstones: Vec<u64>,
}

impl Plan {
    /// Bytes the plan writes, about.
    pub(crate) fn cost(&self) -> u64 {
        self.copies.iter().map(|l| u64::from(l.len)).sum::<u64>()
            + 21 * self.tombstones.len() as u64
    }
}

/// The (binding, domain) queues entries belong to, each name kept once:
/// kept while the log is read at start, for [`Live::recovered`], and
/// dropped then (a running daemon's queues know their names).
#[derive(Debug, Default)]
struct Queues {
    names: Vec<(Arc<str>, Arc<str>)>,
    numbers: HashMap<Arc<str>, HashMap<Arc<str>, u32>>,
}

impl Queues {
    fn number(&mut self, binding: &str, domain: &str) -> u32 {
        if let Some(n) = self.numbers.get(binding).and_then(|d| d.get(domain)) {
            return *n;
        }
        let n = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let names: (Arc<str>, Arc<str>) = (binding.into(), domain.into());
        self.numbers
            .entry(names.0.clone())
            .or_default()
            .insert(names.1.clone(), n);
        self.names.push(names);
        n
    }
}

/// The live state.
#[derive(Debug, Default)]
pub(crate) struct Live {
    queues: Option<Queues>,
    messages: BTreeMap<u64, LiveMessage>,
    /// Finished messages that still have copies on disk.
    ghosts: BTreeMap<u64, Copies>,
    pub(crate) segments: BTreeMap<u32, SegmentUse>,
    /// The largest id seen (messages and entries share the counter).
    pub(crate) max_id: u64,
}

fn add(copies: &mut Copies, segment: u32) {
    if !copies.contains(&segment) {
        copies.push(segment);
    }
}

impl Live {
    /// A segment now exists (possibly empty).
    pub(crate) fn open_segment(&mut self, segment: u32) {
        self.segments.entry(segment).or_default();
    }

    /// `bytes` more were written to `segment`.
    pub(crate) fn grew(&mut self, segment: u32, bytes: u64) {
        self.segments.entry(segment).or_default().size += bytes;
    }

    /// Messages with work left.
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    /// Where a live message's latest copy lies.
    pub(crate) fn locate(&self, id: u64) -> Option<Loc> {
        self.messages.get(&id).map(|m| m.at)
    }

    fn refer(&mut self, segment: u32, id: u64) {
        self.segments.entry(segment).or_default().refs.push(id);
    }

    /// The live message that owns `entry` (entry ids follow their
    /// message's id).
    fn owner(&self, entry: u64) -> Option<u64> {
        let (&id, m) = self.messages.range(..=entry).next_back()?;
        m.entries.iter().any(|e| e.entry == entry).then_some(id)
    }

    /// Applies one record written (or read back) at `at`. Returns the
    /// message it finished, if any.
    pub(crate) fn apply(&mut self, record: &Record<'_>, at: Loc) -> Vec<u64> {
        let mut finished = Vec::new();
        match record {
            Record::Message {
                envelope,
                completes,
                ..
            } => {
                let id = envelope.id;
                let last_entry = envelope.entries.iter().map(|e| e.entry).max();
                self.max_id = self.max_id.max(id).max(last_entry.unwrap_or(0));
                self.refer(at.segment, id);
                let mut copies = match self.messages.remove(&id) {
                    Some(old) => {
                        self.unlive(old.at);
                        old.copies
                    }
                    None => self.ghosts.remove(&id).unwrap_or_default(),
                };
                add(&mut copies, at.segment);
                let mut queues = self.queues.as_mut();
                // Sized for every entry, so that the usual message (all
                // of them live) costs one allocation, not a growth and a
                // shrink.
                let mut entries = Vec::with_capacity(envelope.entries.len());
                entries.extend(
                    envelope
                        .entries
                        .iter()
                        .filter(|e| !e.recipients.is_empty())
                        .map(|e| LiveEntry {
                            entry: e.entry,
                            left: u32::try_from(e.recipients.len()).unwrap_or(u32::MAX),
                            attempts: e.attempts,
                            next_ms: e.next_ms,
                            queue: queues
                                .as_mut()
                                .map_or(u32::MAX, |q| q.number(&envelope.binding, &e.domain)),
                            done: Vec::new(),
                        }),
                );
                let entries = entries.into_boxed_slice();
                if entries.is_empty() {
                    self.ghosts.insert(id, copies);
                    finished.push(id);
                } else {
                    if let Some(s) = self.segments.get_mut(&at.segment) {
                        s.live_bytes += u64::from(at.len);
                    }
                    self.messages.insert(
                        id,
                        LiveMessage {
                            at,
                            copies,
                            entries,
                        },
                    );
                }
                for (entry, recipient) in completes {
                    finished.extend(self.done(*entry, recipient, at.segment));
                }
            }
            Record::Done { entry, recipient } => {
                finished.extend(self.done(*entry, recipient, at.segment));
            }
            Record::Attempted {
                entry,
                attempts,
                next_ms,
            } => {
                if let Some(id) = self.owner(*entry) {
                    self.refer(at.segment, id);
                    let e = self
                        .messages
                        .get_mut(&id)
                        .and_then(|m| m.entries.iter_mut().find(|e| e.entry == *entry));
                    if let Some(e) = e {
                        e.attempts = e.attempts.max(*attempts);
                        e.next_ms = *next_ms;
                    }
                }
            }
            Record::Gone { id } => {
                if self.messages.contains_key(id) {
                    self.finish(*id);
                    finished.push(*id);
                }
                if let Some(copies) = self.ghosts.get_mut(id) {
                    add(copies, at.segment);
                    self.segments.entry(at.segment).or_default().refs.push(*id);
                }
            }
        }
        finished
    }

    /// A copy at `at` is no longer a live message's latest.
    fn unlive(&mut self, at: Loc) {
        if let Some(s) = self.segments.get_mut(&at.segment) {
            s.live_bytes = s.live_bytes.saturating_sub(u64::from(at.len));
        }
    }

    fn finish(&mut self, id: u64) {
        if let Some(m) = self.messages.remove(&id) {
            self.unlive(m.at);
            self.ghosts.insert(id, m.copies);
        }
    }

    fn done(&mut self, entry: u64, recipient: &str, segment: u32) -> Option<u64> {
        let id = self.owner(entry)?;
        self.refer(segment, id);
        let m = self.messages.get_mut(&id)?;
        let e = m.entries.iter_mut().find(|e| e.entry == entry)?;
        if e.left == 0 || e.done.iter().any(|d| **d == *recipient) {
            return None;
        }
        e.left -= 1;
        if e.left == 0 {
            e.done = Vec::new();
        } else {
            e.done.push(recipient.into());
        }
        if m.entries.iter().all(|e| e.left == 0) {
            self.finish(id);
            return Some(id);
        }
        None
    }

    /// Brings `envelope` (a stored copy) up to date in place: recipients
    /// done since left out, attempts and next attempt as now. False when
    /// the message has no work left.
    pub(crate) fn bring_up_to_date(&self, envelope: &mut Envelope) -> bool {
        let Some(m) = self.messages.get(&envelope.id) else {
            return false;
        };
        envelope.entries.retain_mut(|stored| {
            let Some(e) = m.entries.iter().find(|e| e.entry == stored.entry) else {
                return false;
            };
            stored
                .recipients
                .retain(|r| !e.done.iter().any(|d| **d == **r));
            stored.attempts = e.attempts;
            stored.next_ms = e.next_ms;
            e.left > 0 && !stored.recipients.is_empty()
        });
        true
    }

    /// What must be written before `segment` can be deleted.
    /// The segment's list of messages is left sorted and without repeats.
    pub(crate) fn plan(&mut self, segment: u32) -> Plan {
        let Some(s) = self.segments.get_mut(&segment) else {
            return Plan::default();
        };
        s.refs.sort_unstable();
        s.refs.dedup();
        let ids = &s.refs;
        let mut plan = Plan::default();
        for &id in ids {
            if let Some(m) = self.messages.get(&id) {
                // Its latest copy is the newest one: none is newer than
                // this segment unless it lies after it.
                if m.at.segment <= segment {
                    plan.copies.push(m.at);
                }
            } else if let Some(copies) = self.ghosts.get(&id)
                && copies.iter().any(|&c| c < segment)
                && !copies.iter().any(|&c| c > segment)
            {
                plan.tombstones.push(id);
            }
        }
        plan
    }

    /// `segment` is gone from disk.
    pub(crate) fn delete(&mut self, segment: u32) {
        let Some(s) = self.segments.remove(&segment) else {
            return;
        };
        let mut ids = s.refs;
        // Sorted already when a plan was made; cheap when so.
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            if let Some(m) = self.messages.get_mut(&id) {
                m.copies.retain(|c| *c != segment);
            } else if let Some(copies) = self.ghosts.get_mut(&id) {
                copies.retain(|c| *c != segment);
                if copies.is_empty() {
                    self.ghosts.remove(&id);
                }
            }
        }
        for s in self.segments.values_mut() {
            s.deferred = false;
        }
    }

    /// The state for reading the log at start: entries' queues are kept.
    pub(crate) fn recovering() -> Self {
        Self {
            queues: Some(Queues::default()),
            ..Self::default()
        }
    }

    /// Every entry read at start with work left, oldest message first;
    /// from then on the queues' names are not kept.
    pub(crate) fn recovered(&mut self) -> Vec<Recovered> {
        let Some(queues) = self.queues.take() else {
            return Vec::new();
        };
        let names = &queues.names;
        self.messages
            .iter()
            .flat_map(|(&message, m)| {
                m.entries
                    .iter()
                    .filter(|e| e.left > 0)
                    .filter_map(move |e| {
                        let (binding, domain) = names.get(e.queue as usize)?;
                        Some(Recovered {
                            message,
                            entry: e.entry,
                            binding: binding.clone(),
                            domain: domain.clone(),
                        })
                    })
            })
            .collect()
    }
}
