//! Config loading: syntax only, and the whole typed load with validation.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use postern_benches::generated_config;
use postern_conf::Config;

fn bench(c: &mut Criterion) {
    let text = generated_config(200, 2_000);
    let mut group = c.benchmark_group("conf");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("parse_syntax_2000_domains", |b| {
        b.iter(|| postern_conf::parse(black_box(&text)));
    });
    group.bench_function("load_typed_2000_domains", |b| {
        b.iter(|| Config::from_text(black_box(&text), Path::new("bench.conf")));
    });
    group.finish();

    let config = Config::from_text(&text, Path::new("bench.conf")).ok();
    c.bench_function("conf/effective_lookup_and_routing", |b| {
        b.iter(|| {
            config
                .as_ref()
                .and_then(|c| c.effective(black_box("b17"), black_box("customer1999.example.com")))
                .map(|e| e.routing().clone())
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
