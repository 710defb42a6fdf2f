//! The connection actor: one outbound SMTP/LMTP session on a delivery
//! event loop, in its MX host's pool. It connects, then asks its host for
//! work (with the outcomes of its last write) and delivers what it gets,
//! of any domain routed to the host, up to `Outbound_Messages_Per_Write`
//! batches a write, until the host has nothing for it, the session has
//! made `Max_Deliveries_Per_Connection` deliveries, or the session breaks.
//!
//! It reports to its host through its loop's [`Relay`], in order: the
//! session opened, each request for work (with the last write's
//! outcomes), and its end (with the batches behind the one it broke on).
//! A [`Guard`] holds the connection's batches while they are out and
//! sends the one end report when dropped, so that whatever ends the actor
//! (a panic included) gives its slot and its batches back.

mod failure;
mod relay;

pub(crate) use self::relay::Relay;

use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;
use postern_smtp::Reply;
use postern_smtp::client::{ClientSettings, Outcome, Session, SessionError, Transaction};
use tokio::sync::oneshot;

use self::failure::{broken, refused};
use crate::ids::ConnId;
use crate::message::{Batch, BodyError};
use crate::messages::{Behind, End, Finished, Report, WantWork};

/// One outbound session.
pub(crate) struct Connection {
    pub(crate) id: ConnId,
    pub(crate) addr: SocketAddr,
    pub(crate) settings: Arc<ClientSettings>,
    /// Its delivery loop's relay to the scheduler.
    pub(crate) relay: Recipient<Report>,
    /// `Max_Deliveries_Per_Connection`; 0 is unlimited.
    pub(crate) max_deliveries: u64,
    /// `Outbound_Messages_Per_Write`: batches asked for at once.
    pub(crate) per_write: usize,
    /// Test hook: panic on a batch for this recipient.
    pub(crate) panic_on: Option<Arc<str>>,
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let guard = Guard {
            id: self.id,
            relay: self.relay.clone(),
            carried: Vec::new(),
            finished: Vec::new(),
            end: None,
        };
        let run = run(
            guard,
            self.addr,
            self.settings.clone(),
            (self.max_deliveries, self.per_write),
            self.panic_on.clone(),
        );
        ctx.spawn(run.into_actor(self).map(|(), _, ctx| ctx.stop()));
    }
}

/// Gives the slot and the batches back, whatever ends the connection.
struct Guard {
    id: ConnId,
    relay: Recipient<Report>,
    /// The batches being carried, in the order they go.
    carried: Vec<Batch>,
    /// Outcomes not reported yet.
    finished: Vec<Finished>,
    /// How it ended, when it ended as planned, and the batches behind.
    end: Option<(End, Vec<Behind>)>,
}

impl Guard {
    fn end(mut self, end: End) {
        self.end = Some((end, Vec::new()));
    }

    /// Asks for up to `room` batches (none when `closing`), with the
    /// outcomes not reported yet.
    fn want(&mut self, closing: bool, room: usize) -> oneshot::Receiver<Vec<Batch>> {
        let (answer, next) = oneshot::channel();
        self.relay.do_send(Report::Want(WantWork {
            id: self.id,
            finished: std::mem::take(&mut self.finished),
            closing,
            room,
            answer,
        }));
        next
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.finished.is_empty() {
            self.want(true, 1);
        }
        let (end, behind) = self
            .end
            .take()
            .unwrap_or_else(|| (End::Lost(std::mem::take(&mut self.carried)), Vec::new()));
        self.relay.do_send(Report::Ended(self.id, end, behind));
    }
}

