//! An authoritative DNS server for tests, on 127.0.0.1 over UDP and TCP.
//!
//! The server is authoritative for the root and every zone below it, so
//! any name the test did not add answers NXDOMAIN, as a real authoritative
//! server would. It runs on its own thread with its own tokio runtime, so
//! that tests of any kind (plain, tokio, actix) can use it, and stops when
//! dropped.
//!
//! Each name's last two labels make a zone of its own (`example.com` holds
//! `mx1.example.com` and `_mta-sts.example.com`). hickory's in-memory zone
//! looks at every name it holds to tell NXDOMAIN from NODATA, so with one
//! zone for 100,000 domains each negative answer cost 100,000 comparisons,
//! and the load harness measured its own DNS server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordSet, RrKey};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, ZoneType};
use tokio::sync::oneshot;

/// The TTL of records added without [`DnsServerBuilder::ttl`].
pub const DEFAULT_TTL: u32 = 300;

/// Builds the zone, then [`start`](DnsServerBuilder::start)s the server.
#[derive(Debug, Default)]
pub struct DnsServerBuilder {
    records: Vec<Record>,
    servfail: HashSet<String>,
    silent: HashSet<String>,
    ttl: Option<u32>,
}

fn name(s: &str) -> Name {
    let fqdn = if s.ends_with('.') {
        s.to_owned()
    } else {
        format!("{s}.")
    };
    // Test zones are written by the test itself; a bad name is a bug in it.
    #[allow(clippy::expect_used)]
    Name::from_str(&fqdn).expect("a valid DNS name in the test zone")
}

/// A TXT record's data, split into strings of at most 255 bytes.
fn txt_rdata(text: &str) -> RData {
    let strings = text
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    RData::TXT(TXT::new(strings))
}

fn key(s: &str) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsServerBuilder {
    /// The TTL for the records added after this call.
    pub fn ttl(mut self, seconds: u32) -> Self {
        self.ttl = Some(seconds);
        self
    }

    fn add(mut self, owner: &str, rdata: RData) -> Self {
        let ttl = self.ttl.unwrap_or(DEFAULT_TTL);
        self.records
            .push(Record::from_rdata(name(owner), ttl, rdata));
        self
    }

    /// `domain MX preference exchange`.
    pub fn mx(self, domain: &str, preference: u16, exchange: &str) -> Self {
        self.add(domain, RData::MX(MX::new(preference, name(exchange))))
    }

    /// `domain MX 0 .`: a Null MX (RFC 7505), "this domain takes no mail".
    pub fn null_mx(self, domain: &str) -> Self {
        self.add(domain, RData::MX(MX::new(0, Name::root())))
    }

    /// `host A address`.
    pub fn a(self, host: &str, address: Ipv4Addr) -> Self {
        self.add(host, RData::A(A(address)))
    }

    /// `host AAAA address`.
    pub fn aaaa(self, host: &str, address: Ipv6Addr) -> Self {
        self.add(host, RData::AAAA(AAAA(address)))
    }

    /// `A` or `AAAA`, whichever `address` is.
    pub fn addr(self, host: &str, address: IpAddr) -> Self {
        match address {
            IpAddr::V4(a) => self.a(host, a),
            IpAddr::V6(a) => self.aaaa(host, a),
        }
    }

    /// `alias CNAME target`.
    pub fn cname(self, alias: &str, target: &str) -> Self {
        self.add(alias, RData::CNAME(CNAME(name(target))))
    }

    /// `name TXT "text"`, split into strings of at most 255 bytes (a DKIM
    /// key record, an MTA-STS record).
    pub fn txt(self, name: &str, text: &str) -> Self {
        self.add(name, txt_rdata(text))
    }

    /// Every query for `name` is answered SERVFAIL.
    pub fn servfail(mut self, name: &str) -> Self {
        self.servfail.insert(key(name));
        self
    }

    /// Queries for `name` are never answered (the client times out).
    pub fn silent(mut self, name: &str) -> Self {
        self.silent.insert(key(name));
        self
    }

    /// Binds UDP and TCP on one port of 127.0.0.1 and starts serving.
    pub fn start(self) -> io::Result<DnsServer> {
        let mut by_apex: HashMap<LowerName, Vec<Record>> = HashMap::new();
        by_apex.insert(LowerName::from(Name::root()), Vec::new());
        for record in self.records {
            by_apex.entry(apex(&record.name)).or_default().push(record);
        }
        let mut catalog = Catalog::new();
        let mut zones = HashMap::new();
        for (origin, records) in by_apex {
            let zone = Arc::new(zone(Name::from(&origin), records)?);
            catalog.upsert(origin.clone(), vec![zone.clone()]);
            zones.insert(origin, zone);
        }
        let queries = Arc::new(Mutex::new(HashMap::new()));
        let handler = Handler {
            catalog,
            servfail: self.servfail,
            silent: self.silent,
            queries: queries.clone(),
        };
        let (udp, tcp) = bind_pair()?;
        let addr = udp.local_addr()?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("testkit-dns".into())
            .spawn(move || serve(handler, udp, tcp, stop_rx))?;
        Ok(DnsServer {
            addr,
            zones,
            queries,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

/// The zone a name belongs to: its last two labels, or the root for a name
/// of one label. A wildcard's `*` counts as a label (`*.a.test` belongs to
/// `a.test`), which `Name::num_labels` would not count.
fn apex(name: &Name) -> LowerName {
    LowerName::from(if name.iter().count() >= 2 {
        name.trim_to(2)
    } else {
        Name::root()
    })
}

/// A zone at `origin`, with an SOA whose minimum (the negative TTL) is 1 s.
fn zone(origin: Name, records: Vec<Record>) -> io::Result<InMemoryZoneHandler> {
    let soa = SOA::new(
        name("ns.test"),
        name("hostmaster.test"),
        1,
        3600,
        600,
        86400,
        1,
    );
    let mut sets: BTreeMap<RrKey, RecordSet> = BTreeMap::new();
    let soa = Record::from_rdata(origin.clone(), 1, RData::SOA(soa));
    for record in std::iter::once(soa).chain(records) {
        let k = RrKey::new(LowerName::from(&record.name), record.record_type());
        sets.entry(k)
            .or_insert_with(|| RecordSet::new(record.name.clone(), record.record_type(), 1))
            .insert(record, 1);
    }
    InMemoryZoneHandler::new(origin, sets, ZoneType::Primary, AxfrPolicy::Deny)
        .map_err(io::Error::other)
}

/// A UDP socket and a TCP listener on the same free port of 127.0.0.1.
fn bind_pair() -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        match std::net::TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port pair")))
}

fn serve(
    handler: Handler,
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    stop: oneshot::Receiver<()>,
) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        let mut server = Server::new(handler);
        server.register_socket(tokio::net::UdpSocket::from_std(udp)?);
        server.register_listener(
            tokio::net::TcpListener::from_std(tcp)?,
            Duration::from_secs(5),
            4096,
        );
        let _ = stop.await;
        server.shutdown_gracefully().await.map_err(io::Error::other)
    })
}

