//! `postern-bench`: load Postern (or any MTA, or the sinks directly) with
//! N messages of S bytes over C concurrent pipelined sessions, towards K
//! destination domains on M sink hosts, and report the injection rate, the
//! end-to-end rate, latency percentiles, and the daemon's CPU and peak RSS.
//!
//! ```text
//! cargo run --release -p postern-benches --bin postern-bench -- --scenario s1
//! postern-bench --target 127.0.0.1:25 ...   # another MTA, same sinks and DNS
//! postern-bench --direct ...                # straight to the sinks: the ceiling
//! postern-bench --scenario s2 --messages 1000000   # destination down, restart
//! ```

mod http;
mod inject;
mod s2;
mod world;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use postern_testkit::redis::RedisServer;
use postern_testkit::sink::Sink;
use serde_json::{Value, json};

use crate::inject::{Plan, Sent, Target};
use crate::world::{Daemon, usage};

#[derive(Debug, Parser)]
#[command(
    name = "postern-bench",
    about = "Load harness for Postern and other MTAs"
)]
struct Args {
    /// A preset: s1 (200,000 × 1 KiB, 50 domains, 5 hosts, 50 sessions),
    /// s2 (destination down, then a restart), s3-10, s3-10000 (S1 with
    /// 10 or 10,000 domains), smart (100,000 messages to sinks that allow
    /// 4 connections and 200 messages a second each). Other flags
    /// override it.
    #[arg(long, value_parser = ["s1", "s2", "s3-10", "s3-10000", "smart"])]
    scenario: Option<String>,
    /// Messages to inject.
    #[arg(long)]
    messages: Option<usize>,
    /// Bytes per message.
    #[arg(long, default_value = "1024")]
    size: usize,
    /// Concurrent injection sessions.
    #[arg(long, default_value = "50")]
    sessions: usize,
    /// Destination domains.
    #[arg(long)]
    domains: Option<usize>,
    /// Sink hosts (127.0.1.10 and up).
    #[arg(long, default_value = "5")]
    hosts: usize,
    /// Load this listener instead of starting Postern.
    #[arg(long)]
    target: Option<SocketAddr>,
    /// Send straight to the sinks (the machine's ceiling).
    #[arg(long)]
    direct: bool,
    /// The injector sends with BDAT where CHUNKING is offered (by Postern's
    /// listener and the sinks). Without it, it sends DATA, as most
    /// applications that hand mail to an MTA do.
    #[arg(long)]
    injector_chunking: bool,
    /// The postern binary (release build).
    #[arg(long, default_value = "target/release/postern")]
    daemon: PathBuf,
    /// Write the final JSON record here too.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Keep the daemon's configuration, spool and delivery log here
    /// (default: a temporary directory, removed at the end).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Start the sinks on this port (default: any free one), for an MTA
    /// under `--target` whose routes name it.
    #[arg(long, default_value = "0")]
    sink_port: u16,
    /// Each sink refuses connections beyond this many with 421 (the smart
    /// scenario: 4).
    #[arg(long)]
    sink_connections: Option<usize>,
    /// Each sink answers 451 4.7.28 beyond this many messages a second
    /// (the smart scenario: 200).
    #[arg(long)]
    sink_rate: Option<u32>,
    /// A line to add to the daemon's configuration, for example
    /// `--set "Event_Loops = 1"` (repeatable).
    #[arg(long = "set")]
    set: Vec<String>,
    /// Give up waiting for the sinks after this many seconds.
    #[arg(long, default_value = "600")]
    timeout: u64,
    /// Run the daemon as a node of a cluster: start a local redis-server
    /// and add a `Cluster` stanza; the report counts Redis's commands.
    #[arg(long)]
    cluster: bool,
    /// Inject over HTTP (`POST /api/inject/v1`) instead of SMTP, in
    /// requests of `--batch` recipients (one message each).
    #[arg(long)]
    http: bool,
    /// Recipients per HTTP request.
    #[arg(long, default_value = "100")]
    batch: usize,
    /// Give each sink host a `Host` stanza with this connection limit
    /// (`mx0.bench` ...), so that connections take leases in a cluster.
    #[arg(long)]
    host_limit: Option<u32>,
}

