//! The spool: messages made durable per second with concurrent writers
//! (group commit), against one fsync per message, and against redb
//! committing a transaction per batch of the same size; each with
//! segments that grow by appending, with segments zero-filled ahead
//! (`Spool_Zero_Fill`), and with reclaimed segments reused as spares
//! (`Spool_Spare_Segments`). Every message is delivered (marked done)
//! once stored, so that segments are reclaimed as in a running MTA.

use std::sync::Arc;
use std::time::SystemTime;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use postern_spool::{NewMessage, Options, Spool};

const MESSAGES: usize = 1000;
const BODY: usize = 1024;

fn message(n: usize) -> NewMessage {
    let mut body = format!("Message-ID: <{n}@bench>\r\nSubject: bench\r\n\r\n").into_bytes();
    body.resize(BODY, b'x');
    NewMessage {
        received: SystemTime::now(),
        message_id: format!("<{n}@bench>"),
        sender: "sender@example.org".into(),
        binding: "default".into(),
        eight_bit: false,
        smtputf8: false,
        client: None,
        body: Arc::from(body),
        entries: vec![("example.com".into(), vec!["rcpt@example.com".into()])],
        completes: Vec::new(),
    }
}

/// Stores `MESSAGES` messages from `writers` threads, each waiting for
/// durability before its next message, as listener sessions do.
fn store_all(spool: &Spool, writers: usize) {
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let spool = spool.clone();
            std::thread::spawn(move || {
                for n in (w..MESSAGES).step_by(writers) {
                    if let Ok(Ok(stored)) = spool.store(message(n)).blocking_recv() {
                        for entry in stored.entries {
                            spool.done(entry, "rcpt@example.com");
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

fn bench(c: &mut Criterion) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let mut group = c.benchmark_group("spool");
    group.sample_size(10);
    group.throughput(Throughput::Elements(MESSAGES as u64));
    for writers in [1, 50] {
        for (zero_fill, spares, segments) in [
            (false, 0, "appended"),
            (true, 0, "zero_filled"),
            (true, 2, "reused"),
        ] {
            let path = dir.path().join(format!("w{writers}-{segments}"));
            // Small segments, so that zero-filled or reused ones are in
            // use after the warm-up.
            let options = Options {
                segment_size: 4 << 20,
                zero_fill,
                spares,
                ..Options::default()
            };
            let Ok(opened) = Spool::open(&path, options) else {
                return;
            };
            let spool = opened.spool;
            let name = format!("store_1k_messages_{writers}_writers_{segments}");
            group.bench_function(&name, |b| {
                b.iter(|| store_all(&spool, writers));
            });
            let s = spool.stats();
            let fsyncs = s.fsyncs.load(std::sync::atomic::Ordering::Relaxed);
            let records = s.records.load(std::sync::atomic::Ordering::Relaxed);
            let bytes = s.bytes.load(std::sync::atomic::Ordering::Relaxed);
            if records > 0 && fsyncs > 0 {
                println!(
                    "{name}: {:.1} records per fsync (stores and done), {} bytes per record",
                    records as f64 / fsyncs as f64,
                    bytes / records
                );
            }
            spool.close();
        }
    }
    // redb with the same batching the spool reaches with 50 writers:
    // one durable transaction per batch of messages.
    let Ok(db) = redb::Database::create(dir.path().join("redb")) else {
        return;
    };
    let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("messages");
    let bodies: Vec<Vec<u8>> = (0..MESSAGES).map(|n| message(n).body.to_vec()).collect();
    for per_txn in [1, 50] {
        let mut next = 0u64;
        group.bench_function(format!("redb_1k_messages_{per_txn}_per_transaction"), |b| {
            b.iter(|| {
                for chunk in bodies.chunks(per_txn) {
                    let Ok(tx) = db.begin_write() else { return };
                    if let Ok(mut t) = tx.open_table(table) {
                        for body in chunk {
                            next += 1;
                            let _ = t.insert(next, body.as_slice());
                        }
                    }
                    let _ = tx.commit();
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
