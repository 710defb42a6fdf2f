//! The HTTP injection listener (`HTTP_Listener`), on axum: who may inject
//! (`Relay_Hosts`, and the bearer token of `Auth_Token_File`), the request
//! size (`Max_Message_Size`, 413 beyond), then `inject.rs` reads the
//! request and `reception.rs` stores every message of it in one write
//! before the 200.

mod inject;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ipnet::IpNet;
use postern_conf::{Config, Directive, Listener, Value};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::inject::{BadRequest, Request};
use super::inbound::{prepare, received, unique};
use super::listener::Shared;
use super::reception::{Client, Incoming, NotStored, Refused};
use super::stats::{Rejection, Totals};

/// One `Listen` address of the HTTP listener, bound.
pub(crate) struct Bound {
    socket: TcpListener,
    place: Arc<Place>,
}

/// What requests to one address are checked against.
struct Place {
    shared: Arc<Shared>,
    relay_hosts: Vec<IpNet>,
    token: Option<String>,
    default_binding: String,
    /// `Max_Message_Size`: the largest request body.
    limit: usize,
}

/// The bearer token of `Auth_Token_File`, if set: the file's content,
/// surrounding whitespace trimmed.
pub(crate) fn token(listener: &Listener) -> Result<Option<String>, String> {
    match listener
        .options
        .get(Directive::AuthTokenFile)
        .map(|s| &s.value)
    {
        Some(Value::Path(path)) => std::fs::read_to_string(path)
            .map(|t| Some(t.trim().to_owned()))
            .map_err(|e| format!("Auth_Token_File {}: {e}", path.display())),
        _ => Ok(None),
    }
}

/// Binds every address of the `HTTP_Listener` (so that a bad one fails the
/// start).
pub(crate) async fn bind(config: &Config, shared: &Arc<Shared>) -> Result<Vec<Bound>, String> {
    let Some(listener) = &config.http_listener else {
        return Ok(Vec::new());
    };
    let token = token(listener)?;
    let mut bound = Vec::new();
    for listen in &listener.listens {
        let socket = TcpListener::bind(listen.addr)
            .await
            .map_err(|e| format!("HTTP_Listener {}: {e}", listen.addr))?;
        let limit = match listener.option(listen, Directive::MaxMessageSize) {
            Some(Value::Size(n)) => usize::try_from(n).unwrap_or(usize::MAX),
            _ => 25 << 20,
        };
        let place = Place {
            shared: shared.clone(),
            relay_hosts: match listener.option(listen, Directive::RelayHosts) {
                Some(Value::Cidrs(nets)) => nets,
                _ => Vec::new(),
            },
            token: token.clone(),
            default_binding: match listener.option(listen, Directive::DefaultBinding) {
                Some(Value::Text(b)) => b,
                _ => "default".into(),
            },
            limit,
        };
        bound.push(Bound {
            socket,
            place: Arc::new(place),
        });
    }
    Ok(bound)
}

impl Bound {
    /// Where it listens.
    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }

    /// Serves until `stop` turns true; requests in flight finish.
    pub(crate) async fn serve(self, mut stop: watch::Receiver<bool>) {
        let limit = self.place.limit;
        let app = Router::new()
            .route("/api/inject/v1", post(inject))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(self.place);
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(self.socket, service)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "HTTP listener stopped");
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// Who may inject: a `Relay_Hosts` client (else 403), with the token
/// when one is set (401 without, 403 with another). The refusal, if any.
fn refusal(place: &Place, peer: SocketAddr, headers: &HeaderMap) -> Option<Response> {
    if !place.relay_hosts.iter().any(|n| n.contains(&peer.ip())) {
        Totals::rejected(Rejection::RelayingDenied);
        return Some(error(
            StatusCode::FORBIDDEN,
            format!("{} is not in Relay_Hosts", peer.ip()),
        ));
    }
    let (status, why) = bearer(headers, place.token.as_deref()?).err()?;
    let mut refused = error(status, why);
    if status == StatusCode::UNAUTHORIZED {
        let challenge = header::HeaderValue::from_static("Bearer");
        refused
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
    }
    Some(refused)
}

