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

use common::{frames, frames_in, new_message, open_with, recovered, segment_paths, store, sync};
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

/// The spool's key, from `spool.key`, as it lies in a record.
fn spool_key(dir: &Path) -> [u8; 8] {
    let text = std::fs::read_to_string(dir.join("spool.key")).unwrap();
    let hex = text.lines().find_map(|l| l.strip_prefix("key ")).unwrap();
    u64::from_str_radix(hex, 16).unwrap().to_le_bytes()
}

/// Whether a segment file holds the spool's records written to an older
/// segment: it is a reused spare.
fn holds_old_records(path: &Path) -> bool {
    let number: u32 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let key = spool_key(path.parent().unwrap());
    // Read while the log thread may retire it: gone is fine.
    let bytes = std::fs::read(path).unwrap_or_default();
    memchr::memmem::find_iter(&bytes, b"PST\x03").any(|at| {
        bytes.get(at + 16..at + 24) == Some(&key[..])
            && bytes
                .get(at + 12..at + 16)
                .is_some_and(|n| u32::from_le_bytes(n.try_into().unwrap()) < number)
    })
}

/// Delivers mail until the newest segment is a reused spare, less than
/// half written (so that a few more messages stay in it).
fn until_the_newest_is_a_spare(o: &Opened, dir: &Path) {
    deliver_until(o, "no spare was ever taken as a segment", || {
        segment_paths(dir)
            .last()
            .is_some_and(|p| holds_old_records(p) && written_end(p) < SEGMENT as usize / 2)
    });
}

/// Stores and delivers one message at a time until `done` (`what` if it
/// never is), then waits for the spool to write it all.
fn deliver_until(o: &Opened, what: &str, done: impl Fn() -> bool) {
    let mut n = 0;
    while !done() {
        n += 1;
        assert!(n < 2000, "{what}");
        let s = store_one(o, n);
        o.spool.done(s.entries[0], "x@a.example");
    }
    sync(&o.spool);
}

