//! The ESMTP listener: its event loop, relay control, recipient callouts,
//! binding assignment, and the spool before 250.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use postern_conf::{Config, Directive, Listen, Listener, RecipientVerification, Value};
use postern_dns::Dns;
use postern_engine::outbound::{TlsCache, client_settings};
use postern_engine::{Body, Handle};
use postern_smtp::Reply;
use postern_smtp::client::Session;
use postern_smtp::server::{DataReply, Envelope, Handler, ServerSettings, serve};
use postern_spool::Spool;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::inbound::{prepare, unique};
use super::log::DeliveryLog;
use super::reception::{Client, Incoming, NotStored};
use super::spool::{Pressure, Verdict};
use super::stats::{Rejection, Totals};
use super::time::rfc5322;

/// What every session of every listen address shares.
pub(crate) struct Shared {
    pub(crate) config: Arc<Config>,
    pub(crate) spool: Spool,
    /// How the engine reads the bodies of stored messages.
    pub(crate) body: Body,
    pub(crate) pressure: Pressure,
    pub(crate) engine: Handle,
    pub(crate) log: DeliveryLog,
    pub(crate) totals: Arc<Totals>,
    pub(crate) hostname: String,
    pub(crate) sessions: AtomicUsize,
    callouts: Mutex<HashMap<String, (Reply, Instant)>>,
    tls: Mutex<TlsCache>,
}

impl Shared {
    pub(crate) fn new(
        config: Arc<Config>,
        spool: Spool,
        body: Body,
        pressure: Pressure,
        engine: Handle,
        log: DeliveryLog,
        totals: Arc<Totals>,
    ) -> Self {
        Self {
            body,
            pressure,
            totals,
            hostname: config.hostname(),
            config,
            spool,
            engine,
            log,
            sessions: AtomicUsize::new(0),
            callouts: Mutex::new(HashMap::new()),
            tls: Mutex::new(TlsCache::default()),
        }
    }
}

/// The spool's disk is full: `452 4.3.1` (RFC 3463), at `MAIL` or after
/// the data.
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
}

