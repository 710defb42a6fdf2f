//! An HTTPS server for MTA-STS policies (RFC 8461 3.3): hyper over
//! tokio-rustls on port 443 of a loopback address, serving
//! `/.well-known/mta-sts.txt` and counting the requests for it.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

/// The path of the policy file.
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";

/// What the server answers for the policy path.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// A running policy server; stops when dropped.
#[derive(Debug)]
pub struct PolicyServer {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl PolicyServer {
    /// Serves `policy` as `text/plain` on `ip`, port 443, with the
    /// certificate of `tls` (issued for `mta-sts.DOMAIN`).
    pub fn start(ip: IpAddr, tls: Arc<rustls::ServerConfig>, policy: &str) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(SocketAddr::new(ip, 443))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let answer = Arc::new(Mutex::new(Answer {
            status: 200,
            content_type: "text/plain".into(),
            body: policy.to_owned(),
        }));
        let requests = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop_rx) = oneshot::channel();
        let shared = (answer.clone(), requests.clone());
        let thread = std::thread::Builder::new()
            .name("testkit-policy".into())
            .spawn(move || serve(listener, TlsAcceptor::from(tls), shared, stop_rx))?;
        Ok(Self {
            addr,
            answer,
            requests,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests for the policy so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Serves another policy from now on.
    pub fn set_policy(&self, policy: &str) {
        let mut answer = self.answer.lock().unwrap_or_else(PoisonError::into_inner);
        policy.clone_into(&mut answer.body);
    }

    /// Answers the policy path with `status` (a 404, a redirect) from now
    /// on.
    pub fn set_status(&self, status: u16) {
        self.answer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .status = status;
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Shared = (Arc<Mutex<Answer>>, Arc<AtomicUsize>);

fn serve(
    listener: std::net::TcpListener,
    acceptor: TlsAcceptor,
    shared: Shared,
    mut stop: oneshot::Receiver<()>,
) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        loop {
            let tcp = tokio::select! {
                _ = &mut stop => return,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(_) => continue,
                },
            };
            let acceptor = acceptor.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req| respond(req, shared.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
}

async fn respond(
    req: Request<Incoming>,
    shared: Shared,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (answer, requests) = shared;
    if req.uri().path() != POLICY_PATH {
        return Ok(status_only(StatusCode::NOT_FOUND));
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let answer = answer
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Full::new(Bytes::from(answer.body)));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(&answer.content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    if status.is_redirection() {
        response.headers_mut().insert(
            header::LOCATION,
            header::HeaderValue::from_static("https://elsewhere.test/"),
        );
    }
    Ok(response)
}

fn status_only(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
