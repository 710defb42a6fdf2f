//! The scheduler's choice of a host for a new connection, on a routing
//! table of 10,000 hosts: 100 levels of 100, where the better levels are
//! full or down, the worst case the scan can meet.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use postern_engine::choice::{HostState, better_is_free, choose};

/// Levels of addresses, and the hosts' state.
type Table = (Vec<(u32, Vec<SocketAddr>)>, HashMap<SocketAddr, HostState>);

fn routing_table(levels: u32, per_level: u16) -> Table {
    let now = Instant::now();
    let mut table = Vec::new();
    let mut hosts = HashMap::new();
    for level in 0..levels {
        let mut addrs = Vec::new();
        for i in 0..per_level {
            let addr = SocketAddr::from((
                [
                    127,
                    (level / 256) as u8,
                    (level % 256) as u8,
                    (i % 250) as u8 + 1,
                ],
                25 + i / 250,
            ));
            let mut h = HostState::new(format!("mx{i}.l{level}.example"), Some(4));
            // Every level but the last is full or down.
            if level + 1 < levels {
                if i % 2 == 0 {
                    h.connections = 4;
                } else {
                    h.down_until = Some(now + Duration::from_secs(60));
                }
            } else {
                h.connections = usize::from(i % 3);
            }
            hosts.insert(addr, h);
            addrs.push(addr);
        }
        table.push((level, addrs));
    }
    (table, hosts)
}

fn bench(c: &mut Criterion) {
    let (table, hosts) = routing_table(100, 100);
    let now = Instant::now();
    let levels = || table.iter().map(|(l, a)| (*l, &a[..]));
    let mut group = c.benchmark_group("scheduler");
    group.bench_function("choose_10000_hosts_best_free_in_last_level", |b| {
        b.iter(|| choose(levels(), black_box(&hosts), now));
    });
    group.bench_function("better_is_free_10000_hosts", |b| {
        b.iter(|| better_is_free(levels(), black_box(&hosts), 99, now));
    });
    let (small, small_hosts) = routing_table(2, 5);
    group.bench_function("choose_10_hosts", |b| {
        b.iter(|| {
            choose(
                small.iter().map(|(l, a)| (*l, &a[..])),
                black_box(&small_hosts),
                now,
            )
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