async fn run(
    mut guard: Guard,
    addr: SocketAddr,
    settings: Arc<ClientSettings>,
    (max_deliveries, per_write): (u64, usize),
    panic_on: Option<Arc<str>>,
) {
    let mut session = match Session::connect(addr, &settings).await {
        Ok(s) => s,
        Err(e) => return guard.end(refused(&e)),
    };
    guard.relay.do_send(Report::Connected(guard.id));
    let tls_problem: Option<Arc<str>> = session.tls_check().map(|why| {
        tracing::warn!(host = %settings.server_name, %addr, problem = %why, "MTA-STS testing: an enforced policy would refuse this session");
        metrics::counter!(postern_metrics::MTA_STS_POLICY_FAILURES, "mode" => "testing").increment(1);
        Arc::from(why)
    });
    let mut sent = 0u64;
    loop {
        let left = match max_deliveries {
            0 => u64::MAX,
            max => max.saturating_sub(sent),
        };
        let room = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .clamp(1, per_write.max(1));
        let next = guard.want(left == 0, room);
        guard.carried = match next.await {
            Ok(batches) if !batches.is_empty() && left > 0 => batches,
            _ => break,
        };
        if let Some(r) = &panic_on
            && guard
                .carried
                .iter()
                .flat_map(|b| &b.recipients)
                .any(|x| **x == **r)
        {
            #[allow(clippy::panic)]
            {
                panic!("test hook: a connection panics while carrying a batch");
            }
        }
        let mut bodies = Vec::with_capacity(guard.carried.len());
        for batch in &guard.carried {
            bodies.push(batch.message.body.load(batch.message.queue_id).await);
        }
        let mut batches = Vec::with_capacity(bodies.len());
        let mut loaded = Vec::with_capacity(bodies.len());
        for (batch, body) in std::mem::take(&mut guard.carried).into_iter().zip(bodies) {
            match body {
                Ok(body) => {
                    batches.push(batch);
                    loaded.push(body);
                }
                Err(e) => guard.finished.push(unreadable(batch, &e)),
            }
        }
        if batches.is_empty() {
            continue;
        }
        guard.carried = batches;
        let txs: Vec<Transaction<'_>> = guard
            .carried
            .iter()
            .zip(&loaded)
            .map(|(batch, body)| Transaction {
                sender: &batch.message.sender,
                recipients: &batch.recipients,
                body,
                eight_bit: batch.message.eight_bit,
                smtputf8: batch.message.smtputf8,
                xclient: batch.message.client.as_deref(),
            })
            .collect();
        let started = std::time::Instant::now();
        let result = session.send_many(&txs).await;
        drop(txs);
        metrics::histogram!(postern_metrics::TRANSACTION).record(started.elapsed().as_secs_f64());
        let done = result.outcomes.len();
        sent += done as u64;
        let mut completed = std::mem::take(&mut guard.carried);
        let mut rest = completed.split_off(done.min(completed.len())).into_iter();
        for (batch, outcomes) in completed.into_iter().zip(result.outcomes) {
            guard.finished.push(Finished {
                batch,
                outcomes,
                tls_problem: tls_problem.clone(),
            });
        }
        let Some(e) = result.broke else {
            continue;
        };
        // What completed is reported first (as the guard drops); then
        // the session's end.
        let Some(batch) = rest.next() else {
            return guard.end(End::Closed);
        };
        if let SessionError::OtherClient(why) = &e {
            // The session is whole, only unfit for this message's client.
            tracing::info!(host = %settings.server_name, %addr, %why, "a message goes on a new connection: this one speaks for another client");
            let _ = session.quit().await;
        }
        let end = broken(e, batch, sent > 0);
        let behind = rest
            .enumerate()
            .map(|(i, batch)| Behind {
                batch,
                written: done + 1 + i < result.written,
            })
            .collect();
        guard.end = Some((end, behind));
        return;
    }
    let _ = session.quit().await;
    guard.end(End::Closed);
}

/// A batch whose body could not be read: its recipients fail for good
/// when the body is lost, or for now when reading failed.
fn unreadable(batch: Batch, e: &BodyError) -> Finished {
    let outcome = match e {
        BodyError::Lost(why) => Outcome::Permanent(Reply::with_status(
            554,
            (5, 3, 0),
            format!("message lost from the spool: {why}"),
        )),
        BodyError::Unavailable(why) => Outcome::Transient(Reply::with_status(
            451,
            (4, 3, 0),
            format!("message not readable from the spool: {why}"),
        )),
    };
    let outcomes = vec![outcome; batch.recipients.len()];
    Finished {
        batch,
        outcomes,
        tls_problem: None,
    }
}
