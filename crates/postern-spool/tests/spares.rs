//! Spare segments: a reclaimed segment's file is kept and a later segment
//! overwrites it. Its earlier records stay intact after the new ones, and
//! a restart must never read them as the new segment's, and tells a
//! last write that reached the disk in part from damage; a spool written
//! in format 2 (records without a segment number) is read in place, and
//! its files are deleted once reclaimed, never reused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{frames, new_message, open_with, recovered, segment_paths, store, sync};
use postern_spool::{Opened, Stored};

const SEGMENT: u64 = 16 * 1024;

/// The files in `dir` whose names end in `.ext`.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect()
}

/// Whether a segment file holds records written to an older segment: it
/// is a reused spare.
fn holds_old_records(path: &Path) -> bool {
    let number: u32 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    // Read while the log thread may retire it: gone is fine.
    let bytes = std::fs::read(path).unwrap_or_default();
    memchr::memmem::find_iter(&bytes, b"PST\x03").any(|at| {
        bytes
            .get(at + 12..at + 16)
            .is_some_and(|n| u32::from_le_bytes(n.try_into().unwrap()) < number)
    })
}

/// Stores message `n` with a body of about 900 bytes.
fn store_one(o: &Opened, n: usize) -> Stored {
    let mut m = new_message(n, &[("a.example", &["x@a.example"])]);
    m.body = format!("Message-ID: <{n}@test>\r\n\r\n{}\r\n", "x".repeat(900))
        .into_bytes()
        .into();
    store(&o.spool, m)
}

/// The ids of the messages a restart finds.
fn ids(o: &Opened) -> BTreeSet<u64> {
    recovered(o).iter().map(|e| e.id).collect()
}

#[test]
fn a_reclaimed_segment_is_reused_and_its_earlier_records_never_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut kept = BTreeSet::new();
    let mut reused = false;
    let mut n = 0;
    for round in 0..3 {
        let o = open_with(dir.path(), SEGMENT, false);
        assert_eq!(ids(&o), kept, "round {round}");
        assert!(o.damage.is_empty(), "round {round}: {:?}", o.damage);
        for _ in 0..400 {
            n += 1;
            let s = store_one(&o, n);
            // One message in 80 stays; the others are delivered at once.
            if n % 80 == 0 {
                kept.insert(s.message);
            } else {
                o.spool.done(s.entries[0], "x@a.example");
            }
            reused |= files(dir.path(), "spool")
                .iter()
                .any(|p| holds_old_records(p));
        }
        sync(&o.spool);
        o.spool.close();
    }
    assert!(reused, "no spare was ever taken as a segment");
    assert!(
        files(dir.path(), "spare").len() <= 2,
        "more spares than Spool_Spare_Segments"
    );
    let o = open_with(dir.path(), SEGMENT, false);
    assert_eq!(ids(&o), kept);
    assert!(o.damage.is_empty(), "{:?}", o.damage);
}

