//! The store on a real, fsync'd directory: durability, recovery, a torn
//! tail, group commit, and reclaiming space.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use postern_spool::{NewMessage, Opened, Options, Spool, Stored};

fn new_message(n: usize, domains: &[(&str, &[&str])]) -> NewMessage {
    NewMessage {
        received: SystemTime::now(),
        sender: "sender@example.org".into(),
        binding: "default".into(),
        eight_bit: false,
        smtputf8: false,
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
    }
}

fn open(dir: &Path, segment_size: u64) -> Opened {
    Spool::open(dir, Options { segment_size }).unwrap()
}

fn store(spool: &Spool, m: NewMessage) -> Stored {
    spool.store(m).blocking_recv().unwrap().unwrap()
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn stored_messages_come_back_without_what_was_done() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(dir.path(), 1 << 20);
    assert!(o.recovered.is_empty());
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
    o.spool.done(a.entries[0], "x@a.example");
    o.spool.attempted(a.entries[0], 3);
    o.spool.done(b.entries[0], "w@a.example");
    o.spool.sync().blocking_recv().unwrap();
    o.spool.close();

    let o = open(dir.path(), 1 << 20);
    assert!(o.damage.is_empty());
    let mut got: Vec<(u64, Vec<String>, u32)> = o
        .recovered
        .iter()
        .map(|r| (r.entry.entry, r.entry.recipients.clone(), r.entry.attempts))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (a.entries[0], vec!["y@a.example".to_owned()], 3),
            (a.entries[1], vec!["z@b.example".to_owned()], 0),
        ]
    );
    let r = &o.recovered[0];
    assert_eq!(r.message.sender, "sender@example.org");
    assert!(String::from_utf8_lossy(&r.message.body).contains("Message-ID: <1@test>"));
    // Ids never repeat after a restart.
    let c = store(&o.spool, new_message(3, &[("c.example", &["c@c.example"])]));
    assert!(c.message > a.entries[1] && c.message > b.entries[0]);
}

#[test]
fn a_torn_tail_is_skipped_and_everything_before_kept() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(dir.path(), 1 << 20);
    for n in 0..10 {
        store(&o.spool, new_message(n, &[("a.example", &["x@a.example"])]));
    }
    o.spool.close();
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let whole = std::fs::metadata(&file).unwrap().len();
    // A crash in the middle of writing the next record.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 1, 9, 9]).unwrap();
    drop(f);

    let o = open(dir.path(), 1 << 20);
    assert_eq!(o.recovered.len(), 10);
    assert_eq!(o.damage.len(), 1, "{:?}", o.damage);
    assert!(
        o.damage[0].contains("11 bytes after offset"),
        "{:?}",
        o.damage
    );
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
    assert_eq!(o.recovered.len(), 11);
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
    assert_eq!(open(dir.path(), 1 << 30).recovered.len(), 2000);
}

#[test]
fn space_is_reclaimed_and_long_lived_messages_move_forward() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(dir.path(), 4096);
    let keep = store(
        &o.spool,
        new_message(0, &[("slow.example", &["k@slow.example"])]),
    );
    let mut done = Vec::new();
    for n in 1..200 {
        done.push(store(
            &o.spool,
            new_message(n, &[("a.example", &["x@a.example"])]),
        ));
    }
    assert!(segments(dir.path()) > 4, "{}", segments(dir.path()));
    for s in &done {
        o.spool.done(s.entries[0], "x@a.example");
    }
    o.spool.sync().blocking_recv().unwrap();
    // One more batch lets the log roll and reclaim what the last one freed.
    store(
        &o.spool,
        new_message(999, &[("a.example", &["y@a.example"])]),
    );
    assert!(
        segments(dir.path()) <= 2,
        "{} segments left",
        segments(dir.path())
    );
    o.spool.close();
    let o = open(dir.path(), 4096);
    let left: BTreeSet<u64> = o.recovered.iter().map(|r| r.entry.entry).collect();
    assert!(
        left.contains(&keep.entries[0]),
        "the long-lived message survived the move"
    );
    assert_eq!(left.len(), 2);
}