/// The request's `Authorization: Bearer` against `token`: 401 without
/// one, 403 with another (injection and the admin API's control
/// endpoints alike).
pub(crate) fn bearer(headers: &HeaderMap, token: &str) -> Result<(), (StatusCode, &'static str)> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Err((
            StatusCode::UNAUTHORIZED,
            "Authorization: Bearer TOKEN is required",
        )),
        Some(t) if t.trim() == token => Ok(()),
        Some(_) => Err((StatusCode::FORBIDDEN, "the token is not valid")),
    }
}

fn bad_request(b: BadRequest) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(b)).into_response()
}

async fn inject(
    State(place): State<Arc<Place>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refusal(&place, peer, &headers) {
        return refused;
    }
    let mut reader = serde_json::Deserializer::from_slice(&body);
    let request: Request = match serde_path_to_error::deserialize(&mut reader) {
        Ok(r) => r,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let field = match path.as_str() {
                "." => inner
                    .to_string()
                    .split('`')
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned(),
                p => p.to_owned(),
            };
            return bad_request(BadRequest {
                error: inner.to_string(),
                field,
            });
        }
    };
    let renderer = match request.renderer() {
        Ok(r) => r,
        Err(b) => return bad_request(b),
    };
    match place.shared.admit_mail().await {
        Ok(()) => {}
        Err(Refused::Behind) => {
            return unavailable("too much mail waiting for delivery, try again later");
        }
        Err(Refused::Full) => return unavailable("insufficient system storage, try again later"),
    }
    let shared = &place.shared;
    let peer_ip = peer.ip().to_string();
    let mut messages = Vec::with_capacity(request.recipients.len());
    let mut failed_recipients = Vec::new();
    let mut errors = Vec::new();
    let mut discarded = 0;
    for r in &request.recipients {
        let id = unique();
        let message_id = format!("<{id}@{}>", shared.hostname);
        let rendered = match renderer.render(r, &message_id) {
            Ok(b) => b,
            Err(e) => {
                failed_recipients.push(r.email.clone());
                errors.push(format!("{}: {e}", r.email));
                continue;
            }
        };
        let received = received(&[&peer_ip, " "], &shared.hostname, "HTTP", &id);
        let prepared = prepare(&rendered, &received, &shared.hostname);
        let binding = request
            .binding
            .clone()
            .or_else(|| prepared.binding.clone())
            .unwrap_or_else(|| place.default_binding.clone());
        if !shared.binding_known(&binding) {
            Totals::rejected(Rejection::UnknownBinding);
            return bad_request(BadRequest {
                error: format!("binding \"{binding}\" is not configured"),
                field: "binding".into(),
            });
        }
        let smtputf8 = !request.envelope_sender.is_ascii() || !r.email.is_ascii();
        let mut incoming = Incoming {
            sender: request.envelope_sender.clone(),
            recipients: vec![r.email.clone()],
            binding,
            eight_bit: !prepared.body.is_ascii(),
            smtputf8,
            prepared,
            origin: None,
            scan: None,
        };
        // Injected mail is submitted mail: `Submission_Milters` apply.
        let helo = format!("[{}]", peer.ip());
        match shared.scan(&mut incoming, peer, &helo, true, &id).await {
            Ok(()) => messages.push(incoming),
            Err(reply) if reply.is_positive() => discarded += 1,
            Err(reply) => {
                failed_recipients.push(r.email.clone());
                errors.push(format!("{}: {reply}", r.email));
            }
        }
    }
    let client = Client {
        ip: peer.ip(),
        tls: false,
        protocol: "http",
    };
    let success_count = messages.len() + discarded;
    if !messages.is_empty() {
        match shared.receive(messages, client).await {
            Ok(_) => {}
            Err(NotStored::Full) => {
                return unavailable("insufficient system storage, try again later");
            }
            Err(NotStored::Failed(why)) => return unavailable(format!("{why}, try again later")),
        }
    }
    let fail_count = failed_recipients.len();
    let answer = inject::Response {
        success_count,
        fail_count,
        failed_recipients,
        errors,
    };
    (StatusCode::OK, axum::Json(answer)).into_response()
}

/// 503: nothing of the request was stored.
fn unavailable(message: impl Into<String>) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        axum::Json(json!({ "error": message.into() })),
    )
        .into_response()
}