/// Rewrites every record of a segment file in format 2: without the
/// segment number at the start of the payload, under the marker
/// `PST\x02`, with the checksum over the rest.
fn to_format_2(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    for (start, end) in frames(path) {
        let payload = &bytes[start + 16..end];
        let len = u32::try_from(payload.len()).unwrap().to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&len);
        crc.update(payload);
        out.extend_from_slice(b"PST\x02");
        out.extend_from_slice(&len);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(payload);
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn a_spool_of_format_2_is_read_and_its_segments_are_deleted_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let o = open_with(dir.path(), SEGMENT, false);
    let mut kept = BTreeSet::new();
    let mut stored = Vec::new();
    for n in 0..60 {
        let s = store_one(&o, n);
        if n % 3 == 0 {
            o.spool.done(s.entries[0], "x@a.example");
        } else {
            kept.insert(s.message);
            stored.push(s);
        }
    }
    sync(&o.spool);
    o.spool.close();
    let old = segment_paths(dir.path());
    assert!(old.len() >= 3, "{} segments", old.len());
    for path in &old {
        to_format_2(path);
    }

    let o = open_with(dir.path(), SEGMENT, false);
    assert_eq!(ids(&o), kept);
    assert!(o.damage.is_empty(), "{:?}", o.damage);
    // Everything is delivered, and new mail flows until the old segments
    // are reclaimed.
    for s in &stored {
        o.spool.done(s.entries[0], "x@a.example");
    }
    let mut reused = false;
    for n in 100..700 {
        let s = store_one(&o, n);
        o.spool.done(s.entries[0], "x@a.example");
        for spare in files(dir.path(), "spare") {
            // Read while the log thread may take it: gone is fine.
            let bytes = std::fs::read(spare).unwrap_or_default();
            assert!(
                memchr::memmem::find(&bytes, b"PST\x02").is_none(),
                "a segment of format 2 was kept as a spare"
            );
            reused = true;
        }
    }
    sync(&o.spool);
    assert!(reused, "no spare was made at all");
    assert!(
        old.iter().all(|p| !p.exists()),
        "the old segments were reclaimed"
    );
    o.spool.close();
    let o = open_with(dir.path(), SEGMENT, false);
    assert!(ids(&o).is_empty());
    assert!(o.damage.is_empty(), "{:?}", o.damage);
}

#[test]
fn part_of_a_last_write_into_a_spare_that_never_reached_the_disk_is_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let o = open_with(dir.path(), SEGMENT, false);
    // Deliver mail until the newest segment is a reused spare, less than
    // half written (so that three more messages stay in it).
    let mut n = 0;
    while !segment_paths(dir.path()).last().is_some_and(|p| {
        holds_old_records(p)
            && frames(p)
                .last()
                .is_some_and(|&(_, end)| end < SEGMENT as usize / 2)
    }) {
        n += 1;
        assert!(n < 2000, "no spare was ever taken as a segment");
        let s = store_one(&o, n);
        o.spool.done(s.entries[0], "x@a.example");
    }
    sync(&o.spool);
    let kept = store_one(&o, 10_000);
    // The last write: two messages together.
    let last: Vec<Stored> = o
        .spool
        .store_all(vec![
            new_message(10_001, &[("a.example", &["x@a.example"])]),
            new_message(10_002, &[("a.example", &["x@a.example"])]),
        ])
        .blocking_recv()
        .unwrap()
        .unwrap();
    o.spool.close();
    let path = segment_paths(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    // A crash during the last write's fsync: the page of its first record
    // still holds what the spare held there before (an old record), a
    // later page reached the disk.
    let first = memchr::memmem::find(&bytes, b"<10001@test>").unwrap();
    let start = frames(&path)
        .into_iter()
        .map(|(s, _)| s)
        .rfind(|&s| s < first)
        .unwrap();
    let number: u32 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    // A whole old record, short enough to lie inside the first new one.
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let room = first - start + 12;
    let old_start = memchr::memmem::find_iter(&bytes, b"PST\x03")
        .find(|&s| {
            s > first
                && u32_at(&bytes, s + 12) < number
                && 12 + u32_at(&bytes, s + 4) as usize <= room
        })
        .expect("an old record after the new ones");
    let old = bytes[old_start..old_start + 12 + u32_at(&bytes, old_start + 4) as usize].to_vec();
    bytes[start..start + old.len()].copy_from_slice(&old);
    std::fs::write(&path, &bytes).unwrap();
    for _ in 0..2 {
        let o = open_with(dir.path(), SEGMENT, false);
        let got = ids(&o);
        assert!(got.contains(&kept.message), "an earlier write is kept");
        assert!(
            got.contains(&last[1].message),
            "the intact record after the gap is kept"
        );
        assert!(!got.contains(&last[0].message));
        assert_eq!(o.damage.len(), 1, "{:?}", o.damage);
        assert!(
            o.damage[0].contains("as they were before the last write"),
            "{:?}",
            o.damage
        );
        o.spool.close();
    }
}
