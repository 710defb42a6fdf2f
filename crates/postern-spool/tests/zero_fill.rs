//! Zero-filled segments: once the spool is busy, the next segment is
//! written full of zeros ahead; commits then overwrite the zeros instead
//! of growing the file, a restart finds every message and keeps the
//! unused room, and a write cut short inside that room is cut off like
//! any torn tail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use common::{frames, new_message, open_with, recovered, segment_paths, store, written};
use postern_spool::SpoolError;
use postern_testkit::tmpfs::Tmpfs;

const SEGMENT: u64 = 64 * 1024;

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Writes `bytes` over a segment at `at`, as a crash or a fault would.
fn overwrite(path: &Path, at: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, at).unwrap();
}

fn message(n: usize) -> postern_spool::NewMessage {
    new_message(n, &[("a.example", &["x@a.example"])])
}

#[test]
fn commits_overwrite_zero_filled_room_and_a_restart_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let (o, second) = zero_filled_second_segment(dir.path());
    let used = written(&second);
    assert!(used > 0, "the new messages went to the zero-filled segment");
    assert_eq!(len(&second), SEGMENT, "commits overwrote zeros");
    o.spool.close();

    let o = open_with(dir.path(), SEGMENT, true);
    assert!(
        o.damage.is_empty(),
        "unused room is not damage: {:?}",
        o.damage
    );
    assert_eq!(recovered(&o).len(), 50);
    assert_eq!(len(&second), SEGMENT, "the unused room is kept");
    // The next batch goes right after the last one, not after the zeros.
    store(&o.spool, message(50));
    assert!(written(&second) > used);
    assert_eq!(len(&second), SEGMENT);
    o.spool.close();

    // A crash in the middle of writing the next record, inside the room.
    let end = written(&second);
    let (start, _) = *frames(&second).last().unwrap();
    let head = std::fs::read(&second).unwrap()[start..start + 30].to_vec();
    overwrite(&second, end, &head);
    let o = open_with(dir.path(), SEGMENT, true);
    assert_eq!(recovered(&o).len(), 51);
    assert_eq!(o.damage.len(), 1, "{:?}", o.damage);
    assert!(o.damage[0].contains("a write cut short"), "{:?}", o.damage);
    assert_eq!(len(&second), end, "the torn tail is cut off with the room");
    store(&o.spool, message(51));
    o.spool.close();
    let o = open_with(dir.path(), SEGMENT, true);
    assert_eq!(recovered(&o).len(), 52);
    assert!(o.damage.is_empty(), "{:?}", o.damage);
}

/// A spool whose first segment grew by appending and whose second, the
/// current one, was zero-filled; 50 messages stored, the last ten in the
/// second segment.
fn zero_filled_second_segment(dir: &Path) -> (postern_spool::Opened, std::path::PathBuf) {
    let o = open_with(dir, SEGMENT, true);
    // A sixteenth of a segment written: the next one is asked for, and
    // the spool moves to it as soon as it is ready (the first segment
    // grew by appending).
    for n in 0..40 {
        store(&o.spool, message(n));
    }
    postern_testkit::wait_until(
        Duration::from_secs(30),
        "a zero-filled second segment",
        || {
            let paths = segment_paths(dir);
            paths.len() == 2 && len(&paths[1]) == SEGMENT
        },
    );
    let second = segment_paths(dir).pop().unwrap();
    for n in 40..50 {
        store(&o.spool, message(n));
    }
    (o, second)
}

#[test]
fn part_of_a_last_write_that_never_reached_the_disk_is_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (o, second) = zero_filled_second_segment(dir.path());
    o.spool.close();
    // A crash during the last write's fsync: its first page stayed zeros,
    // a later one reached the disk.
    let records = frames(&second);
    let (start, end) = records[records.len() - 3];
    overwrite(&second, start as u64, &vec![0; end - start]);
    for _ in 0..2 {
        let o = open_with(dir.path(), SEGMENT, true);
        assert_eq!(recovered(&o).len(), 49);
        assert_eq!(o.damage.len(), 1, "{:?}", o.damage);
        assert!(
            o.damage[0].contains("did not reach the disk before a crash"),
            "{:?}",
            o.damage
        );
        o.spool.close();
    }
}

