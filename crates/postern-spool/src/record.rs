//! Records on disk, and finding them again.
//!
//! Each record is framed as `magic [4] | length u32 LE | crc32 u32 LE |
//! payload`, the CRC over the length and the payload. A record cut short
//! by a crash or damaged on disk fails its CRC and is never half-applied;
//! the magic lets [`scan`] find the next intact frame after a damaged one,
//! so one bad record costs only itself.
//!
//! The payload begins with the number of the segment the record was
//! written to and the spool's key (`key.rs`). A segment file is reused
//! once reclaimed, and the records of its earlier use stay after the new
//! ones until overwritten: they are intact, and only their number tells
//! them apart. A frame without the key (one a sender put into a message
//! body) is never anyone's record. Records of format 2 (magic `PST\x02`)
//! have neither; they are read only in the segments an earlier Postern
//! wrote, which are never reused.

use memchr::memmem;

use crate::key::Owner;

/// The frame marker: "PST" and the format version.
pub(crate) const MAGIC: [u8; 4] = *b"PST\x03";

/// The marker of format 2, whose records carry no segment number.
const MAGIC_V2: [u8; 4] = *b"PST\x02";

/// The frame header's size.
pub(crate) const HEADER: usize = 12;

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
    /// When the next attempt is due, milliseconds since the Unix epoch; 0
    /// when it is due at once.
    pub next_ms: u64,
}

/// What the spool keeps of a message besides its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The message's id.
    pub id: u64,
    /// Reception time, milliseconds since the Unix epoch.
    pub received_ms: u64,
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
    /// The client that handed it in (for XCLIENT to a next hop); `None`
    /// for bounces and for records written before it was kept.
    pub client: Option<Box<ClientRecord>>,
    /// Its queue entries.
    pub entries: Vec<EntryRecord>,
}

/// The client a message came from, as XCLIENT tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// Its IP address, as text.
    pub addr: String,
    /// Its host name; empty when unknown.
    pub name: String,
    /// Its HELO/EHLO name.
    pub helo: String,
    /// `SMTP`, `ESMTP` (or `HTTP` for HTTP injection).
    pub proto: String,
}

/// The flag bits of a message record.
const EIGHT_BIT: u8 = 1;
const SMTPUTF8: u8 = 2;
const CLIENT: u8 = 4;

/// What the log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// A message with its body: new, or rewritten with its current state
    /// when space is reclaimed (the later copy wins). `completes` are
    /// recipients of other entries that this message (a bounce) settles:
    /// they are done exactly when it exists.
    Message {
        envelope: Envelope,
        body: &'a [u8],
        completes: Vec<(u64, String)>,
    },
    /// A recipient of an entry is delivered or failed for good.
    Done { entry: u64, recipient: String },
    /// An entry's attempts after a transient failure, and its next attempt.
    Attempted {
        entry: u64,
        attempts: u32,
        next_ms: u64,
    },
    /// A message is finished: any older copy of it means nothing.
    Gone { id: u64 },
}

const MESSAGE: u8 = 1;
const DONE: u8 = 2;
const ATTEMPTED: u8 = 3;
const GONE: u8 = 4;

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
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
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

fn crc(len: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(payload);
    h.finalize()
}

impl Record<'_> {
    /// About as many bytes as [`Record::encode`] writes, so that a commit's
    /// buffer is allocated once.
    pub(crate) fn size_hint(&self) -> usize {
        match self {
            Record::Message { body, .. } => HEADER + 256 + body.len(),
            _ => HEADER + 64,
        }
    }

    /// Appends the framed record, written to `owner`'s segment, to `out`;
    /// returns its framed length.
    pub(crate) fn encode(&self, out: &mut Vec<u8>, owner: Owner) -> usize {
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[0; HEADER - 4]);
        let mut w = Writer(out);
        w.u32(owner.segment);
        w.u64(owner.key);
        match self {
            Record::Message {
                envelope: m,
                body,
                completes,
            } => {
                w.u8(MESSAGE);
                w.u64(m.id);
                w.u64(m.received_ms);
                w.str(&m.message_id);
                w.str(&m.sender);
                w.str(&m.binding);
                let mut flags = 0;
                for (on, bit) in [
                    (m.eight_bit, EIGHT_BIT),
                    (m.smtputf8, SMTPUTF8),
                    (m.client.is_some(), CLIENT),
                ] {
                    if on {
                        flags |= bit;
                    }
                }
                w.u8(flags);
                if let Some(c) = &m.client {
                    for text in [&c.addr, &c.name, &c.helo, &c.proto] {
                        w.str(text);
                    }
                }
                w.bytes(body);
                w.len(m.entries.len());
                for e in &m.entries {
                    w.u64(e.entry);
                    w.str(&e.domain);
                    w.u32(e.attempts);
                    w.u64(e.next_ms);
                    w.len(e.recipients.len());
                    for r in &e.recipients {
                        w.str(r);
                    }
                }
                w.len(completes.len());
                for (entry, recipient) in completes {
                    w.u64(*entry);
                    w.str(recipient);
                }
            }
            Record::Done { entry, recipient } => {
                w.u8(DONE);
                w.u64(*entry);
                w.str(recipient);
            }
            Record::Attempted {
                entry,
                attempts,
                next_ms,
            } => {
                w.u8(ATTEMPTED);
                w.u64(*entry);
                w.u32(*attempts);
                w.u64(*next_ms);
            }
            Record::Gone { id } => {
                w.u8(GONE);
                w.u64(*id);
            }
        }
        let payload_len = out.len() - start - HEADER;
        let len = u32::try_from(payload_len).unwrap_or(u32::MAX).to_le_bytes();
        let crc = crc(&len, out.get(start + HEADER..).unwrap_or_default()).to_le_bytes();
        if let Some(slot) = out.get_mut(start + 4..start + HEADER) {
            let (l, c) = slot.split_at_mut(4);
            l.copy_from_slice(&len);
            c.copy_from_slice(&crc);
        }
        out.len() - start
    }
}

