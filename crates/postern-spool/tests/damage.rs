//! Damage and a full disk: bytes flipped in the middle of a spool cost
//! only the records they hit; on a full (tmpfs) disk new messages fail,
//! outcomes are never dropped, and the spool takes mail again by itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{frames_in, new_message, open, open_with, recovered, segment_paths, store, sync};
use postern_spool::SpoolError;
use postern_testkit::tmpfs::Tmpfs;

#[test]
fn flipped_bytes_cost_only_the_records_they_hit() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(dir.path(), 1 << 30);
    let answers: Vec<_> = (0..10_000)
        .map(|n| {
            o.spool
                .store(new_message(n, &[("a.example", &["x@a.example"])]))
        })
        .collect();
    for a in answers {
        a.blocking_recv().unwrap().unwrap();
    }
    o.spool.close();
    let file = segment_paths(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    // Record boundaries, and which message each record holds.
    let starts: Vec<usize> = memchr::memmem::find_iter(&bytes, b"PST\x03").collect();
    assert_eq!(starts.len(), 10_000);
    let owner = |at: usize| -> usize {
        let i = starts.partition_point(|&s| s <= at) - 1;
        let end = starts.get(i + 1).copied().unwrap_or(bytes.len());
        let record = String::from_utf8_lossy(&bytes[starts[i]..end]).into_owned();
        let id = record.split("Message-ID: <").nth(1).unwrap();
        id.split('@').next().unwrap().parse().unwrap()
    };
    // Flip bytes at 25 places spread over the middle of the file.
    let mut hit = BTreeSet::new();
    let middle = bytes.len() / 4..bytes.len() * 3 / 4;
    let step = (middle.end - middle.start) / 25;
    let places: Vec<usize> = (0..25)
        .map(|k| middle.start + k * step + k * 7 % 13)
        .collect();
    for &at in &places {
        hit.insert(owner(at));
    }
    for &at in &places {
        bytes[at] ^= 0x5a;
    }
    std::fs::write(&file, &bytes).unwrap();

    let o = open(dir.path(), 1 << 30);
    let got: BTreeSet<usize> = recovered(&o)
        .iter()
        .map(|m| {
            m.message_id
                .trim_matches(['<', '>'])
                .split('@')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let expected: BTreeSet<usize> = (0..10_000).filter(|n| !hit.contains(n)).collect();
    assert_eq!(got, expected, "every intact record is recovered");
    assert_eq!(o.damage.len(), hit.len(), "{:?}", o.damage);
    assert!(
        o.damage.iter().all(|d| d.contains("damaged bytes")),
        "{:?}",
        o.damage
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        bytes.len() as u64,
        "nothing after the damage is cut off"
    );
}

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    postern_testkit::wait_until(Duration::from_secs(30), what, f);
}

#[test]
fn a_full_disk_fails_new_mail_keeps_every_outcome_and_recovers() {
    full_disk(false);
}

#[test]
fn a_full_disk_with_zero_filled_segments_loses_nothing_either() {
    full_disk(true);
}

fn full_disk(zero_fill: bool) {
    let Some(fs) = Tmpfs::mount("2m") else {
        return;
    };
    let dir = fs.path().join("spool");
    let o = open_with(&dir, 256 * 1024, zero_fill);
    let mut stored = Vec::new();
    // Whether a segment had zero-filled room not yet written.
    let mut zero_room = false;
    let full = loop {
        let mut m = new_message(stored.len(), &[("a.example", &["x@a.example"])]);
        let mut body = m.body.to_vec();
        body.resize(16 * 1024, b'x');
        m.body = body.into();
        match o.spool.store(m).blocking_recv().unwrap() {
            Ok(s) => stored.push(s),
            Err(e) => break e,
        }
        // (A segment reclaimed meanwhile cannot be read.)
        zero_room |= segment_paths(&dir).iter().any(|p| {
            std::fs::read(p).is_ok_and(|b| frames_in(&b).last().is_some_and(|f| f.1 < b.len()))
        });
        assert!(stored.len() < 1000, "the disk never filled");
    };
    assert!(matches!(full, SpoolError::Full(_)), "{full:?}");
    assert_eq!(zero_room, zero_fill, "zero-filled segments were in use");
    wait_for("the spool to report itself unhealthy", || {
        !o.spool.health().healthy
    });
    // Delivery goes on: every stored message is done. These outcomes
    // must not be lost, full disk or not.
    for s in &stored {
        o.spool.done(s.entries[0], "x@a.example");
    }
    sync(&o.spool);
    wait_for("the outcomes to be written", || {
        o.spool.health().pending == 0
    });
    wait_for("the spool to take mail again", || o.spool.health().healthy);
    let again = store(
        &o.spool,
        new_message(9999, &[("b.example", &["y@b.example"])]),
    );
    assert_eq!(o.spool.close(), 0, "no outcome left unwritten");

    let o = open_with(&dir, 256 * 1024, zero_fill);
    let ids: Vec<u64> = recovered(&o).iter().map(|m| m.id).collect();
    assert_eq!(ids, [again.message], "nothing done comes back");
}

#[test]
fn messages_stored_together_are_all_stored_or_none_is() {
    let Some(fs) = Tmpfs::mount("2m") else {
        return;
    };
    let dir = fs.path().join("spool");
    let o = open(&dir, 4 << 20);
    let group = |first: usize, count: usize, size: usize| -> Vec<_> {
        (first..first + count)
            .map(|n| {
                let mut m = new_message(n, &[("a.example", &["x@a.example"])]);
                let mut body = m.body.to_vec();
                body.resize(size, b'x');
                m.body = body.into();
                m
            })
            .collect()
    };
    let stored = o
        .spool
        .store_all(group(0, 10, 1024))
        .blocking_recv()
        .unwrap()
        .unwrap();
    assert_eq!(stored.len(), 10);
    // A group larger than the free space fails whole.
    let failed = o
        .spool
        .store_all(group(100, 40, 64 * 1024))
        .blocking_recv()
        .unwrap();
    assert!(matches!(failed, Err(SpoolError::Full(_))), "{failed:?}");
    assert_eq!(o.spool.close(), 0);
    let o = open(&dir, 4 << 20);
    let mut ids: Vec<u64> = recovered(&o).iter().map(|m| m.id).collect();
    ids.sort_unstable();
    let mut expected: Vec<u64> = stored.iter().map(|s| s.message).collect();
    expected.sort_unstable();
    assert_eq!(
        ids, expected,
        "the first group whole, nothing of the second"
    );
}
