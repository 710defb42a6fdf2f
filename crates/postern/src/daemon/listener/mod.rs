//! The ESMTP listener, on its own event loop: `accept.rs` (session
//! limits, accept back-off), `session.rs` (relay control, callouts,
//! binding assignment), then reception (`reception.rs`: the spool before
//! 250).

mod accept;
mod session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use postern_conf::{Config, Directive, Listen, Listener, RouteItem, Value};
use postern_dns::Dns;
use postern_engine::outbound::TlsCache;
use postern_engine::{Body, Handle};
use postern_smtp::Reply;
use postern_smtp::server::ServerSettings;
use postern_spool::Spool;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::dkim::Signers;
use super::log::DeliveryLog;
use super::scanning::Filters;
use super::spool::Pressure;
use super::stats::Totals;
use super::submissions::Submissions;

/// What every session of every listen address shares.
pub(crate) struct Shared {
    pub(crate) config: Arc<Config>,
    pub(crate) spool: Spool,
    /// How the engine reads the bodies of stored messages.
    pub(crate) body: Body,
    pub(crate) pressure: Pressure,
    pub(crate) engine: Handle,
    /// Stored messages on their way to the engine.
    pub(crate) submissions: Arc<Submissions>,
    pub(crate) log: DeliveryLog,
    pub(crate) totals: Arc<Totals>,
    pub(crate) hostname: String,
    pub(crate) sessions: AtomicUsize,
    /// The `DKIM_Sign` stanzas' signers.
    pub(crate) dkim: Arc<Signers>,
    /// The `Milter` stanzas.
    pub(crate) filters: Filters,
    /// Some route may tell its next hop the original client (XCLIENT):
    /// messages keep theirs.
    pub(crate) keep_client: bool,
    /// Sessions per client address.
    clients: accept::Clients,
    callouts: Mutex<HashMap<String, (Reply, Instant)>>,
    tls: Mutex<TlsCache>,
}

impl Shared {
    pub(crate) fn new(
        config: Arc<Config>,
        spool: Spool,
        body: Body,
        ready: Arc<AtomicUsize>,
        engine: Handle,
        log: DeliveryLog,
        totals: Arc<Totals>,
    ) -> Self {
        let submissions = Arc::new(Submissions::new({
            let engine = engine.clone();
            move |messages| engine.submit_all(messages)
        }));
        Self {
            body,
            pressure: Pressure::new(&config, spool.clone(), ready, submissions.count()),
            totals,
            filters: Filters::of(&config),
            keep_client: wants_xclient(&config),
            hostname: config.hostname(),
            config,
            spool,
            submissions,
            engine,
            log,
            sessions: AtomicUsize::new(0),
            dkim: Arc::default(),
            clients: accept::Clients::default(),
            callouts: Mutex::new(HashMap::new()),
            tls: Mutex::new(TlsCache::default()),
        }
    }

    /// Signs received mail with these signers.
    pub(crate) fn with_dkim(mut self, dkim: Arc<Signers>) -> Self {
        self.dkim = dkim;
        self
    }
}

/// The spool's disk is full: `452 4.3.1` (RFC 3463), at `MAIL` or after
/// the data.
/// True when some scope sets `Outbound_XCLIENT` or a route says
/// `xclient=yes`.
fn wants_xclient(config: &Config) -> bool {
    config.delivery_scopes().any(|options| {
        let on = matches!(
            options.get(Directive::OutboundXclient).map(|s| &s.value),
            Some(Value::Bool(true))
        );
        let routed = match options.get(Directive::Routes).map(|s| &s.value) {
            Some(Value::Routes(items)) => items
                .iter()
                .any(|i| matches!(i, RouteItem::Host(h) if h.xclient == Some(true))),
            _ => false,
        };
        on || routed
    })
}

fn storage_full() -> Reply {
    Reply::with_status(
        452,
        (4, 3, 1),
        "insufficient system storage, try again later",
    )
}