fn percentile(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Waits until the sinks have `n` messages, with a progress bar.
fn wait_arrivals(sinks: &[Sink], n: usize, injected: &AtomicUsize, limit: Duration) -> bool {
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} arrived {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let until = Instant::now() + limit;
    loop {
        let arrived: usize = sinks.iter().map(Sink::message_count).sum();
        bar.set_position(arrived as u64);
        bar.set_message(format!("({} injected)", injected.load(Ordering::Relaxed)));
        if arrived >= n {
            bar.finish();
            return true;
        }
        if Instant::now() > until {
            bar.abandon();
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Outcome {
    record: Value,
}

fn measure(args: &Args, messages: usize, domains: usize) -> Result<Outcome, String> {
    let e = |x: std::io::Error| x.to_string();
    let dns = world::dns(domains, args.hosts).map_err(e)?;
    let (port, sinks) = world::sinks(args.hosts, args.sink_port, allowance(args)).map_err(e)?;
    let temp = tempfile::tempdir().map_err(e)?;
    let dir = args
        .work
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).map_err(e)?;
    let redis = match args.cluster {
        true => Some(RedisServer::start().map_err(e)?),
        false => None,
    };
    let mut daemon = None;
    let mut http_target = None;
    let target =
        if args.direct {
            Target::Direct {
                hosts: args.hosts,
                port,
            }
        } else if let Some(t) = args.target {
            Target::One(t)
        } else {
            let listen = SocketAddr::from(([127, 0, 0, 1], world::free_port().map_err(e)?));
            let mut extra = args.set.clone();
            if let Some(limit) = args.host_limit {
                extra.extend((0..args.hosts).map(|j| {
                    format!("Host \"mx{j}.bench\" {{ Max_Outbound_Connections = {limit} }}")
                }));
            }
            let http_listen = match args.http {
                true => Some(SocketAddr::from((
                    [127, 0, 0, 1],
                    world::free_port().map_err(e)?,
                ))),
                false => None,
            };
            if let Some(h) = http_listen {
                extra.push(format!(
                    "HTTP_Listener {{ Listen \"{h}\" {{ }} Relay_Hosts = ( \"127.0.0.0/8\" ) }}"
                ));
            }
            http_target = http_listen;
            if let Some(r) = &redis {
                extra.push(format!(
                    "Cluster {{ Redis = \"{}\" Node_Name = \"bench\" }}",
                    r.url()
                ));
            }
            let config = world::write_config(&dir, dns.addr(), port, listen, &extra).map_err(e)?;
            let d = Daemon::start(&args.daemon, &config, listen).map_err(e)?;
            let t = Target::One(d.listen);
            daemon = Some(d);
            t
        };
    let plan = Plan {
        messages,
        size: args.size,
        sessions: args.sessions,
        domains,
        target,
        chunking: args.injector_chunking,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(e)?;
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let injection = {
        let done = done.clone();
        match http_target {
            Some(addr) => runtime.spawn(http::run(plan, addr, args.batch, done)),
            None => runtime.spawn(inject::run(plan, done)),
        }
    };
    let arrived_all = wait_arrivals(&sinks, messages, &done, Duration::from_secs(args.timeout));
    let (sent, failed) = runtime.block_on(injection).map_err(|x| x.to_string())?;
    let (cpu, rss) = daemon.as_ref().map_or((0.0, 0), |d| usage(d.pid()));
    let redis_commands = redis.as_ref().map(redis_commands);
    if let Some(d) = daemon {
        d.stop();
    }
    let mut record = report(
        args,
        &plan,
        started,
        &sent,
        failed,
        &sinks,
        arrived_all,
        cpu,
        rss,
    );
    if let (Some(n), Some(obj)) = (redis_commands, record.as_object_mut()) {
        let arrived = obj["arrived"].as_f64().unwrap_or(0.0).max(1.0);
        obj.insert("redis_commands".into(), json!(n));
        obj.insert(
            "redis_commands_per_message".into(),
            json!(n as f64 / arrived),
        );
    }
    Ok(Outcome { record })
}

/// Commands Redis has processed (each script run is one).
fn redis_commands(redis: &RedisServer) -> u64 {
    redis
        .command(&["INFO", "stats"])
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("total_commands_processed:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    plan: &Plan,
    started: Instant,
    sent: &[Sent],
    failed: usize,
    sinks: &[Sink],
    arrived_all: bool,
    cpu: f64,
    rss: u64,
) -> Value {
    let by_number: HashMap<usize, &Sent> = sent.iter().map(|s| (s.number, s)).collect();
    let Ok(mut latency) = Histogram::<u64>::new(3) else {
        return json!({ "error": "cannot build a histogram" });
    };
    let mut last_arrival = started;
    let mut arrived = 0usize;
    for sink in sinks {
        for m in sink.messages() {
            arrived += 1;
            last_arrival = last_arrival.max(m.at);
            let number = m.message_id.as_deref().and_then(|id| {
                id.trim_start_matches('<')
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            });
            if let Some(s) = number.and_then(|n| by_number.get(&n)) {
                let micros = m.at.saturating_duration_since(s.at).as_micros();
                let _ = latency.record(u64::try_from(micros).unwrap_or(u64::MAX));
            }
        }
    }
    let last_ack = sent.iter().map(|s| s.acked).max().unwrap_or(started);
    let inject_secs = last_ack
        .saturating_duration_since(started)
        .as_secs_f64()
        .max(1e-9);
    let e2e_secs = last_arrival
        .saturating_duration_since(started)
        .as_secs_f64()
        .max(1e-9);
    let mode = if args.direct {
        "direct"
    } else if args.target.is_some() {
        "target"
    } else if args.http {
        "postern-http"
    } else {
        "postern"
    };
    json!({
        "mode": mode,
        "messages": plan.messages,
        "size": plan.size,
        "sessions": plan.sessions,
        "domains": plan.domains,
        "hosts": args.hosts,
        "accepted": sent.len(),
        "refused_or_failed": failed,
        "arrived": arrived,
        "all_arrived": arrived_all,
        "injection_seconds": inject_secs,
        "injection_rate": sent.len() as f64 / inject_secs,
        "end_to_end_seconds": e2e_secs,
        "end_to_end_rate": arrived as f64 / e2e_secs,
        "latency_ms": {
            "p50": percentile(&latency, 0.5),
            "p90": percentile(&latency, 0.9),
            "p99": percentile(&latency, 0.99),
            "max": latency.max() as f64 / 1000.0,
        },
        "daemon_cpu_seconds": cpu,
        "daemon_peak_rss_bytes": rss,
        "convergence": convergence(args, started, sinks),
    })
}

/// What the sinks allow: the flags, or the smart scenario's 4 connections
/// and 200 messages a second.
fn allowance(args: &Args) -> world::Allowance {
    let smart = args.scenario.as_deref() == Some("smart");
    world::Allowance {
        connections: args.sink_connections.or(smart.then_some(4)),
        rate: args.sink_rate.or(smart.then_some(200)),
    }
}

/// Against sinks that refuse: how fast delivery reached 90 % of what they
/// allow, the rate after that, and the refusals before and after.
fn convergence(args: &Args, started: Instant, sinks: &[Sink]) -> Value {
    let allow = allowance(args);
    let Some(per_host) = allow.rate else {
        return Value::Null;
    };
    let allowed = f64::from(per_host) * sinks.len() as f64;
    let mut seconds: Vec<u32> = Vec::new();
    let mut last = started;
    for m in sinks.iter().flat_map(Sink::messages) {
        let i = m.at.saturating_duration_since(started).as_secs() as usize;
        if seconds.len() <= i {
            seconds.resize(i + 1, 0);
        }
        if let Some(n) = seconds.get_mut(i) {
            *n += 1;
        }
        last = last.max(m.at);
    }
    // The first second from which a 5-second average reaches 90 %.
    let converged = seconds
        .windows(5)
        .position(|w| f64::from(w.iter().sum::<u32>()) / 5.0 >= 0.9 * allowed)
        .unwrap_or(seconds.len());
    let from = started + Duration::from_secs(converged as u64);
    let after: u32 = seconds.iter().skip(converged).sum();
    let span = last.saturating_duration_since(from).as_secs_f64().max(1e-9);
    let refusals: Vec<Instant> = sinks.iter().flat_map(Sink::refusal_times).collect();
    let refused_after = refusals.iter().filter(|t| **t >= from).count();
    // Seconds in which some sink refused: time spent above its allowance.
    let mut above: Vec<u64> = refusals
        .iter()
        .map(|t| t.saturating_duration_since(started).as_secs())
        .collect();
    above.sort_unstable();
    above.dedup();
    json!({
        "allowance_per_second": allowed,
        "connections_per_host": allow.connections,
        "seconds_to_90_percent": converged,
        "rate_after_convergence": f64::from(after) / span,
        "share_of_allowance": f64::from(after) / span / allowed,
        "refusals": refusals.len(),
        "seconds_above_allowance": above.len(),
        "refusals_after_convergence": refused_after,
        "refused_share_after_convergence": refused_after as f64 / (f64::from(after) + refused_after as f64).max(1.0),
    })
}

fn scenario(args: &Args) -> (usize, usize) {
    let (m, d) = match args.scenario.as_deref() {
        Some("smart") => (100_000, 50),
        Some("s3-10") => (200_000, 10),
        Some("s3-10000") => (200_000, 10_000),
        Some("s2") => (1_000_000, 50),
        _ => (200_000, 50),
    };
    (args.messages.unwrap_or(m), args.domains.unwrap_or(d))
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The sinks hold as many connections as the daemon opens.
    let nofile = rustix::process::Resource::Nofile;
    let mut files = rustix::process::getrlimit(nofile);
    files.current = files.maximum;
    let _ = rustix::process::setrlimit(nofile, files);
    let (messages, domains) = scenario(&args);
    let result = if args.scenario.as_deref() == Some("s2") {
        s2::run(&args, messages, domains)
    } else {
        measure(&args, messages, domains).map(|o| o.record)
    };
    match result {
        Ok(record) => {
            let text = record.to_string();
            println!("{text}");
            if let Some(path) = &args.json_out
                && let Err(e) = std::fs::write(path, format!("{text}\n"))
            {
                eprintln!("postern-bench: {}: {e}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("postern-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
