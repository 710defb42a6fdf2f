//! The injector: C concurrent SMTP sessions (postern-smtp's client,
//! pipelined), each sending its share of N messages of S bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use postern_smtp::client::{ClientSettings, Outcome, Session, Transaction};

use crate::world::{domain, host_ip};

/// Where messages go.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// One listener (the daemon, or another MTA).
    One(SocketAddr),
    /// Straight to the sink that hosts each message's domain.
    Direct {
        /// How many sink hosts.
        hosts: usize,
        /// Their common port.
        port: u16,
    },
}

/// What to send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) messages: usize,
    pub(crate) size: usize,
    pub(crate) sessions: usize,
    pub(crate) domains: usize,
    pub(crate) target: Target,
    /// Send with BDAT where CHUNKING is offered.
    pub(crate) chunking: bool,
}

/// One message's times.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent {
    pub(crate) number: usize,
    pub(crate) at: Instant,
    pub(crate) acked: Instant,
}

/// The message numbered `number` (its Message-ID `<number.bench>`) to
/// `to`, `size` bytes in all; the HTTP injector passes template
/// placeholders for both.
pub(crate) fn body(number: &str, size: usize, to: &str) -> Vec<u8> {
    let mut b = format!(
        "Message-ID: <{number}.bench>\r\nFrom: <bench@load.test>\r\nTo: <{to}>\r\nSubject: load {number}\r\n\r\n"
    )
    .into_bytes();
    while b.len() + 2 < size {
        let line = 76.min(size - b.len() - 2);
        b.extend(std::iter::repeat_n(b'x', line.saturating_sub(2)));
        b.extend_from_slice(b"\r\n");
    }
    b
}

fn settings(server: &str, chunking: bool) -> ClientSettings {
    let mut s = ClientSettings::new("injector.load.test", server);
    s.chunking = chunking;
    s.timeouts.connect = Duration::from_secs(10);
    s.timeouts.data = Duration::from_secs(120);
    s
}

async fn session(addr: SocketAddr, chunking: bool) -> Option<Session> {
    Session::connect(addr, &settings("target", chunking))
        .await
        .ok()
}

/// Sends message `number` on a session to `addr`, reconnecting once.
async fn send_one(
    slot: &mut Option<Session>,
    addr: SocketAddr,
    number: usize,
    plan: &Plan,
) -> bool {
    let to = format!("rcpt{number}@{}", domain(number, plan.domains));
    let recipients = [to];
    let body = body(&number.to_string(), plan.size, &recipients[0]);
    for _ in 0..2 {
        if slot.is_none() {
            *slot = session(addr, plan.chunking).await;
        }
        let Some(s) = slot.as_mut() else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let tx = Transaction {
            sender: "bench@load.test",
            recipients: &recipients,
            body: &body,
            eight_bit: false,
            smtputf8: false,
            xclient: None,
        };
        match s.send(&tx).await {
            Ok(outcomes) => return matches!(outcomes.first(), Some(Outcome::Delivered(_))),
            Err(_) => *slot = None,
        }
    }
    false
}

/// Runs the plan; `done` counts acknowledged messages as they come.
pub(crate) async fn run(plan: Plan, done: Arc<AtomicUsize>) -> (Vec<Sent>, usize) {
    let mut tasks = Vec::new();
    for t in 0..plan.sessions.max(1) {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut failed = 0usize;
            let mut slots: Vec<Option<Session>> = Vec::new();
            let mut number = t;
            while number < plan.messages {
                let (index, addr) = match plan.target {
                    Target::One(a) => (0, a),
                    Target::Direct { hosts, port } => {
                        let j = (number % plan.domains.max(1)) % hosts.max(1);
                        (j, SocketAddr::new(host_ip(j), port))
                    }
                };
                if slots.len() <= index {
                    slots.resize_with(index + 1, || None);
                }
                let at = Instant::now();
                let ok = match slots.get_mut(index) {
                    Some(slot) => send_one(slot, addr, number, &plan).await,
                    None => false,
                };
                if ok {
                    sent.push(Sent {
                        number,
                        at,
                        acked: Instant::now(),
                    });
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed += 1;
                }
                number += plan.sessions.max(1);
            }
            for s in slots.into_iter().flatten() {
                let _ = s.quit().await;
            }
            (sent, failed)
        }));
    }
    gather(tasks, plan.messages).await
}

/// Every client task's messages sent and failed, together.
pub(crate) async fn gather(
    tasks: Vec<tokio::task::JoinHandle<(Vec<Sent>, usize)>>,
    messages: usize,
) -> (Vec<Sent>, usize) {
    let mut all = Vec::with_capacity(messages);
    let mut failed = 0;
    for t in tasks {
        if let Ok((sent, f)) = t.await {
            all.extend(sent);
            failed += f;
        }
    }
    (all, failed)
}
