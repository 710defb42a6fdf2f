//! Helpers of the spool's tests: messages, opening, storing, counting.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use postern_spool::{Envelope, NewMessage, Opened, Options, Spool, Stored};

/// A message `n` with these (domain, recipients) entries.
pub(crate) fn new_message(n: usize, domains: &[(&str, &[&str])]) -> NewMessage {
    NewMessage {
        received: SystemTime::now(),
        message_id: format!("<{n}@test>"),
        sender: "sender@example.org".into(),
        binding: "default".into(),
        eight_bit: false,
        smtputf8: false,
        client: None,
        body: Arc::from(
            format!("Message-ID: <{n}@test>\r\nSubject: {n}\r\n\r\nbody {n}\r\n").into_bytes(),
        ),
        entries: domains
            .iter()
            .map(|(d, rcpts)| {
                (
                    (*d).to_owned(),
                    rcpts.iter().map(|r| (*r).to_owned()).collect(),
                )
            })
            .collect(),
        completes: Vec::new(),
    }
}

/// Opens with this segment size and small other options; segments grow
/// by appending.
pub(crate) fn open(dir: &Path, segment_size: u64) -> Opened {
    open_with(dir, segment_size, false)
}

/// Opens with this segment size, zero-filled segments or not, and small
/// other options.
pub(crate) fn open_with(dir: &Path, segment_size: u64, zero_fill: bool) -> Opened {
    Spool::open(
        dir,
        Options {
            segment_size,
            reserve: 64 * 1024,
            body_cache: 1 << 20,
            zero_fill,
            spares: 2,
        },
    )
    .unwrap()
}

/// Stores and waits for durability.
pub(crate) fn store(spool: &Spool, m: NewMessage) -> Stored {
    spool.store(m).blocking_recv().unwrap().unwrap()
}

/// Waits for everything sent to be written.
pub(crate) fn sync(spool: &Spool) {
    spool.sync().blocking_recv().unwrap();
}

/// Segment files in `dir`.
pub(crate) fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "spool")
        })
        .count()
}

/// Bytes in segment files in `dir`.
pub(crate) fn segment_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "spool"))
        // A segment reclaimed meanwhile counts for nothing.
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Segment file paths in `dir`, oldest first.
pub(crate) fn segment_paths(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "spool"))
        .collect();
    paths.sort();
    paths
}

/// The envelopes of the messages with work left, as a queue reads them
/// back, oldest first.
pub(crate) fn recovered(o: &Opened) -> Vec<Envelope> {
    let mut ids: Vec<u64> = o.recovered.iter().map(|r| r.message).collect();
    ids.dedup();
    ids.iter()
        .map(|id| o.spool.envelope(*id).unwrap())
        .collect()
}

/// Where a segment's whole records start and end.
pub(crate) fn frames(path: &Path) -> Vec<(usize, usize)> {
    frames_in(&std::fs::read(path).unwrap())
}

/// Where whole records start and end in a segment's bytes: frames
/// followed one by one (four bytes of magic, the payload's length, a
/// checksum, the payload).
pub(crate) fn frames_in(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut at = 0;
    while bytes.len() >= at + 12 && bytes[at..at + 4] == *b"PST\x03" {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
        found.push((at, at + 12 + len as usize));
        at += 12 + len as usize;
    }
    found
}

/// Where a segment's whole records end.
pub(crate) fn written(path: &Path) -> u64 {
    frames(path).last().map_or(0, |&(_, end)| end as u64)
}
