//! The store on a real, fsync'd directory: durability, recovery with the
//! schedule, a torn tail, group commit, bodies read back, and bounces
//! stored with the failures they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{new_message, open, recovered, segment_paths, store, sync};

#[test]
fn stored_messages_come_back_without_what_was_done() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(dir.path(), 1 << 20);
    assert!(recovered(&o).is_empty());
    let a = store(
        &o.spool,
        new_message(
            1,
            &[
                ("a.example", &["x@a.example", "y@a.example"]),
                ("b.example", &["z@b.example"]),
            ],
        ),
    );
    let b = store(&o.spool, new_message(2, &[("a.example", &["w@a.example"])]));
    let next = SystemTime::now() + Duration::from_secs(1800);
    o.spool.done(a.entries[0], "x@a.example");
    o.spool.attempted(a.entries[0], 3, Some(next));
    o.spool.done(b.entries[0], "w@a.example");
    sync(&o.spool);
    o.spool.close();

    let o = open(dir.path(), 1 << 20);
    assert!(o.damage.is_empty());
    assert_eq!(recovered(&o).len(), 1, "message 2 is finished");
    // Start hands over references with their queues; envelopes stay on disk.
    let refs: Vec<(u64, u64, &str, &str)> = o
        .recovered
        .iter()
        .map(|r| (r.message, r.entry, &*r.binding, &*r.domain))
        .collect();
    assert_eq!(
        refs,
        [
            (a.message, a.entries[0], "default", "a.example"),
            (a.message, a.entries[1], "default", "b.example"),
        ]
    );
    let m = &recovered(&o)[0];
    assert_eq!(m.id, a.message);
    assert_eq!(m.sender, "sender@example.org");
    assert_eq!(m.message_id, "<1@test>");
    let entries: Vec<(u64, Vec<String>, u32, u64)> = m
        .entries
        .iter()
        .map(|e| (e.entry, e.recipients.clone(), e.attempts, e.next_ms))
        .collect();
    let next_ms = u64::try_from(next.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
    assert_eq!(
        entries,
        [
            (a.entries[0], vec!["y@a.example".to_owned()], 3, next_ms),
            (a.entries[1], vec!["z@b.example".to_owned()], 0, 0),
        ]
    );
    // Ids never repeat after a restart.
    let c = store(&o.spool, new_message(3, &[("c.example", &["c@c.example"])]));
    assert!(c.message > a.entries[1] && c.message > b.entries[0]);
}

#[test]
fn a_torn_tail_is_cut_off_and_everything_before_kept() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(dir.path(), 1 << 20);
    for n in 0..10 {
        store(&o.spool, new_message(n, &[("a.example", &["x@a.example"])]));
    }
    o.spool.close();
    let file = segment_paths(dir.path()).pop().unwrap();
    let whole = std::fs::metadata(&file).unwrap().len();
    // A crash in the middle of writing the next record: the start of one
    // like the last.
    let (start, _) = *common::frames(&file).last().unwrap();
    let head = std::fs::read(&file).unwrap()[start..start + 30].to_vec();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    f.write_all(&head).unwrap();
    drop(f);

    let o = open(dir.path(), 1 << 20);
    assert_eq!(recovered(&o).len(), 10);
    assert_eq!(o.damage.len(), 1, "{:?}", o.damage);
    assert!(o.damage[0].contains("a write cut short"), "{:?}", o.damage);
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        whole,
        "the torn tail is cut off"
    );
    store(
        &o.spool,
        new_message(11, &[("a.example", &["x@a.example"])]),
    );
    o.spool.close();
    let o = open(dir.path(), 1 << 20);
    assert_eq!(recovered(&o).len(), 11);
    assert!(o.damage.is_empty());
}

#[test]
fn concurrent_stores_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(dir.path(), 1 << 30);
    let spool = o.spool.clone();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let spool = spool.clone();
            std::thread::spawn(move || {
                for n in 0..250 {
                    let m = new_message(t * 1000 + n, &[("a.example", &["x@a.example"])]);
                    store(&spool, m);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let fsyncs = spool
        .stats()
        .fsyncs
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(fsyncs < 2000, "{fsyncs} fsyncs for 2000 messages");
    drop(spool);
    o.spool.close();
    assert_eq!(recovered(&open(dir.path(), 1 << 30)).len(), 2000);
}

#[test]
fn bodies_come_from_memory_then_from_disk_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(dir.path(), 1 << 20);
    let a = store(&o.spool, new_message(1, &[("a.example", &["x@a.example"])]));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bodies = o.spool.bodies();
    let body = runtime.block_on(bodies.load(a.message)).unwrap();
    assert!(body.starts_with(b"Message-ID: <1@test>"));
    assert!(runtime.block_on(bodies.load(12345)).is_err());
    drop(bodies);
    o.spool.close();

    let o = open(dir.path(), 1 << 20);
    let body = runtime.block_on(o.spool.bodies().load(a.message)).unwrap();
    assert!(body.ends_with(b"body 1\r\n"));
    o.spool.done(a.entries[0], "x@a.example");
    sync(&o.spool);
    assert!(
        runtime.block_on(o.spool.bodies().load(a.message)).is_err(),
        "a finished message's body is no longer served"
    );
}

#[test]
fn a_bounce_and_the_failures_it_reports_are_stored_together() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(dir.path(), 1 << 20);
    let a = store(
        &o.spool,
        new_message(1, &[("a.example", &["x@a.example", "y@a.example"])]),
    );
    let mut bounce = new_message(2, &[("example.org", &["sender@example.org"])]);
    bounce.completes = vec![(a.entries[0], "x@a.example".into())];
    let b = store(&o.spool, bounce);
    o.spool.close();

    let o = open(dir.path(), 1 << 20);
    let mut got: Vec<(u64, Vec<String>)> = recovered(&o)
        .iter()
        .map(|m| (m.id, m.entries[0].recipients.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (a.message, vec!["y@a.example".to_owned()]),
            (b.message, vec!["sender@example.org".to_owned()]),
        ]
    );
}
