//! Records on disk. Each is framed as `length u32 LE | crc32 u32 LE |
//! payload`, the CRC over the payload, so that a record cut short by a
//! crash or corrupted on disk is recognised, never half-applied.

use std::sync::Arc;

/// One queue entry of a message: its recipients at one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    /// The entry's id (the engine's message id for this queue).
    pub entry: u64,
    /// The destination domain.
    pub domain: String,
    /// The recipients not yet delivered or failed.
    pub recipients: Vec<String>,
    /// Delivery attempts made.
    pub attempts: u32,
}

/// A message with its body, stored once, and its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// The message's id.
    pub id: u64,
    /// Reception time, milliseconds since the Unix epoch.
    pub received_ms: u64,
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
    /// Its queue entries.
    pub entries: Vec<EntryRecord>,
}

/// What the log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A message (new, or rewritten with its current state when its
    /// segment is reclaimed; the later copy wins).
    Message(MessageRecord),
    /// A recipient of an entry is delivered or failed for good.
    Done {
        /// The entry.
        entry: u64,
        /// The recipient.
        recipient: String,
    },
    /// An entry's attempt count after a transient failure.
    Attempted {
        /// The entry.
        entry: u64,
        /// Attempts made so far.
        attempts: u32,
    },
}

const MESSAGE: u8 = 1;
const DONE: u8 = 2;
const ATTEMPTED: u8 = 3;

/// The frame header's size.
pub(crate) const HEADER: usize = 8;

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u32()?).ok()?;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
    fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.u32()?).ok()?;
        // Each item takes at least 4 bytes: a bad count cannot allocate.
        (n <= self.0.len() / 4).then_some(n)
    }
}

impl Record {
    /// Appends the framed record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        let mut w = Writer(out);
        match self {
            Record::Message(m) => {
                w.u8(MESSAGE);
                w.u64(m.id);
                w.u64(m.received_ms);
                w.str(&m.sender);
                w.str(&m.binding);
                w.u8(u8::from(m.eight_bit) | (u8::from(m.smtputf8) << 1));
                w.bytes(&m.body);
                w.u32(u32::try_from(m.entries.len()).unwrap_or(u32::MAX));
                for e in &m.entries {
                    w.u64(e.entry);
                    w.str(&e.domain);
                    w.u32(e.attempts);
                    w.u32(u32::try_from(e.recipients.len()).unwrap_or(u32::MAX));
                    for r in &e.recipients {
                        w.str(r);
                    }
                }
            }
            Record::Done { entry, recipient } => {
                w.u8(DONE);
                w.u64(*entry);
                w.str(recipient);
            }
            Record::Attempted { entry, attempts } => {
                w.u8(ATTEMPTED);
                w.u64(*entry);
                w.u32(*attempts);
            }
        }
        let payload = out.get(start + HEADER..).unwrap_or_default();
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let crc = crc32fast::hash(payload);
        let mut header = [0u8; HEADER];
        let (l, c) = header.split_at_mut(4);
        l.copy_from_slice(&len.to_le_bytes());
        c.copy_from_slice(&crc.to_le_bytes());
        if let Some(slot) = out.get_mut(start..start + HEADER) {
            slot.copy_from_slice(&header);
        }
    }

    /// The record at the start of `bytes` and its framed length; `None`
    /// when the bytes are not a whole, intact record.
    pub fn decode(bytes: &[u8]) -> Option<(Record, usize)> {
        let mut header = Reader(bytes.get(..HEADER)?);
        let len = usize::try_from(header.u32()?).ok()?;
        let crc = header.u32()?;
        let payload = bytes.get(HEADER..HEADER.checked_add(len)?)?;
        if crc32fast::hash(payload) != crc {
            return None;
        }
        let mut r = Reader(payload);
        let record = match r.u8()? {
            MESSAGE => {
                let id = r.u64()?;
                let received_ms = r.u64()?;
                let sender = r.string()?;
                let binding = r.string()?;
                let flags = r.u8()?;
                let body: Arc<[u8]> = r.bytes()?.into();
                let mut entries = Vec::new();
                for _ in 0..r.count()? {
                    let entry = r.u64()?;
                    let domain = r.string()?;
                    let attempts = r.u32()?;
                    let mut recipients = Vec::new();
                    for _ in 0..r.count()? {
                        recipients.push(r.string()?);
                    }
                    entries.push(EntryRecord {
                        entry,
                        domain,
                        recipients,
                        attempts,
                    });
                }
                Record::Message(MessageRecord {
                    id,
                    received_ms,
                    sender,
                    binding,
                    eight_bit: flags & 1 != 0,
                    smtputf8: flags & 2 != 0,
                    body,
                    entries,
                })
            }
            DONE => Record::Done {
                entry: r.u64()?,
                recipient: r.string()?,
            },
            ATTEMPTED => Record::Attempted {
                entry: r.u64()?,
                attempts: r.u32()?,
            },
            _ => return None,
        };
        r.0.is_empty().then_some((record, HEADER + len))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn message() -> Record {
        Record::Message(MessageRecord {
            id: 7,
            received_ms: 1_700_000_000_000,
            sender: "a@example.org".into(),
            binding: "default".into(),
            eight_bit: true,
            smtputf8: false,
            body: Arc::from(&b"Subject: x\r\n\r\nbody\r\n"[..]),
            entries: vec![EntryRecord {
                entry: 8,
                domain: "example.com".into(),
                recipients: vec!["b@example.com".into(), "c@example.com".into()],
                attempts: 2,
            }],
        })
    }

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let records = [
            message(),
            Record::Done {
                entry: 8,
                recipient: "b@example.com".into(),
            },
            Record::Attempted {
                entry: 8,
                attempts: 3,
            },
        ];
        let mut buf = Vec::new();
        for r in &records {
            r.encode(&mut buf);
        }
        let mut at = 0;
        for r in &records {
            let (got, len) = Record::decode(&buf[at..]).unwrap();
            assert_eq!(&got, r);
            at += len;
        }
        assert_eq!(at, buf.len());
        // Cut anywhere inside the first record: not a record.
        let (_, first) = Record::decode(&buf).unwrap();
        for cut in 0..first {
            assert!(Record::decode(&buf[..cut]).is_none(), "cut at {cut}");
        }
        let mut bad = buf.clone();
        bad[HEADER + 3] ^= 1;
        assert!(Record::decode(&bad).is_none());
    }

    proptest! {
        #[test]
        fn no_bytes_make_decoding_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Record::decode(&bytes);
        }
    }
}