#[test]
fn zeros_at_the_end_of_an_older_segment_are_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (o, _) = zero_filled_second_segment(dir.path());
    o.spool.close();
    // The first segment was full before the second began: zeros after its
    // records are a write that was lost, not room.
    let first = segment_paths(dir.path()).remove(0);
    let records = frames(&first);
    let (start, end) = *records.last().unwrap();
    overwrite(&first, start as u64, &vec![0; end - start]);
    let o = open_with(dir.path(), SEGMENT, true);
    assert_eq!(o.damage.len(), 1, "{:?}", o.damage);
    assert!(o.damage[0].contains("damaged bytes"), "{:?}", o.damage);
}

#[test]
fn an_idle_spool_makes_no_segment_ahead_and_a_half_made_one_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // One left by a crash while it was being made.
    std::fs::write(dir.path().join("next.prepared"), [0u8; 100]).unwrap();
    let o = open_with(dir.path(), SEGMENT, true);
    assert!(!dir.path().join("next.prepared").exists());
    for n in 0..2 {
        store(&o.spool, message(n));
    }
    o.spool.close();
    let paths = segment_paths(dir.path());
    assert_eq!(paths.len(), 1);
    assert_eq!(len(&paths[0]), written(&paths[0]), "no zeros written");
    assert!(!dir.path().join("next.prepared").exists());
}

#[test]
fn with_zero_fill_off_segments_only_grow() {
    let dir = tempfile::tempdir().unwrap();
    let o = open_with(dir.path(), 4096, false);
    for n in 0..100 {
        store(&o.spool, message(n));
    }
    o.spool.close();
    let paths = segment_paths(dir.path());
    assert!(paths.len() >= 2, "{paths:?}");
    for p in &paths {
        assert_eq!(len(p), written(p), "{} holds zeros", p.display());
    }
    assert!(!dir.path().join("next.prepared").exists());
}

#[test]
fn on_a_full_disk_zero_filled_room_takes_mail_and_a_failed_write_past_it_is_cut_back() {
    let Some(fs) = Tmpfs::mount("2m") else {
        return;
    };
    let dir = fs.path().join("spool");
    let segment = 256 * 1024;
    let o = open_with(&dir, segment, true);
    let mut stored = 0;
    let store_one = |n: usize, size: usize| {
        let mut m = message(n);
        let mut body = m.body.to_vec();
        body.resize(size, b'x');
        m.body = body.into();
        o.spool.store(m).blocking_recv().unwrap()
    };
    // A zero-filled current segment, and the next one made.
    let zero_filled = |p: &Path| len(p) == segment && written(p) < segment;
    while !segment_paths(&dir).iter().skip(1).any(|p| zero_filled(p)) {
        store_one(stored, 1024).unwrap();
        stored += 1;
        assert!(stored < 1000, "no zero-filled segment");
        std::thread::sleep(Duration::from_millis(5));
    }
    while written(segment_paths(&dir).last().unwrap()) < segment / 8 {
        store_one(stored, 1024).unwrap();
        stored += 1;
    }
    let next = dir.join("next.prepared");
    postern_testkit::wait_until(Duration::from_secs(30), "the next segment made", || {
        std::fs::metadata(&next).is_ok_and(|m| m.len() == segment)
    });
    let current = segment_paths(&dir).pop().unwrap();

    // The disk fills up.
    let mut filler = std::fs::File::create(fs.path().join("filler")).unwrap();
    for chunk in [64 * 1024, 4096] {
        while std::io::Write::write_all(&mut filler, &vec![1u8; chunk]).is_ok() {}
    }

    // The zero-filled room still takes mail; the write that would grow
    // the file fails and leaves nothing of itself.
    let mut in_room = 0;
    let full = loop {
        match store_one(stored, 16 * 1024) {
            Ok(_) => {
                stored += 1;
                in_room += 1;
            }
            Err(e) => break e,
        }
        assert!(in_room < 100, "the room never ran out");
    };
    assert!(matches!(full, SpoolError::Full(_)), "{full:?}");
    assert!(in_room >= 1, "zero-filled room took no mail on a full disk");
    assert_eq!(
        len(&current),
        written(&current),
        "cut back to its last record"
    );

    // Room again: mail is taken, and everything answered comes back.
    drop(filler);
    std::fs::remove_file(fs.path().join("filler")).unwrap();
    store_one(stored, 1024).unwrap();
    stored += 1;
    o.spool.close();
    let o = open_with(&dir, segment, true);
    assert!(o.damage.is_empty(), "{:?}", o.damage);
    assert_eq!(recovered(&o).len(), stored);
}