/// Cuts the file at `path` to `len` bytes.
fn cut(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Where a segment file's whole records from its start end; 0 when it is
/// gone (retired meanwhile).
fn written_end(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap_or_default();
    frames_in(&bytes).last().map_or(0, |&(_, end)| end)
}

/// Where the record holding `text` starts in a segment file of `bytes`,
/// and where `text` first is.
fn record_holding(path: &Path, bytes: &[u8], text: &[u8]) -> (usize, usize) {
    let at = memchr::memmem::find(bytes, text).unwrap();
    let start = frames(path)
        .into_iter()
        .map(|(s, _)| s)
        .rfind(|&s| s < at)
        .unwrap();
    (start, at)
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
        // Without the segment number and the key.
        let payload = &bytes[start + 24..end];
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
    // An earlier Postern kept no key.
    std::fs::remove_file(dir.path().join("spool.key")).unwrap();

    let o = open_with(dir.path(), SEGMENT, false);
    assert_eq!(ids(&o), kept);
    assert!(o.damage.is_empty(), "{:?}", o.damage);
    // New records go to a segment of their own, where a frame of format 2
    // is nobody's: a sender's tombstone for a kept message, in a body
    // whose record is then damaged, does not take it away.
    let victim = stored[0].message;
    let mut m = new_message(99, &[("a.example", &["x@a.example"])]);
    let gone = [&[4u8][..], &victim.to_le_bytes()].concat();
    m.body = [&b"Subject: forged\r\n\r\n"[..], &forged(b"PST\x02", &gone)]
        .concat()
        .into();
    let f = store(&o.spool, m);
    kept.insert(f.message);
    o.spool.close();
    let newest = segment_paths(dir.path()).pop().unwrap();
    assert!(!old.contains(&newest), "new records went to {newest:?}");
    let mut bytes = std::fs::read(&newest).unwrap();
    let (start, _) = record_holding(&newest, &bytes, b"<99@test>");
    bytes[start + 30] ^= 0xff;
    std::fs::write(&newest, &bytes).unwrap();
    let o = open_with(dir.path(), SEGMENT, false);
    kept.remove(&f.message);
    assert_eq!(ids(&o), kept, "only the damaged record is missing");
    assert_eq!(o.damage.len(), 1, "{:?}", o.damage);
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
    until_the_newest_is_a_spare(&o, dir.path());
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
    let (start, first) = record_holding(&path, &bytes, b"<10001@test>");
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

/// A frame of `magic` whose payload is `payload`, as a sender could write
/// it into a message body.
fn forged(magic: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    let mut out = magic.to_vec();
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn records_forged_in_the_bodies_of_a_spares_earlier_messages_are_never_applied() {
    let dir = tempfile::tempdir().unwrap();
    let o = open_with(dir.path(), SEGMENT, false);
    let victim = store_one(&o, 0);
    // Tombstones for the victim, in format 2 and in format 3 for every
    // segment number a sender could guess, under two guessed keys.
    let gone = [&[4u8][..], &victim.message.to_le_bytes()].concat();
    let mut body = b"Subject: forged\r\n\r\n".to_vec();
    body.extend(forged(b"PST\x02", &gone));
    for segment in 1u32..=60 {
        for key in [0u64, u64::MAX] {
            let payload = [&segment.to_le_bytes()[..], &key.to_le_bytes(), &gone].concat();
            body.extend(forged(b"PST\x03", &payload));
        }
    }
    let mut n = 0;
    while !segment_paths(dir.path())
        .last()
        .is_some_and(|p| holds_old_records(p))
        || n < 100
    {
        n += 1;
        assert!(n < 2000, "no spare was ever taken as a segment");
        let mut m = new_message(n, &[("a.example", &["x@a.example"])]);
        m.body = body.clone().into();
        let s = store(&o.spool, m);
        o.spool.done(s.entries[0], "x@a.example");
    }
    sync(&o.spool);
    o.spool.close();
    for _ in 0..2 {
        let o = open_with(dir.path(), SEGMENT, false);
        assert_eq!(ids(&o), BTreeSet::from([victim.message]));
        assert!(o.damage.is_empty(), "{:?}", o.damage);
        o.spool.close();
    }
}

/// A spool of forty messages, closed; its key file's path and text.
fn forty_messages() -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let o = open_with(dir.path(), SEGMENT, false);
    for n in 0..40 {
        store_one(&o, n);
    }
    o.spool.close();
    let key = dir.path().join("spool.key");
    let saved = std::fs::read_to_string(&key).unwrap();
    (dir, key, saved)
}

/// Opening fails with an error that says `why`, and changes no segment,
/// even with smaller segments configured.
fn refused_unchanged(dir: &Path, why: &str) {
    let segments = || -> Vec<Vec<u8>> {
        segment_paths(dir)
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    };
    let before = segments();
    let Err(e) = open_or_not(dir, 1024) else {
        panic!("opened without the spool's key");
    };
    assert!(e.to_string().contains(why), "{e}");
    assert!(before == segments(), "the segments were changed");
}

#[test]
fn a_spool_of_format_3_that_lost_its_key_is_not_opened_nor_changed() {
    let (dir, key, saved) = forty_messages();
    std::fs::remove_file(&key).unwrap();
    // Every segment starts with a damaged record as well.
    for path in segment_paths(dir.path()) {
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(b) = bytes.get_mut(20) {
            *b ^= 0xff;
        }
        std::fs::write(&path, &bytes).unwrap();
    }
    refused_unchanged(dir.path(), "spool.key is missing");
    assert!(!key.exists(), "no new key was made in its place");
    // The key put back, everything but the damaged records is there.
    std::fs::write(&key, saved).unwrap();
    let o = open_with(dir.path(), SEGMENT, false);
    assert_eq!(ids(&o).len(), 40 - segment_paths(dir.path()).len());
}

/// Opens with this segment size, or says why not.
fn open_or_not(dir: &Path, segment_size: u64) -> std::io::Result<Opened> {
    postern_spool::Spool::open(
        dir,
        postern_spool::Options {
            segment_size,
            spares: 2,
            ..postern_spool::Options::default()
        },
    )
}

#[test]
fn a_spool_read_with_another_key_is_not_opened_nor_changed() {
    let (dir, key, saved) = forty_messages();
    // One hex digit of the key changed.
    let at = saved.find("key ").unwrap() + 4;
    let digit = if saved.as_bytes()[at] == b'0' {
        "1"
    } else {
        "0"
    };
    std::fs::write(&key, format!("{}{digit}{}", &saved[..at], &saved[at + 1..])).unwrap();
    refused_unchanged(dir.path(), "the one in spool.key");
    std::fs::write(&key, saved).unwrap();
    let o = open_with(dir.path(), SEGMENT, false);
    assert_eq!(ids(&o).len(), 40);
}

#[test]
fn a_damaged_last_record_before_a_spares_earlier_records_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let o = open_with(dir.path(), SEGMENT, false);
    until_the_newest_is_a_spare(&o, dir.path());
    let kept = store_one(&o, 10_000);
    let last = store_one(&o, 10_001);
    o.spool.close();
    let path = segment_paths(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let (start, _) = record_holding(&path, &bytes, b"<10001@test>");
    // Its marker damaged on disk; the spare's earlier records follow it.
    bytes[start] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let o = open_with(dir.path(), SEGMENT, false);
    let got = ids(&o);
    assert!(got.contains(&kept.message) && !got.contains(&last.message));
    assert_eq!(o.damage.len(), 1, "{:?}", o.damage);
    assert!(
        o.damage[0].contains("the last record damaged"),
        "{:?}",
        o.damage
    );
}

#[test]
fn a_new_key_takes_no_spare_written_under_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let o = open_with(dir.path(), SEGMENT, false);
    deliver_until(&o, "no spare was made", || {
        !files(dir.path(), "spare").is_empty()
    });
    o.spool.close();
    // The key lost, and every segment empty: nothing tells it was lost.
    std::fs::remove_file(dir.path().join("spool.key")).unwrap();
    for path in segment_paths(dir.path()) {
        cut(&path, 0);
    }
    let o = open_with(dir.path(), SEGMENT, false);
    assert!(files(dir.path(), "spare").is_empty(), "old spares deleted");
    store_one(&o, 1);
    o.spool.close();
    let o = open_with(dir.path(), SEGMENT, false);
    assert_eq!(ids(&o).len(), 1);
}

#[test]
fn a_spool_of_format_2_with_only_a_torn_write_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let o = open_with(dir.path(), SEGMENT, false);
    store_one(&o, 1);
    o.spool.close();
    let path = segment_paths(dir.path()).pop().unwrap();
    to_format_2(&path);
    std::fs::remove_file(dir.path().join("spool.key")).unwrap();
    // A crash cut an earlier Postern's first write short.
    cut(&path, 30);
    let o = open_with(dir.path(), SEGMENT, false);
    assert!(ids(&o).is_empty());
    store_one(&o, 2);
    o.spool.close();
    let o = open_with(dir.path(), SEGMENT, false);
    assert_eq!(ids(&o).len(), 1);
}
