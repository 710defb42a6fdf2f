//! The HTTP injector: C concurrent keep-alive connections (hyper), each
//! posting its share of N messages to `/api/inject/v1` in requests of B
//! recipients. The content is one raw message of S bytes whose
//! `Message-ID` and `To:` come from each recipient's substitutions, so
//! that every delivered message can be traced to its request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use serde_json::{Value, json};

use crate::inject::{Plan, Sent, body};
use crate::world::domain;

/// The request for messages `first..first + count`.
fn request(first: usize, count: usize, plan: &Plan) -> Value {
    let recipients: Vec<Value> = (first..first + count)
        .map(|n| {
            let to = format!("rcpt{n}@{}", domain(n, plan.domains));
            json!({"email": to, "substitutions": {"n": n, "to": to}})
        })
        .collect();
    let content = String::from_utf8_lossy(&body("{{ n }}", plan.size, "{{ to }}")).into_owned();
    json!({"envelope_sender": "bench@load.test", "recipients": recipients, "content": content})
}

async fn connect(addr: SocketAddr) -> Option<SendRequest<Full<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// Posts one request; how many of its messages were taken.
async fn post(
    sender: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    body: &Value,
) -> Option<usize> {
    let request = hyper::Request::post("/api/inject/v1")
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .ok()?;
    let answer = sender.send_request(request).await.ok()?;
    let ok = answer.status().is_success();
    let bytes = answer.into_body().collect().await.ok()?.to_bytes();
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let taken = v.get("success_count")?.as_u64()?;
    ok.then_some(usize::try_from(taken).ok()?)
}

/// Runs the plan over HTTP in requests of `batch` recipients; `done`
/// counts acknowledged messages as they come.
pub(crate) async fn run(
    plan: Plan,
    addr: SocketAddr,
    batch: usize,
    done: Arc<AtomicUsize>,
) -> (Vec<Sent>, usize) {
    let batch = batch.max(1);
    let requests = plan.messages.div_ceil(batch);
    let mut tasks = Vec::new();
    for t in 0..plan.sessions.max(1) {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut failed = 0usize;
            let mut sender = None;
            let mut k = t;
            while k < requests {
                let first = k * batch;
                let count = batch.min(plan.messages - first);
                let body = request(first, count, &plan);
                let at = Instant::now();
                if sender.is_none() {
                    sender = connect(addr).await;
                }
                let taken = match sender.as_mut() {
                    Some(s) => post(s, addr, &body).await,
                    None => None,
                };
                match taken {
                    Some(n) if n == count => {
                        let acked = Instant::now();
                        sent.extend((first..first + count).map(|number| Sent {
                            number,
                            at,
                            acked,
                        }));
                        done.fetch_add(count, Ordering::Relaxed);
                    }
                    _ => {
                        sender = None;
                        failed += count;
                    }
                }
                k += plan.sessions.max(1);
            }
            (sent, failed)
        }));
    }
    crate::inject::gather(tasks, plan.messages).await
}
