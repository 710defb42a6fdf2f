//! The connection actor: one outbound SMTP/LMTP session on a delivery
//! event loop. It connects, then asks the scheduler for work and delivers
//! it until the scheduler has nothing it may carry, the session has made
//! `Max_Deliveries_Per_Connection` deliveries, or the session breaks.
//! Every connection ends with exactly one [`Ended`] message.

use std::net::SocketAddr;

use actix::prelude::*;
use postern_smtp::Reply;
use postern_smtp::client::{ClientSettings, Session, Transaction};

use crate::message::Batch;
use crate::scheduler::Scheduler;

/// A connection's number, unique in the engine.
pub(crate) type ConnId = u64;

/// The session is open.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Connected {
    pub(crate) id: ConnId,
}

/// Asks for the next batch; `None` means close.
#[derive(Message)]
#[rtype(result = "Option<Batch>")]
pub(crate) struct WantWork {
    pub(crate) id: ConnId,
}

/// A transaction ended with these outcomes, one per recipient.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Done {
    pub(crate) id: ConnId,
    pub(crate) batch: Batch,
    pub(crate) outcomes: Vec<postern_smtp::client::Outcome>,
}

/// How a connection ended.
#[derive(Debug)]
pub(crate) enum End {
    /// It never got to carry mail: connect, TLS, greeting, EHLO or AUTH
    /// failed. The reply stands for the failure.
    Failed(Reply),
    /// It could not even be opened for lack of a local resource (file
    /// descriptors, ports): the host is not at fault.
    Starved,
    /// The session broke while carrying `batch`.
    Broken(Batch, Reply),
    /// A reused session turned out to be closed by the server (it timed
    /// out while idle): `batch` was not attempted.
    Stale(Batch),
    /// It closed normally (QUIT).
    Closed,
}

/// The connection is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Ended {
    pub(crate) id: ConnId,
    pub(crate) end: End,
}

/// One outbound session.
pub(crate) struct Connection {
    pub(crate) id: ConnId,
    pub(crate) addr: SocketAddr,
    pub(crate) settings: ClientSettings,
    pub(crate) scheduler: Addr<Scheduler>,
    /// `Max_Deliveries_Per_Connection`; 0 is unlimited.
    pub(crate) max_deliveries: u64,
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let run = run(
            self.id,
            self.addr,
            self.settings.clone(),
            self.scheduler.clone(),
            self.max_deliveries,
        );
        ctx.spawn(run.into_actor(self).map(|(), _, ctx| ctx.stop()));
    }
}

async fn run(
    id: ConnId,
    addr: SocketAddr,
    settings: ClientSettings,
    scheduler: Addr<Scheduler>,
    max_deliveries: u64,
) {
    let mut session = match Session::connect(addr, &settings).await {
        Ok(s) => s,
        Err(e) => {
            let end = if e.is_local_resource() {
                End::Starved
            } else {
                End::Failed(e.reply())
            };
            scheduler.do_send(Ended { id, end });
            return;
        }
    };
    scheduler.do_send(Connected { id });
    let mut sent = 0u64;
    while max_deliveries == 0 || sent < max_deliveries {
        let Ok(Some(batch)) = scheduler.send(WantWork { id }).await else {
            break;
        };
        let tx = Transaction {
            sender: &batch.message.sender,
            recipients: &batch.recipients,
            body: &batch.message.body,
            eight_bit: batch.message.eight_bit,
            smtputf8: batch.message.smtputf8,
        };
        let started = std::time::Instant::now();
        let sent_result = session.send(&tx).await;
        metrics::histogram!(postern_metrics::TRANSACTION).record(started.elapsed().as_secs_f64());
        match sent_result {
            Ok(outcomes) => scheduler.do_send(Done {
                id,
                batch,
                outcomes,
            }),
            Err(e) => {
                let end = if sent > 0 && e.phase() == Some(postern_smtp::client::Phase::Rset) {
                    End::Stale(batch)
                } else {
                    End::Broken(batch, e.reply())
                };
                scheduler.do_send(Ended { id, end });
                return;
            }
        }
        sent += 1;
    }
    let _ = session.quit().await;
    scheduler.do_send(Ended {
        id,
        end: End::Closed,
    });
}
