//! What the log means now: the messages with recipients still to deliver,
//! and how much of each segment is still needed.

use std::collections::{BTreeMap, HashMap};

use crate::record::{MessageRecord, Record};

/// A message with work left, and where its latest copy lives.
#[derive(Debug, Clone)]
pub(crate) struct LiveMessage {
    pub(crate) record: MessageRecord,
    pub(crate) segment: u32,
    /// The framed size of that copy.
    pub(crate) bytes: u64,
}

/// How much of a segment is still needed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SegmentUse {
    pub(crate) live_messages: usize,
    pub(crate) live_bytes: u64,
    pub(crate) size: u64,
}

/// The live state.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub(crate) messages: HashMap<u64, LiveMessage>,
    entries: HashMap<u64, u64>,
    pub(crate) segments: BTreeMap<u32, SegmentUse>,
    /// The largest id seen (messages and entries share the counter).
    pub(crate) max_id: u64,
}

fn finished(m: &MessageRecord) -> bool {
    m.entries.iter().all(|e| e.recipients.is_empty())
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

    fn forget(&mut self, id: u64) {
        let Some(old) = self.messages.remove(&id) else {
            return;
        };
        for e in &old.record.entries {
            self.entries.remove(&e.entry);
        }
        if let Some(s) = self.segments.get_mut(&old.segment) {
            s.live_messages = s.live_messages.saturating_sub(1);
            s.live_bytes = s.live_bytes.saturating_sub(old.bytes);
        }
    }

    /// Applies one record written (or read back) in `segment`, taking
    /// `bytes` there.
    pub(crate) fn apply(&mut self, record: Record, segment: u32, bytes: u64) {
        match record {
            Record::Message(m) => {
                self.max_id = self
                    .max_id
                    .max(m.id)
                    .max(m.entries.iter().map(|e| e.entry).max().unwrap_or(0));
                self.forget(m.id);
                if finished(&m) {
                    return;
                }
                for e in &m.entries {
                    self.entries.insert(e.entry, m.id);
                }
                let s = self.segments.entry(segment).or_default();
                s.live_messages += 1;
                s.live_bytes += bytes;
                self.messages.insert(
                    m.id,
                    LiveMessage {
                        record: m,
                        segment,
                        bytes,
                    },
                );
            }
            Record::Done { entry, recipient } => {
                let Some(&id) = self.entries.get(&entry) else {
                    return;
                };
                let Some(m) = self.messages.get_mut(&id) else {
                    return;
                };
                if let Some(e) = m.record.entries.iter_mut().find(|e| e.entry == entry) {
                    e.recipients.retain(|r| *r != recipient);
                }
                if finished(&m.record) {
                    self.forget(id);
                }
            }
            Record::Attempted { entry, attempts } => {
                let m = self
                    .entries
                    .get(&entry)
                    .and_then(|id| self.messages.get_mut(id));
                if let Some(e) =
                    m.and_then(|m| m.record.entries.iter_mut().find(|e| e.entry == entry))
                {
                    e.attempts = e.attempts.max(attempts);
                }
            }
        }
    }

    /// The live messages whose latest copy is in `segment`.
    pub(crate) fn in_segment(&self, segment: u32) -> Vec<MessageRecord> {
        self.messages
            .values()
            .filter(|m| m.segment == segment)
            .map(|m| m.record.clone())
            .collect()
    }
}
