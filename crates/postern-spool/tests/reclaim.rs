//! Reclaiming anywhere in the log: disk use stays bounded around one
//! long-delayed message, and whatever is reclaimed, a restart reads back
//! exactly what a model of the requests says is left.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    new_message, open_with, recovered, segment_bytes, segment_paths, segments, store, sync,
};
use postern_spool::{Opened, Spool};

#[test]
fn a_long_delayed_message_never_pins_more_than_its_own_size() {
    long_delayed(false);
}

#[test]
fn with_zero_filled_segments_a_long_delayed_message_pins_no_more_either() {
    long_delayed(true);
}

fn long_delayed(zero_fill: bool) {
    let dir = tempfile::tempdir().unwrap();
    let segment = 16 * 1024;
    let o = open_with(dir.path(), segment, zero_fill);
    let slow = store(
        &o.spool,
        new_message(0, &[("slow.example", &["k@slow.example"])]),
    );
    let mut biggest = 0;
    for n in 1..3000 {
        let mut m = new_message(n, &[("a.example", &["x@a.example"])]);
        m.body = vec![b'x'; 900].into();
        let s = store(&o.spool, m);
        o.spool.done(s.entries[0], "x@a.example");
        if n % 50 == 0 {
            let next = SystemTime::now() + Duration::from_secs(3600);
            o.spool
                .attempted(slow.entries[0], u32::try_from(n / 50).unwrap(), Some(next));
        }
        biggest = biggest.max(segment_bytes(dir.path()));
    }
    sync(&o.spool);
    // 2,999 messages of about 1 KiB went through: about 3 MB.
    assert!(
        biggest <= 8 * segment,
        "disk use peaked at {biggest} bytes ({} segments now)",
        segments(dir.path())
    );
    o.spool.close();
    let o = open_with(dir.path(), segment, zero_fill);
    assert_eq!(recovered(&o).len(), 1);
    assert_eq!(recovered(&o)[0].id, slow.message);
    assert_eq!(recovered(&o)[0].entries[0].attempts, 59);
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
}

/// What should be left: message → entry → (recipients, attempts, next).
type Model = BTreeMap<u64, BTreeMap<u64, (Vec<String>, u32, u64)>>;

fn check(
    o: &Opened,
    model: &Model,
    bodies: &BTreeMap<u64, usize>,
    runtime: &tokio::runtime::Runtime,
) {
    let mut got = Model::new();
    for m in &recovered(o) {
        let entries = got.entry(m.id).or_default();
        for e in &m.entries {
            let mut r = e.recipients.clone();
            r.sort();
            entries.insert(e.entry, (r, e.attempts, e.next_ms));
        }
    }
    assert_eq!(&got, model);
    for (&id, &n) in bodies.iter().filter(|(id, _)| model.contains_key(id)) {
        let body = runtime.block_on(o.spool.bodies().load(id)).unwrap();
        assert!(body.ends_with(format!("body {n}\r\n").as_bytes()));
    }
}

fn run(seed: u64, zero_fill: bool) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let segment = 8 * 1024;
    let mut rng = Rng(seed);
    let mut o = open_with(dir.path(), segment, zero_fill);
    let mut model = Model::new();
    let mut bodies = BTreeMap::new();
    let live = |model: &Model, rng: &mut Rng| -> Option<(u64, u64, String)> {
        let (&id, entries) = model.iter().nth(rng.below(model.len().max(1)))?;
        let (&entry, (rcpts, _, _)) = entries.iter().nth(rng.below(entries.len()))?;
        Some((id, entry, rcpts[rng.below(rcpts.len())].clone()))
    };
    let done = |model: &mut Model, id: u64, entry: u64, rcpt: &str| {
        let entries = model.get_mut(&id).unwrap();
        let (rcpts, _, _) = entries.get_mut(&entry).unwrap();
        rcpts.retain(|r| r != rcpt);
        if rcpts.is_empty() {
            entries.remove(&entry);
        }
        if entries.is_empty() {
            model.remove(&id);
        }
    };
    for n in 0..1200 {
        match rng.below(20) {
            0..=4 => {
                let domains = [
                    ("a.example", &["a@a.example", "b@a.example"][..]),
                    ("b.example", &["c@b.example"][..]),
                ];
                let take = 1 + rng.below(2);
                let mut m = new_message(n, &domains[..take]);
                let mut body = format!("Subject: {n}\r\n\r\n").into_bytes();
                body.resize(rng.below(2000), b'.');
                body.extend_from_slice(format!("body {n}\r\n").as_bytes());
                m.body = body.into();
                let s = store(&o.spool, m.clone());
                let entries = model.entry(s.message).or_default();
                for ((_, rcpts), entry) in m.entries.iter().zip(&s.entries) {
                    let mut r = rcpts.clone();
                    r.sort();
                    entries.insert(*entry, (r, 0, 0));
                }
                bodies.insert(s.message, n);
            }
            5..=14 => {
                if let Some((id, entry, rcpt)) = live(&model, &mut rng) {
                    o.spool.done(entry, &rcpt);
                    done(&mut model, id, entry, &rcpt);
                }
            }
            15..=16 => {
                if let Some((id, entry, _)) = live(&model, &mut rng) {
                    let (_, attempts, next) = model.get_mut(&id).unwrap().get_mut(&entry).unwrap();
                    *attempts += 1;
                    *next = 1_900_000_000_000 + n as u64;
                    let at = UNIX_EPOCH + Duration::from_millis(*next);
                    o.spool.attempted(entry, *attempts, Some(at));
                }
            }
            17..=18 => {
                if let Some((id, entry, rcpt)) = live(&model, &mut rng) {
                    let mut bounce = new_message(n, &[("example.org", &["sender@example.org"])]);
                    bounce.completes = vec![(entry, rcpt.clone())];
                    let s = store(&o.spool, bounce);
                    done(&mut model, id, entry, &rcpt);
                    model
                        .entry(s.message)
                        .or_default()
                        .insert(s.entries[0], (vec!["sender@example.org".to_owned()], 0, 0));
                    bodies.insert(s.message, n);
                }
            }
            _ => {
                sync(&o.spool);
                Spool::close(o.spool);
                o = open_with(dir.path(), segment, zero_fill);
                assert!(o.damage.is_empty(), "{:?}", o.damage);
                check(&o, &model, &bodies, &runtime);
            }
        }
    }
    sync(&o.spool);
    o.spool.close();
    let o = open_with(dir.path(), segment, zero_fill);
    check(&o, &model, &bodies, &runtime);
    let newest: usize = segment_paths(dir.path())
        .last()
        .and_then(|p| p.file_stem()?.to_str()?.parse().ok())
        .unwrap();
    assert!(
        segments(dir.path()) * 2 < newest,
        "{} of {newest} segments left: reclaiming did not run",
        segments(dir.path())
    );
}

#[test]
fn whatever_is_reclaimed_a_restart_reads_back_what_is_left() {
    for seed in [0x9e37_79b9_7f4a_7c15, 0x1234_5678_9abc_def1, 42] {
        run(seed, false);
    }
}

#[test]
fn with_zero_filled_segments_a_restart_reads_back_what_is_left() {
    for seed in [0x9e37_79b9_7f4a_7c15, 0x1234_5678_9abc_def1, 42] {
        run(seed, true);
    }
}