/// A whole, intact frame.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub(crate) record: Record<'a>,
    /// Its framed length.
    pub(crate) len: usize,
    /// The segment it was written to and the key it carries; `None` in
    /// format 2.
    pub(crate) stamp: Option<(u32, u64)>,
}

/// Whose a frame is, to a reader.
#[derive(Debug, PartialEq, Eq)]
enum Whose {
    /// The reader's segment's.
    Own,
    /// The spool's, written to another segment: the file's earlier use.
    Old,
    /// Nobody's: another key, or format 2 where there is none.
    Foreign,
}

impl Frame<'_> {
    fn whose(&self, owner: Owner) -> Whose {
        match self.stamp {
            None if owner.format_2 => Whose::Own,
            Some((_, key)) if key != owner.key => Whose::Foreign,
            Some((segment, _)) if segment == owner.segment => Whose::Own,
            Some(_) => Whose::Old,
            None => Whose::Foreign,
        }
    }
}

/// `owner`'s record at the start of `bytes`, and its framed length; `None`
/// when the bytes do not start with a whole, intact record of its own.
pub(crate) fn decode_in(bytes: &[u8], owner: Owner) -> Option<(Record<'_>, usize)> {
    decode(bytes)
        .filter(|f| f.whose(owner) == Whose::Own)
        .map(|f| (f.record, f.len))
}

/// The frame at the start of `bytes`; `None` when the bytes do not start
/// with a whole, intact one.
pub(crate) fn decode(bytes: &[u8]) -> Option<Frame<'_>> {
    let stamped = match bytes.get(..4)? {
        m if m == MAGIC => true,
        m if m == MAGIC_V2 => false,
        _ => return None,
    };
    let len_bytes = bytes.get(4..8)?;
    let mut header = Reader(bytes.get(4..HEADER)?);
    let len = usize::try_from(header.u32()?).ok()?;
    let sum = header.u32()?;
    let payload = bytes.get(HEADER..HEADER.checked_add(len)?)?;
    if crc(len_bytes, payload) != sum {
        return None;
    }
    let mut r = Reader(payload);
    let stamp = if stamped {
        Some((r.u32()?, r.u64()?))
    } else {
        None
    };
    let record = match r.u8()? {
        MESSAGE => {
            let id = r.u64()?;
            let received_ms = r.u64()?;
            let message_id = r.string()?;
            let sender = r.string()?;
            let binding = r.string()?;
            let flags = r.u8()?;
            let client = if flags & CLIENT != 0 {
                Some(Box::new(ClientRecord {
                    addr: r.string()?,
                    name: r.string()?,
                    helo: r.string()?,
                    proto: r.string()?,
                }))
            } else {
                None
            };
            let body = r.bytes()?;
            // Lists are made at their exact size: recovery holds every
            // live envelope at once.
            let n = r.count()?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let entry = r.u64()?;
                let domain = r.string()?;
                let attempts = r.u32()?;
                let next_ms = r.u64()?;
                let n = r.count()?;
                let mut recipients = Vec::with_capacity(n);
                for _ in 0..n {
                    recipients.push(r.string()?);
                }
                entries.push(EntryRecord {
                    entry,
                    domain,
                    recipients,
                    attempts,
                    next_ms,
                });
            }
            let n = r.count()?;
            let mut completes = Vec::with_capacity(n);
            for _ in 0..n {
                completes.push((r.u64()?, r.string()?));
            }
            Record::Message {
                envelope: Envelope {
                    id,
                    received_ms,
                    message_id,
                    sender,
                    binding,
                    eight_bit: flags & EIGHT_BIT != 0,
                    smtputf8: flags & SMTPUTF8 != 0,
                    client,
                    entries,
                },
                body,
                completes,
            }
        }
        DONE => Record::Done {
            entry: r.u64()?,
            recipient: r.string()?,
        },
        ATTEMPTED => Record::Attempted {
            entry: r.u64()?,
            attempts: r.u32()?,
            next_ms: r.u64()?,
        },
        GONE => Record::Gone { id: r.u64()? },
        _ => return None,
    };
    r.0.is_empty().then_some(Frame {
        record,
        len: HEADER + len,
        stamp,
    })
}