/// The spool failed otherwise: `451 4.3.0`.
fn try_later(why: &str) -> Reply {
    Reply::with_status(451, (4, 3, 0), format!("{why}, try again later"))
}

/// One listen address's settings.
struct Place {
    settings: Arc<ServerSettings>,
    relay_hosts: Vec<IpNet>,
    default_binding: String,
    max_sessions: usize,
    max_per_client: usize,
}

fn place(
    listener: &Listener,
    listen: &Listen,
    hostname: &str,
    stop: &watch::Receiver<bool>,
) -> Result<Place, String> {
    let mut settings = ServerSettings::new(hostname);
    settings.shutdown = Some(stop.clone());
    if let Some(Value::Seconds(s)) = listener.option(listen, Directive::InboundCommandTimeout) {
        settings.command_timeout = Duration::from_secs(s);
    }
    if let Some(Value::Seconds(s)) = listener.option(listen, Directive::InboundDataTimeout) {
        settings.data_timeout = Duration::from_secs(s);
    }
    let count = |d| match listener.option(listen, d) {
        Some(Value::Count(n)) => usize::try_from(n).unwrap_or(usize::MAX),
        _ => usize::MAX,
    };
    if let Some(Value::Bool(on)) = listener.option(listen, Directive::Chunking) {
        settings.chunking = on;
    }
    if let Some(Value::Size(n)) = listener.option(listen, Directive::MaxMessageSize) {
        settings.max_message_size = n;
    }
    if let (Some(Value::Path(cert)), Some(Value::Path(key))) = (
        listener.option(listen, Directive::TlsCertificate),
        listener.option(listen, Directive::TlsKey),
    ) {
        settings.tls =
            Some(postern_smtp::tls::server_config(&cert, &key).map_err(|e| e.to_string())?);
    }
    let relay_hosts = match listener.option(listen, Directive::RelayHosts) {
        Some(Value::Cidrs(nets)) => nets,
        _ => Vec::new(),
    };
    let default_binding = match listener.option(listen, Directive::DefaultBinding) {
        Some(Value::Text(b)) => b,
        _ => "default".into(),
    };
    Ok(Place {
        settings: Arc::new(settings),
        relay_hosts,
        default_binding,
        max_sessions: count(Directive::MaxInboundSessions),
        max_per_client: count(Directive::MaxSessionsPerClient),
    })
}

/// Binds every `Listen` address now (so that a bad one fails the start),
/// then serves them on the listener event loop, its own thread. After
/// `stop`, no session is accepted, open sessions get `grace` to finish,
/// and the thread ends.
pub(crate) fn start(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> Result<(std::thread::JoinHandle<()>, Vec<SocketAddr>), String> {
    let config = shared.config.clone();
    let mut bound = Vec::new();
    if let Some(listener) = &config.listener {
        for listen in &listener.listens {
            let place = place(listener, listen, &shared.hostname, &stop)?;
            let socket = std::net::TcpListener::bind(listen.addr)
                .map_err(|e| format!("{}: {e}", listen.addr))?;
            socket.set_nonblocking(true).map_err(|e| e.to_string())?;
            bound.push((socket, place));
        }
    }
    let addrs = bound
        .iter()
        .filter_map(|(s, _)| s.local_addr().ok())
        .collect();
    let thread = std::thread::Builder::new()
        .name("postern-listener".into())
        .spawn(move || {
            let system = actix::System::new();
            system.block_on(async move {
                // The listener loop's own resolver, for callouts.
                let dns = Dns::from_config(&shared.config).ok().map(Arc::new);
                for (socket, place) in bound {
                    let Ok(socket) = TcpListener::from_std(socket) else {
                        continue;
                    };
                    let place = Arc::new(place);
                    actix::spawn(accept::accept(
                        socket,
                        place,
                        shared.clone(),
                        dns.clone(),
                        stop.clone(),
                    ));
                }
                let _ = stop.changed().await;
                let until = Instant::now() + grace;
                while shared.sessions.load(Ordering::SeqCst) > 0 && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        })
        .map_err(|e| e.to_string())?;
    Ok((thread, addrs))
}