fn place(listener: &Listener, listen: &Listen, hostname: &str) -> Result<Place, String> {
    let mut settings = ServerSettings::new(hostname);
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
            let place = place(listener, listen, &shared.hostname)?;
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
                    actix::spawn(accept(
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

async fn accept(
    socket: TcpListener,
    place: Arc<Place>,
    shared: Arc<Shared>,
    dns: Option<Arc<Dns>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = socket.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let mut handler = Inbound {
            relay_client: place.relay_hosts.iter().any(|n| n.contains(&peer.ip())),
            default_binding: place.default_binding.clone(),
            shared: shared.clone(),
            dns: dns.clone(),
        };
        let settings = place.settings.clone();
        let shared = shared.clone();
        shared.sessions.fetch_add(1, Ordering::SeqCst);
        Totals::session();
        actix::spawn(async move {
            let _ = serve(tcp, settings, &mut handler).await;
            shared.sessions.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// One injection session's view.
struct Inbound {
    shared: Arc<Shared>,
    dns: Option<Arc<Dns>>,
    relay_client: bool,
    default_binding: String,
}

fn domain_of(address: &str) -> Option<String> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .filter(|d| !d.is_empty())
}

impl Inbound {
    fn relay_domain(&self, domain: &str) -> bool {
        match self
            .shared
            .config
            .global
            .value_or_default(Directive::RelayDomains)
        {
            Some(Value::Domains(list)) => list.iter().any(|d| d == domain),
            _ => false,
        }
    }

    /// `Recipient_Verification = callout`: ask the domain's route.
    async fn callout(&self, domain: &str, recipient: &str) -> Option<Reply> {
        let config = &self.shared.config;
        let eff = config.effective("default", domain)?;
        let wanted = eff.pick(Directive::RecipientVerification, |v| match v {
            Value::RecipientVerification(r) => Some(*r),
            _ => None,
        });
        if wanted != Some(RecipientVerification::Callout) {
            return None;
        }
        let cache_for = eff
            .seconds(Directive::RecipientVerificationCache)
            .unwrap_or(Duration::from_secs(600));
        let key = recipient.to_ascii_lowercase();
        {
            let cache = self
                .shared
                .callouts
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some((reply, until)) = cache.get(&key)
                && Instant::now() < *until
            {
                return Some(reply.clone());
            }
        }
        let reply = self.ask(domain, recipient, &eff).await;
        if !matches!(reply.class(), postern_smtp::Class::Transient) {
            let mut cache = self
                .shared
                .callouts
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            cache.insert(key, (reply.clone(), Instant::now() + cache_for));
        }
        Some(reply)
    }

    async fn ask(&self, domain: &str, recipient: &str, eff: &postern_conf::Effective<'_>) -> Reply {
        let unavailable = |why: String| {
            Reply::with_status(
                451,
                (4, 4, 3),
                format!("cannot verify the recipient now: {why}"),
            )
        };
        let Some(dns) = &self.dns else {
            return unavailable("no resolver".into());
        };
        let config = &self.shared.config;
        let table = match dns.route_table(config, "default", domain).await {
            Ok(t) => t,
            Err(e) => return unavailable(e.to_string()),
        };
        let Some((_, entry)) = table.entries().next() else {
            return unavailable("no route".into());
        };
        let settings = {
            let mut tls = self
                .shared
                .tls
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            client_settings(config, eff, entry, &self.shared.hostname, &mut tls)
        };
        let mut settings = match settings {
            Ok(s) => s,
            Err(e) => return unavailable(e),
        };
        settings.timeouts.connect = settings.timeouts.connect.min(Duration::from_secs(30));
        settings.timeouts.ehlo = settings.timeouts.ehlo.min(Duration::from_secs(30));
        match Session::connect(entry.addr, &settings).await {
            Ok(mut session) => {
                let reply = session.verify_recipient(recipient).await;
                let _ = session.quit().await;
                reply.unwrap_or_else(|e| unavailable(e.to_string()))
            }
            Err(e) => unavailable(e.to_string()),
        }
    }

    fn received(&self, envelope: &Envelope, id: &str) -> String {
        let with = if envelope.tls { "ESMTPS" } else { "ESMTP" };
        format!(
            "Received: from {} ({})\r\n\tby {} (Postern) with {with} id {id};\r\n\t{}\r\n",
            envelope.helo,
            envelope.peer.ip(),
            self.shared.hostname,
            rfc5322(SystemTime::now())
        )
    }
}

#[async_trait::async_trait]
impl Handler for Inbound {
    /// New mail waits while delivery is behind, and is refused while the
    /// spool's disk is full or delivery is far behind.
    async fn mail_from(&mut self, _envelope: &Envelope) -> Reply {
        match self.shared.pressure.verdict() {
            Verdict::Go => {}
            Verdict::Wait(pause) => {
                metrics::counter!(postern_metrics::LISTENER_DELAYED).increment(1);
                tokio::time::sleep(pause).await;
            }
            Verdict::Behind => {
                Totals::rejected(Rejection::Backpressure);
                return Reply::with_status(
                    452,
                    (4, 3, 1),
                    "too much mail waiting for delivery, try again later",
                );
            }
            Verdict::Full => {
                Totals::rejected(Rejection::SpoolUnhealthy);
                return storage_full();
            }
        }
        Reply::with_status(250, (2, 1, 0), "sender ok")
    }

    async fn rcpt_to(&mut self, _envelope: &Envelope, recipient: &str) -> Reply {
        let Some(domain) = domain_of(recipient) else {
            return Reply::with_status(501, (5, 1, 3), "the recipient needs a domain");
        };
        if self.relay_client {
            return Reply::with_status(250, (2, 1, 5), "recipient ok");
        }
        if !self.relay_domain(&domain) {
            Totals::rejected(Rejection::RelayingDenied);
            return Reply::with_status(
                550,
                (5, 7, 1),
                format!("relaying denied: {domain} is not a relay domain"),
            );
        }
        match self.callout(&domain, recipient).await {
            Some(reply) if !reply.is_positive() => {
                Totals::rejected(Rejection::Callout);
                reply
            }
            _ => Reply::with_status(250, (2, 1, 5), "recipient ok"),
        }
    }

    async fn data(&mut self, envelope: &Envelope, body: Vec<u8>) -> DataReply {
        let id = unique();
        let prepared = prepare(&body, &self.received(envelope, &id), &self.shared.hostname);
        let binding = prepared
            .binding
            .clone()
            .unwrap_or_else(|| self.default_binding.clone());
        if !self.shared.binding_known(&binding) {
            Totals::rejected(Rejection::UnknownBinding);
            return DataReply::One(Reply::with_status(
                550,
                (5, 7, 1),
                format!("binding \"{binding}\" named by X-Binding is not configured"),
            ));
        }
        let incoming = Incoming {
            sender: envelope.mail_from.clone(),
            recipients: envelope.rcpt_to.clone(),
            binding,
            prepared,
            eight_bit: envelope.eight_bit,
            smtputf8: envelope.smtputf8,
        };
        let client = Client {
            ip: envelope.peer.ip(),
            tls: envelope.tls,
            protocol: "smtp",
        };
        let stored = match self.shared.receive(vec![incoming], client).await {
            Ok(mut stored) => match stored.pop() {
                Some(s) => s,
                None => return DataReply::One(try_later("spool closed")),
            },
            Err(NotStored::Full) => return DataReply::One(storage_full()),
            Err(NotStored::Failed(why)) => return DataReply::One(try_later(&why)),
        };
        DataReply::One(Reply::with_status(
            250,
            (2, 0, 0),
            format!("queued as {:x}", stored.message),
        ))
    }
}