/// What [`scan`] finds at an offset.
#[derive(Debug)]
pub(crate) enum Found<'a> {
    /// An intact record of the segment scanned, and its framed length.
    Record(Record<'a>, usize),
    /// An intact record of the file's earlier use, as another segment:
    /// its framed length.
    Old(usize),
    /// This many bytes that are neither, up to the next intact record of
    /// the spool's or the end.
    Damaged(usize),
}

/// Whether `bytes` begin like one of `owner`'s frames: the key in place,
/// with the marker or the segment number. Where the last record ends,
/// that is a write cut short (or the last record damaged); anything else
/// there is as it was before. Without the key a sender's bytes could
/// pass for it.
pub(crate) fn looks_own(bytes: &[u8], owner: Owner) -> bool {
    key_in_place(bytes, owner)
        && (bytes.get(..4) == Some(&MAGIC[..])
            || bytes.get(HEADER..HEADER + 4) == Some(&owner.segment.to_le_bytes()[..]))
}

/// Whether `owner`'s key stands where a frame of format 3 that begins at
/// the start of `bytes` holds its key.
fn key_in_place(bytes: &[u8], owner: Owner) -> bool {
    bytes.get(HEADER + 4..HEADER + 12) == Some(&owner.key.to_le_bytes()[..])
}

/// Intact frames of format 3 in `bytes`, under whatever key.
pub(crate) fn count_format_3(bytes: &[u8]) -> u64 {
    memmem::find_iter(bytes, &MAGIC)
        .filter(|&at| {
            bytes
                .get(at..)
                .and_then(decode)
                .is_some_and(|f| f.stamp.is_some())
        })
        .count() as u64
}

/// Whether `bytes` begin with an intact record of the file's earlier use
/// (the spool's key, another segment).
pub(crate) fn begins_old(bytes: &[u8], owner: Owner) -> bool {
    spools(bytes, owner).is_some_and(|(whose, _)| whose == Whose::Old)
}

/// Whether `bytes` begin with an intact frame of format 3 under another
/// key than `owner`'s. At the start of a segment, where only the spool
/// ever wrote, that means the key is not the one the spool was written
/// with.
pub(crate) fn under_another_key(bytes: &[u8], owner: Owner) -> bool {
    decode(bytes).is_some_and(|f| f.stamp.is_some_and(|(_, key)| key != owner.key))
}

/// Whether `bytes` can begin one of the spool's frames, judged before any
/// checksum, so that frames a sender made (without the key) cost nothing
/// to pass over: the marker and the key in place, or the marker of format
/// 2 where it is read.
fn plausible(bytes: &[u8], owner: Owner) -> bool {
    match bytes.get(..4) {
        Some(m) if m == MAGIC => key_in_place(bytes, owner),
        Some(m) if m == MAGIC_V2 => owner.format_2,
        _ => false,
    }
}

/// The spool's intact frame at the start of `bytes` (`owner`'s or old),
/// and whose it is.
fn spools(bytes: &[u8], owner: Owner) -> Option<(Whose, Frame<'_>)> {
    if !plausible(bytes, owner) {
        return None;
    }
    decode(bytes)
        .map(|f| (f.whose(owner), f))
        .filter(|(whose, _)| *whose != Whose::Foreign)
}

/// Walks `owner`'s segment frame by frame: every intact record, and the
/// old records and damaged stretches between them, with their offsets.
pub(crate) fn scan(bytes: &[u8], owner: Owner) -> impl Iterator<Item = (usize, Found<'_>)> {
    let finder = memmem::Finder::new(&MAGIC[..3]);
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let rest = bytes.get(at..).filter(|r| !r.is_empty())?;
        let start = at;
        if let Some((whose, frame)) = spools(rest, owner) {
            at += frame.len;
            let found = if whose == Whose::Own {
                Found::Record(frame.record, frame.len)
            } else {
                Found::Old(frame.len)
            };
            return Some((start, found));
        }
        // The next offset where an intact frame of the spool starts, or
        // the end.
        let mut probe = 1usize;
        let skip = loop {
            match rest.get(probe..).and_then(|r| finder.find(r)) {
                Some(i) if spools(rest.get(probe + i..).unwrap_or_default(), owner).is_some() => {
                    break probe + i;
                }
                Some(i) => probe += i + 1,
                None => break rest.len(),
            }
        };
        at += skip;
        Some((start, Found::Damaged(skip)))
    })
}

#[cfg(test)]
mod tests;
