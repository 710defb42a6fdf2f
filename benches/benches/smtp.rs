//! SMTP: parsing replies and commands, dot-stuffing a body, and whole
//! pipelined transactions over loopback to a testkit sink.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use postern_smtp::client::{ClientSettings, Session, Transaction};
use postern_smtp::server::parse_command;
use postern_smtp::{ReplyParser, dot_stuff};
use postern_testkit::sink::Sink;

const EHLO_REPLY: &[u8] = b"250-mx.example.com greets you\r\n250-PIPELINING\r\n250-SIZE 35882577\r\n\
250-8BITMIME\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";

fn parsing(c: &mut Criterion) {
    let mut group = c.benchmark_group("smtp_parse");
    group.bench_function("reply_single_line", |b| {
        b.iter(|| {
            let mut parser = ReplyParser::default();
            let mut bytes: &[u8] = black_box(b"250 2.1.5 recipient ok\r\n");
            parser.parse(&mut bytes)
        });
    });
    group.bench_function("reply_ehlo_9_lines", |b| {
        b.iter(|| {
            let mut parser = ReplyParser::default();
            let mut bytes = black_box(EHLO_REPLY);
            parser.parse(&mut bytes)
        });
    });
    group.bench_function("command_mail_from_with_params", |b| {
        b.iter(|| {
            parse_command(black_box(
                b"MAIL FROM:<sender@example.org> SIZE=1024 BODY=8BITMIME\r\n",
            ))
        });
    });
    group.bench_function("command_rcpt_to", |b| {
        b.iter(|| parse_command(black_box(b"RCPT TO:<recipient@example.com>\r\n")));
    });
    group.finish();

    let body: Vec<u8> = (0..2_000)
        .flat_map(|i| {
            format!(
                "{}line {i} of a message body with some text\r\n",
                if i % 50 == 0 { "." } else { "" }
            )
            .into_bytes()
        })
        .collect();
    let mut group = c.benchmark_group("smtp_body");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("dot_stuff_90k", |b| b.iter(|| dot_stuff(black_box(&body))));
    group.finish();
}

fn transactions(c: &mut Criterion) {
    let Ok(sink) = Sink::builder().start() else {
        return;
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let mut settings = ClientSettings::new("bench.test", "sink.test");
    settings.timeouts.connect = Duration::from_secs(5);
    let Ok(mut session) = rt.block_on(Session::connect(sink.addr(), &settings)) else {
        return;
    };
    let recipients = vec!["rcpt@example.com".to_owned()];
    let body = vec![b'x'; 1024];
    let mut group = c.benchmark_group("smtp_loopback");
    group.throughput(Throughput::Elements(1));
    group.bench_function("pipelined_transaction_1k_1rcpt", |b| {
        b.iter(|| {
            let tx = Transaction {
                sender: "sender@example.org",
                recipients: &recipients,
                body: &body,
                eight_bit: false,
                smtputf8: false,
                xclient: None,
            };
            rt.block_on(session.send(&tx))
        });
    });
    group.finish();
}

criterion_group!(benches, parsing, transactions);
criterion_main!(benches);
