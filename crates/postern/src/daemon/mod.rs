//! `postern run`: the daemon. Spool recovery, the engine, the listener and
//! the delivery log, started in that order and stopped in reverse on
//! SIGTERM or SIGINT.

mod admin;
pub(crate) mod dkim;
mod http;
mod inbound;
mod listener;
mod log;
mod outcomes;
mod reception;
mod scanning;
mod spool;
mod stats;
mod submissions;
mod time;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use postern_conf::{Config, Directive, LogTarget, Value};
use postern_engine::{Body, Engine};
use postern_spool::Spool;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use self::admin::Admin;
use self::listener::Shared;
use self::log::DeliveryLog;
use self::outcomes::Recorder;
use self::spool::SpoolBodies;
use self::stats::Totals;
use crate::config_cmd::load;

/// How long open sessions get to finish after SIGTERM, and outbound
/// connections to end their transactions.
const GRACE: Duration = Duration::from_secs(30);

fn say(line: &str) {
    eprintln!("postern: {line}");
}

/// Diagnostics (tracing) on standard error, at `Log_Level` or
/// `POSTERN_LOG`.
fn diagnostics(config: &Config) {
    let level = match config.global.value_or_default(Directive::LogLevel) {
        Some(Value::Text(l)) => l.clone(),
        _ => "info".into(),
    };
    let filter = std::env::var("POSTERN_LOG").unwrap_or(level);
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        say(&format!("Log_Level {filter:?}: {e}; using info"));
        tracing_subscriber::EnvFilter::new("info")
    });
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    if installed.is_err() {
        say("diagnostics: a subscriber was already installed");
    }
}

/// `postern run --config FILE`.
pub(crate) fn run(file: &Path) -> ExitCode {
    let config = match load(file) {
        Ok(c) => Arc::new(c),
        Err(code) => return code,
    };
    diagnostics(&config);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(&format!("cannot start a runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(&e);
            ExitCode::FAILURE
        }
    }
}

fn log_target(config: &Config) -> LogTarget {
    match config.global.value_or_default(Directive::LogFile) {
        Some(Value::Log(t)) => t.clone(),
        _ => LogTarget::Stdout,
    }
}

fn metrics_listen(config: &Config) -> Option<std::net::SocketAddr> {
    match config.global.value_or_default(Directive::MetricsListen) {
        Some(Value::SocketAddr(a)) => Some(*a),
        _ => None,
    }
}

fn host_labels(config: &Config) -> usize {
    match config.global.value_or_default(Directive::MetricsHostLabels) {
        Some(Value::Count(n)) => usize::try_from(*n).unwrap_or(usize::MAX),
        _ => 50,
    }
}

/// The bearer token of the `HTTP_Listener`'s `Auth_Token_File`, which
/// the admin API's control endpoints ask for too.
pub(crate) fn admin_token(config: &Config) -> Result<Option<String>, String> {
    match &config.http_listener {
        Some(l) => http::token(l),
        None => Ok(None),
    }
}

/// Joins the cluster of the `Cluster` stanza, if any.
fn join_cluster(config: &Config) -> Result<Option<postern_cluster::Cluster>, String> {
    let Some(settings) = config.cluster() else {
        return Ok(None);
    };
    let cluster = postern_cluster::Cluster::start(postern_cluster::Options {
        redis: settings.redis,
        node: settings.node,
        lease_ttl: settings.lease_ttl,
    })
    .map_err(|e| e.to_string())?;
    if cluster.is_shared() {
        say(&format!(
            "cluster: node {}, {} live nodes, limits shared through Redis",
            cluster.node(),
            cluster.nodes()
        ));
    } else {
        say(&format!(
            "cluster: node {}: Redis does not answer; keeping to local shares until it does",
            cluster.node()
        ));
    }
    Ok(Some(cluster))
}

/// Raises the open-file limit to its hard maximum: every connection,
/// inbound or outbound, is a file descriptor.
fn raise_descriptor_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
}

async fn daemon(config: Arc<Config>) -> Result<(), String> {
    raise_descriptor_limit();
    let prometheus = postern_metrics::install().map_err(|e| format!("metrics: {e}"))?;
    let totals = Arc::new(Totals::new(&config));
    let dir = spool::dir(&config);
    let opened = Spool::open(&dir, spool::options(&config))
        .map_err(|e| format!("spool {}: {e}", dir.display()))?;
    for line in &opened.damage {
        say(line);
    }
    let spool = opened.spool;
    let body = Body::Stored(Arc::new(SpoolBodies(spool.bodies())));
    let (log, log_thread) =
        DeliveryLog::open(&log_target(&config)).map_err(|e| format!("log file: {e}"))?;
    let signers = Arc::new(dkim::Signers::load(&config).map_err(|errors| errors.join("\n"))?);
    let recorder = Recorder {
        spool: spool.clone(),
        log: log.clone(),
        totals: totals.clone(),
        dkim: signers.clone(),
    };
    let cluster = join_cluster(&config)?;
    let backlog = spool::SpoolBacklog {
        bodies: spool.bodies(),
        body: body.clone(),
    };
    let engine = Engine::start(
        config.clone(),
        Box::new(recorder),
        Some(Arc::new(backlog)),
        cluster.clone(),
    )
    .map_err(|e| format!("engine: {e}"))?;
    let entries = spool::requeue(opened.recovered, &engine.handle());
    say(&format!(
        "spool {}: {entries} entries to deliver",
        dir.display()
    ));
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(
        Shared::new(
            config.clone(),
            spool.clone(),
            body,
            engine.ready(),
            engine.handle(),
            log.clone(),
            totals.clone(),
        )
        .with_dkim(signers),
    );
    let admin_task = match metrics_listen(&config) {
        Some(addr) => {
            let socket = admin::bind(addr).await?;
            let at = socket.local_addr().unwrap_or(addr);
            say(&format!("metrics and admin API on http://{at}"));
            let admin = Arc::new(Admin::new(
                engine.handle(),
                spool.clone(),
                prometheus,
                totals,
                host_labels(&config),
                cluster.clone(),
                admin_token(&config)?,
            ));
            Some(tokio::spawn(admin::serve(socket, admin)))
        }
        None => None,
    };
    let mut http_tasks = Vec::new();
    for bound in http::bind(&config, &shared).await? {
        if let Some(a) = bound.addr() {
            say(&format!("HTTP injection on http://{a}/api/inject/v1"));
        }
        http_tasks.push(tokio::spawn(bound.serve(stopped.clone())));
    }
    let (listener_loop, addrs) = listener::start(shared.clone(), stopped, GRACE)?;
    for a in &addrs {
        say(&format!("listening on {a}"));
    }
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    say("stopping: no new sessions; open ones may finish");
    let _ = stop.send(true);
    let _ = tokio::task::spawn_blocking(move || listener_loop.join()).await;
    for task in http_tasks {
        // Requests in flight finish; the answer to each comes after its store.
        let _ = tokio::time::timeout(GRACE, task).await;
    }
    drop(shared);
    if let Some(task) = admin_task {
        task.abort();
    }
    engine.drain(GRACE).await;
    drop(engine);
    if let Some(cluster) = cluster {
        // Every connection is closed: its lease is on its way back.
        let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
    }
    if spool.sync().await.is_err() {
        say("the spool stopped before its last sync; what it did not write is counted below");
    }
    if let Some(line) = spool::unwritten(spool.close()) {
        say(&line);
    }
    drop(log);
    if log_thread.join().is_err() {
        say("the delivery log's writer ended with a panic");
    }
    say("stopped");
    Ok(())
}
