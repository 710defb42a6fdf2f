//! Scenario S2: a million messages queued for a destination that is down,
//! then a restart with the destination up. It measures the daemon's peak
//! memory while holding the queue, and how soon after the restart the
//! first message is delivered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use postern_testkit::sink::Sink;
use serde_json::{Value, json};

use crate::Args;
use crate::inject::{self, Plan, Target};
use crate::world::{self, Daemon, host_ip, usage};

pub(crate) fn run(args: &Args, messages: usize, domains: usize) -> Result<Value, String> {
    let e = |x: std::io::Error| x.to_string();
    let dns = world::dns(domains, args.hosts).map_err(e)?;
    // Find a port free on every sink address, then leave it closed: the
    // destination is down.
    let port = {
        let (port, sinks) =
            world::sinks(args.hosts, args.sink_port, world::Allowance::default()).map_err(e)?;
        drop(sinks);
        port
    };
    let dir = tempfile::tempdir().map_err(e)?;
    let listen = SocketAddr::from(([127, 0, 0, 1], world::free_port().map_err(e)?));
    let config = world::write_config(dir.path(), dns.addr(), port, listen, &args.set).map_err(e)?;
    let daemon = Daemon::start(&args.daemon, &config, listen).map_err(e)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(e)?;
    let plan = Plan {
        messages,
        size: args.size,
        sessions: args.sessions,
        domains,
        target: Target::One(listen),
        chunking: args.injector_chunking,
    };
    let started = Instant::now();
    let (sent, failed) = runtime.block_on(inject::run(plan, Arc::new(AtomicUsize::new(0))));
    let injection = started.elapsed().as_secs_f64();
    let (cpu_queued, rss_queued) = usage(daemon.pid());
    let stopping = Instant::now();
    daemon.stop();
    let stop_seconds = stopping.elapsed().as_secs_f64();

    let sinks: Vec<Sink> = (0..args.hosts)
        .map(|j| {
            Sink::builder()
                .drop_bodies()
                .ip(host_ip(j))
                .port(port)
                .start()
        })
        .collect::<Result<_, _>>()
        .map_err(e)?;
    let restarted = Instant::now();
    let daemon = Daemon::start(&args.daemon, &config, listen).map_err(e)?;
    let listening = restarted.elapsed().as_secs_f64();
    let until = Instant::now() + Duration::from_secs(args.timeout);
    let first = loop {
        if sinks.iter().any(|s| s.message_count() > 0) {
            break Some(restarted.elapsed().as_secs_f64());
        }
        if Instant::now() > until {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_secs(5));
    let (_, rss_recovered) = usage(daemon.pid());
    let delivered_in_5s: usize = sinks.iter().map(Sink::message_count).sum();
    daemon.stop();
    Ok(json!({
        "scenario": "s2",
        "messages": messages,
        "accepted": sent.len(),
        "refused_or_failed": failed,
        "injection_seconds": injection,
        "injection_rate": sent.len() as f64 / injection.max(1e-9),
        "daemon_cpu_seconds_while_queueing": cpu_queued,
        "peak_rss_bytes_while_queued": rss_queued,
        "stop_seconds": stop_seconds,
        "restart_listening_seconds": listening,
        "first_delivery_after_restart_seconds": first,
        "peak_rss_bytes_after_restart": rss_recovered,
        "delivered_in_first_5s_after_first": delivered_in_5s,
    }))
}
