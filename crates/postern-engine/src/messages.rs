//! The messages between the engine's actors: what the daemon sends the
//! scheduler, and what a connection tells its MX host (through its
//! delivery loop's relay, then the scheduler, which keeps every host and
//! domain on one consistent view).

use std::sync::Arc;

use actix::prelude::*;
use postern_smtp::Reply;
use postern_smtp::client::Outcome;
use tokio::sync::oneshot;

use crate::ids::ConnId;
use crate::message::{Batch, QueuedMessage};

/// Messages for the engine, in order.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Submit(pub(crate) Vec<QueuedMessage>);

/// A transaction's outcomes, one per recipient of its batch.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) batch: Batch,
    pub(crate) outcomes: Vec<Outcome>,
    /// Why the session's TLS would fail an enforced MTA-STS policy (the
    /// host is under a `testing` one).
    pub(crate) tls_problem: Option<Arc<str>>,
}

/// Where a connection's next batches go: none means close.
pub(crate) type AnswerTo = oneshot::Sender<Vec<Batch>>;

/// An answer on its way: where it goes, and the batches (none: close).
pub(crate) type Answer = (AnswerTo, Vec<Batch>);

/// "These are my outcomes (if any); give me the next batches."
#[derive(Debug)]
pub(crate) struct WantWork {
    pub(crate) id: ConnId,
    /// The last batches' outcomes, in the order they were sent.
    pub(crate) finished: Vec<Finished>,
    /// The connection closes after this: no batch may be given.
    pub(crate) closing: bool,
    /// How many batches it may take at once (at least one): they go in
    /// one write (`Outbound_Messages_Per_Write`).
    pub(crate) room: usize,
    pub(crate) answer: AnswerTo,
}

/// Which hosts a failure to set a session up concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blame {
    /// The address from this source: connect failures, timeouts, a
    /// refused greeting. Every profile of the address is skipped.
    Address,
    /// This host's profile only: TLS, AUTH, EHLO refused. Other routes to
    /// the same address go on.
    Profile,
}

/// How a connection ended.
#[derive(Debug)]
pub(crate) enum End {
    /// It closed normally (QUIT), or was told to.
    Closed,
    /// It never got to carry mail: connect, greeting, TLS, EHLO or AUTH
    /// failed. `answered` when the server refused with a reply (which may
    /// ask to slow down rather than say the host is broken).
    Refused {
        reply: Reply,
        blame: Blame,
        answered: bool,
    },
    /// It could not be opened for lack of a local resource (descriptors,
    /// ports): the host is not at fault.
    Starved,
    /// The server ended the session with a reply (a 421) while the batch
    /// was out.
    Rejected { batch: Batch, reply: Reply },
    /// A reused session turned out to be closed by the server (it timed
    /// out while idle), or to speak for another client than the batch's
    /// (XCLIENT not taken): the batch was not attempted.
    Stale(Batch),
    /// The session broke while carrying the batch. After the final dot
    /// the message may have arrived; `host_down` when the host stopped
    /// answering (a timeout).
    Broken {
        batch: Batch,
        reply: Reply,
        after_dot: bool,
        host_down: bool,
    },
    /// The actor stopped without saying how (a panic): the batches it
    /// carried come back from its guard.
    Lost(Vec<Batch>),
}

/// A batch that went in the same write as the one whose session broke,
/// and behind it: it has no outcome.
#[derive(Debug)]
pub(crate) struct Behind {
    pub(crate) batch: Batch,
    /// Its whole message reached the server, which may have delivered it.
    pub(crate) written: bool,
}

/// What a connection tells its MX host, in order, through the relay of
/// its delivery loop.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) enum Report {
    /// The session is open.
    Connected(ConnId),
    Want(WantWork),
    /// The connection is gone; sent exactly once per connection, by its
    /// guard, with the batches behind the one it ended with.
    Ended(ConnId, End, Vec<Behind>),
}

/// The reports a delivery loop's relay gathered over one turn of the
/// loop: one wake-up of the control loop for all of them.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Reports(pub(crate) Vec<Report>);

/// The scheduler's answers to one delivery loop's connections, gathered
/// over one turn of the control loop.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Answers(pub(crate) Vec<Answer>);

/// Batches whose connection was gone when its answer came: back to their
/// domains.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Returned(pub(crate) Vec<Batch>);
