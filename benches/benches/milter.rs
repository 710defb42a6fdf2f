//! Content scanning: one milter session with a real rspamd (the
//! testkit's, Debian's package in milter mode) for a clean 1 KiB message,
//! as the listener runs it before its 250: the time a scanned message
//! waits for its verdict, connection included.
#![allow(clippy::panic)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use postern_milter::{Envelope, Message, scan};
use postern_testkit::rspamd::RspamdServer;

fn message() -> Message {
    let mut m = b"From: Alice <alice@example.org>\r\nTo: bob@inbound.test\r\nSubject: Lunch\r\n\
Date: Tue, 1 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1.bench@example.org>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\n"
        .to_vec();
    while m.len() < 1024 {
        m.extend_from_slice(b"Shall we meet at noon on Friday, at the usual place? Bob\r\n");
    }
    Message::parse(&m)
}

fn scanning(c: &mut Criterion) {
    let rspamd = RspamdServer::start().unwrap_or_else(|e| panic!("rspamd: {e}"));
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        panic!("no runtime");
    };
    let message = message();
    let recipients = vec!["bob@inbound.test".to_owned()];
    let envelope = Envelope {
        client: ([192, 0, 2, 10], 40_000).into(),
        client_name: None,
        helo: "client.example",
        sender: "alice@example.org",
        recipients: &recipients,
        hostname: "postern.test",
        queue_id: "bench",
    };
    let mut group = c.benchmark_group("milter_rspamd");
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("clean_1k", |b| {
        b.iter(|| {
            runtime
                .block_on(scan(
                    rspamd.addr(),
                    Duration::from_secs(30),
                    &envelope,
                    &message,
                ))
                .unwrap_or_else(|e| panic!("scan: {e}"))
        });
    });
    group.finish();
}

criterion_group!(benches, scanning);
criterion_main!(benches);
