//! The connection actor: one outbound SMTP/LMTP session on a delivery
//! event loop, in its MX host's pool. It connects, then asks its host for
//! work (with the outcomes of the last batch) and delivers what it gets,
//! of any domain routed to the host, until the host has nothing for it,
//! the session has made `Max_Deliveries_Per_Connection` deliveries, or the
//! session breaks.
//!
//! It reports to its host through its loop's [`Relay`], in order: the
//! session opened, each request for work (with the last batch's
//! outcomes), and its end. A [`Guard`] holds the connection's batch while
//! it is out and sends the one end report when dropped, so that whatever
//! ends the actor (a panic included) gives its slot and its batch back.

mod failure;
mod relay;

pub(crate) use self::relay::Relay;

use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;
use postern_smtp::Reply;
use postern_smtp::client::{ClientSettings, Outcome, Session, Transaction};
use tokio::sync::oneshot;

use self::failure::{broken, refused};
use crate::ids::ConnId;
use crate::message::{Batch, BodyError};
use crate::messages::{End, Finished, Report, WantWork};

/// One outbound session.
pub(crate) struct Connection {
    pub(crate) id: ConnId,
    pub(crate) addr: SocketAddr,
    pub(crate) settings: Arc<ClientSettings>,
    /// Its delivery loop's relay to the scheduler.
    pub(crate) relay: Recipient<Report>,
    /// `Max_Deliveries_Per_Connection`; 0 is unlimited.
    pub(crate) max_deliveries: u64,
    /// Test hook: panic on a batch for this recipient.
    pub(crate) panic_on: Option<Arc<str>>,
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let guard = Guard {
            id: self.id,
            relay: self.relay.clone(),
            batch: None,
            end: None,
        };
        let run = run(
            guard,
            self.addr,
            self.settings.clone(),
            self.max_deliveries,
            self.panic_on.clone(),
        );
        ctx.spawn(run.into_actor(self).map(|(), _, ctx| ctx.stop()));
    }
}

/// Gives the slot and the batch back, whatever ends the connection.
struct Guard {
    id: ConnId,
    relay: Recipient<Report>,
    /// The batch being carried.
    batch: Option<Batch>,
    /// How it ended, when it ended as planned.
    end: Option<End>,
}

impl Guard {
    fn end(mut self, end: End) {
        self.end = Some(end);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let end = self
            .end
            .take()
            .unwrap_or_else(|| End::Lost(self.batch.take()));
        self.relay.do_send(Report::Ended(self.id, end));
    }
}

async fn run(
    mut guard: Guard,
    addr: SocketAddr,
    settings: Arc<ClientSettings>,
    max_deliveries: u64,
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
    let mut finished = None;
    loop {
        let closing = max_deliveries != 0 && sent >= max_deliveries;
        let (answer, next) = oneshot::channel();
        guard.relay.do_send(Report::Want(WantWork {
            id: guard.id,
            finished: finished.take(),
            closing,
            answer,
        }));
        let (Ok(Some(batch)), false) = (next.await, closing) else {
            break;
        };
        if let Some(r) = &panic_on
            && batch.recipients.iter().any(|x| **x == **r)
        {
            guard.batch = Some(batch);
            #[allow(clippy::panic)]
            {
                panic!("test hook: a connection panics while carrying a batch");
            }
        }
        let body = match batch.message.body.load(batch.message.queue_id).await {
            Ok(body) => body,
            Err(e) => {
                finished = Some(unreadable(batch, &e));
                continue;
            }
        };
        let batch = guard.batch.insert(batch);
        let tx = Transaction {
            sender: &batch.message.sender,
            recipients: &batch.recipients,
            body: &body,
            eight_bit: batch.message.eight_bit,
            smtputf8: batch.message.smtputf8,
            xclient: batch.message.client.as_deref(),
        };
        let started = std::time::Instant::now();
        let result = session.send(&tx).await;
        metrics::histogram!(postern_metrics::TRANSACTION).record(started.elapsed().as_secs_f64());
        let Some(batch) = guard.batch.take() else {
            return;
        };
        match result {
            Ok(outcomes) => {
                finished = Some(Finished {
                    batch,
                    outcomes,
                    tls_problem: tls_problem.clone(),
                });
            }
            Err(e) => return guard.end(broken(e, batch, sent > 0)),
        }
        sent += 1;
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
