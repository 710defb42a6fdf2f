//! The control plane's cost per batch: a message for one domain is
//! queued, handed to an idle connection of its MX host, delivered, and the
//! connection asks for the next. Compared between a small world (50
//! domains on 5 hosts) and a large one (100,000 domains on 1,000 hosts,
//! two equal MX hosts each), the shape bulk mail has: many domains, few
//! providers. No decision may look at every domain or host, so the two
//! should cost about the same.
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use postern_conf::Config;
use postern_engine::bench::Plane;

/// The daemon's allocator (ADR 0009): the control plane's cost is
/// measured as it runs there.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn host(i: usize) -> SocketAddr {
    let i = u32::try_from(i).unwrap_or(0);
    SocketAddr::from(([127, 1, (i / 250) as u8, (i % 250) as u8 + 1], 25))
}

/// A plane with `domains` domains over `hosts` hosts. Connections open as
/// the first messages come (criterion's warm-up), and stay idle between
/// messages.
fn world(domains: usize, hosts: usize) -> (Plane, Vec<String>) {
    let config = Config::from_text(
        "Hostname = \"bench.test\"\nIdle_Timeout = 3600\n",
        Path::new("bench.conf"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut plane = Plane::new(config);
    let names: Vec<String> = (0..domains).map(|i| format!("d{i}.bench")).collect();
    for (i, name) in names.iter().enumerate() {
        plane.route(name, &[host(i % hosts), host((i + 1) % hosts)]);
    }
    (plane, names)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch");
    for (domains, hosts) in [(50, 5), (100_000, 1_000)] {
        let (mut plane, names) = world(domains, hosts);
        let body = Plane::body();
        let mut id = 1_000_000u64;
        let mut name = String::new();
        group.bench_function(format!("batch_{domains}_domains_{hosts}_hosts"), |b| {
            b.iter(|| {
                id += 1;
                // The name is written afresh, as the listener reads it off
                // the wire, not fetched from a table of 100,000 (which
                // would time the table).
                name.clear();
                let _ = write!(name, "d{}.bench", (id as usize * 7919) % names.len());
                plane.submit(Plane::message(id, &name, &body));
                plane.run()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