/// A running test DNS server; stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    /// Every zone by its origin (the root's among them).
    zones: HashMap<LowerName, Arc<InMemoryZoneHandler>>,
    queries: Arc<Mutex<HashMap<String, usize>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl DnsServer {
    /// A builder for the zone.
    pub fn builder() -> DnsServerBuilder {
        DnsServerBuilder::default()
    }

    /// The address (UDP and TCP) to configure as the nameserver.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces `name`'s TXT records with one record of `text` (TTL `ttl`):
    /// a record that changes while the test runs.
    pub fn replace_txt(&self, name: &str, text: &str, ttl: u32) -> io::Result<()> {
        let owner = self::name(name);
        let record = Record::from_rdata(owner.clone(), ttl, txt_rdata(text));
        let mut set = RecordSet::new(owner.clone(), record.record_type(), 1);
        set.insert(record, 1);
        let rrkey = RrKey::new(LowerName::from(&owner), set.record_type());
        // The zone that answers for the name: its own, or the root's when
        // nothing under its last two labels was added.
        let zone = self
            .zones
            .get(&apex(&owner))
            .or_else(|| self.zones.get(&LowerName::from(Name::root())))
            .cloned()
            .ok_or_else(|| io::Error::other("no root zone"))?;
        // On a thread of its own, so that a test on a runtime may call it.
        std::thread::scope(|s| {
            s.spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .map(|rt| {
                        rt.block_on(async move {
                            zone.records_mut().await.insert(rrkey, Arc::new(set));
                        });
                    })
            })
            .join()
            .map_err(|_| io::Error::other("the zone update panicked"))?
        })
    }

    /// How many queries (of any type) have named `name` so far.
    pub fn queries(&self, name: &str) -> usize {
        let map = self.queries.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&key(name)).copied().unwrap_or(0)
    }
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Handler {
    catalog: Catalog,
    servfail: HashSet<String>,
    silent: HashSet<String>,
    queries: Arc<Mutex<HashMap<String, usize>>>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let queried = request
            .request_info()
            .map(|info| key(&info.query.name().to_string()))
            .ok();
        if let Some(name) = &queried {
            let mut map = self.queries.lock().unwrap_or_else(PoisonError::into_inner);
            *map.entry(name.clone()).or_insert(0) += 1;
        }
        let failure = match &queried {
            Some(n) if self.silent.contains(n) => return failed(request),
            Some(n) if self.servfail.contains(n) => Some(ResponseCode::ServFail),
            _ => None,
        };
        if let Some(code) = failure {
            let response = MessageResponseBuilder::new(&request.queries, None)
                .error_msg(&request.metadata, code);
            return match response_handle.send_response(response).await {
                Ok(info) => info,
                Err(_) => failed(request),
            };
        }
        self.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// The record of a request that got no answer.
fn failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}
