//! What the daemon hands the engine, and what the engine hands back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::BoxFuture;

use postern_conf::ReplyClass;
use postern_dns::mta_sts::MtaSts;
use postern_smtp::Reply;
use postern_smtp::client::Outcome;
use postern_smtp::xclient::Xclient;

use crate::ids::DomainId;

/// A message queued for one (binding, domain): its recipients there, and
/// the body it shares with the message's other queues.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// The spool's id for this entry.
    pub id: u64,
    /// The spool's id for the whole message (the log's `queue_id`).
    pub queue_id: u64,
    /// The `Message-ID` header, for the log.
    pub message_id: Box<str>,
    /// The binding (`default` when none was assigned). Once queued, the
    /// queue's own copy: one per queue, not one per message.
    pub binding: Arc<str>,
    /// The destination domain, lower-case; shared like the binding.
    pub domain: Arc<str>,
    /// The envelope sender; empty for `<>`.
    pub sender: Box<str>,
    /// The recipients at `domain`. Once queued, they live in the engine's
    /// batches: the message a [`Report`] carries has none left (the
    /// report names its recipient).
    pub recipients: Vec<String>,
    /// Headers and body, CRLF line endings, not dot-stuffed: in memory,
    /// or read back from the spool when a connection takes the batch.
    pub body: Body,
    /// The body has 8-bit content.
    pub eight_bit: bool,
    /// An address needs SMTPUTF8.
    pub smtputf8: bool,
    /// Delivery attempts already made (from the spool, after a restart).
    pub attempts: u32,
    /// When the message was received: `Message_Expiration` counts from here.
    pub received: SystemTime,
    /// No attempt before this time (the stored schedule, after a restart).
    pub not_before: Option<SystemTime>,
    /// The client that handed the message in, for XCLIENT towards a next
    /// hop that offers it (`Outbound_XCLIENT`); `None` for bounces.
    pub client: Option<Arc<Xclient>>,
}

impl QueuedMessage {
    /// Entry `id` of message `queue_id`, just queued: no `Message-ID`, the
    /// null sender, 7-bit, never attempted, no stored schedule, no client
    /// (set what differs with struct update syntax).
    pub(crate) fn new(
        (id, queue_id): (u64, u64),
        binding: Arc<str>,
        domain: Arc<str>,
        recipients: Vec<String>,
        body: Body,
    ) -> Self {
        Self {
            id,
            queue_id,
            message_id: Box::default(),
            binding,
            domain,
            sender: Box::default(),
            recipients,
            body,
            eight_bit: false,
            smtputf8: false,
            attempts: 0,
            received: SystemTime::now(),
            not_before: None,
            client: None,
        }
    }
}

/// A queued entry whose envelope the queue left in the spool, to read back
/// when it has room in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spooled {
    /// The spool's id for the message.
    pub message: u64,
    /// The spool's id for the entry.
    pub entry: u64,
}

/// What reading spooled entries back gave.
#[derive(Debug, Default)]
pub struct BacklogRead {
    /// The entries as messages to queue, in order; entries finished
    /// meanwhile are left out.
    pub messages: Vec<QueuedMessage>,
    /// Entries that could not be read now, to ask for again later.
    pub retry: Vec<Spooled>,
}

/// Reads back the entries queues left in the spool (the spool's reader).
pub trait Backlog: Send + Sync + std::fmt::Debug {
    /// These entries, read back; those that cannot be read now (all of
    /// them when the spool cannot be asked) come back in `retry`.
    fn read(&self, entries: Vec<Spooled>) -> BoxFuture<'static, BacklogRead>;
}

/// Reads bodies that are not kept in memory (the spool's reader).
pub trait BodySource: Send + Sync + std::fmt::Debug {
    /// The body of the message with this queue id.
    fn load(&self, queue_id: u64) -> BoxFuture<'static, Result<Arc<[u8]>, BodyError>>;
}

/// Why a body could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// It is gone or damaged for good: the recipients fail.
    Lost(String),
    /// Reading failed for now: the batch is retried.
    Unavailable(String),
}

/// A message's body.
#[derive(Debug, Clone)]
pub enum Body {
    /// Held in memory.
    Memory(Arc<[u8]>),
    /// Read from a source when needed.
    Stored(Arc<dyn BodySource>),
}

impl Body {
    /// The bytes of the message with this queue id.
    pub async fn load(&self, queue_id: u64) -> Result<Arc<[u8]>, BodyError> {
        match self {
            Body::Memory(b) => Ok(b.clone()),
            Body::Stored(source) => source.load(queue_id).await,
        }
    }
}

/// Where an attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// The host's name (MX, gateway or route host).
    pub name: String,
    /// Its address and port.
    pub addr: SocketAddr,
    /// Under an MTA-STS policy in `testing` mode: why the session's TLS
    /// would have failed `enforce` (no TLS, or its certificate).
    pub tls_problem: Option<Arc<str>>,
}

/// The outcome of one attempt for one recipient. Delivered and permanent
/// outcomes are final; after a transient one the engine retries by itself.
#[derive(Debug, Clone)]
pub struct Report {
    /// The entry's id (the message's part for this queue).
    pub id: u64,
    /// The message: its binding, domain, sender, ids and reception time.
    pub message: Arc<QueuedMessage>,
    /// The recipient.
    pub recipient: String,
    /// Delivered, transient or permanent, with the reply.
    pub outcome: Outcome,
    /// What the reply meant (the class of the reply table).
    pub class: ReplyClass,
    /// The host that answered, if a session reached one.
    pub host: Option<HostInfo>,
    /// Which attempt this was (1 for the first).
    pub attempt: u32,
    /// After a transient outcome, when the next attempt is due (`None`
    /// when retrying is over: a permanent failure follows).
    pub retry_at: Option<SystemTime>,
    /// The destination's MTA-STS policy the attempt followed (`enforce`)
    /// or was checked against (`testing`).
    pub mta_sts: Option<Arc<MtaSts>>,
}

impl Report {
    /// The binding.
    pub fn binding(&self) -> &str {
        &self.message.binding
    }

    /// The destination domain.
    pub fn domain(&self) -> &str {
        &self.message.domain
    }

    /// True when nothing more will happen to this recipient.
    pub fn is_final(&self) -> bool {
        !matches!(self.outcome, Outcome::Transient(_))
    }
}

/// A transient failure and the host that gave it, if one did.
pub(crate) type Failure = (Reply, Option<HostInfo>);

/// A part of a message that one connection carries in one transaction:
/// up to `Max_Recipients_Per_Batch` of its recipients. Every queued
/// recipient is in one, so it is kept small.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    pub(crate) message: Arc<QueuedMessage>,
    /// The queue it belongs to, so that its outcomes and its return find
    /// the queue without looking its name up.
    pub(crate) queue: DomainId,
    pub(crate) recipients: Vec<String>,
    /// Attempts made before this one.
    pub(crate) attempts: u32,
    /// The message's only batch in its queue, so its attempt round needs
    /// no bookkeeping of its own.
    pub(crate) alone: bool,
    /// The last transient failure, for the report when the batch expires;
    /// shared by the batches that failed with it.
    pub(crate) last: Option<Arc<Failure>>,
}

impl Batch {
    /// A batch of one recipient of a small message for x.test, for unit
    /// tests.
    #[cfg(test)]
    pub(crate) fn for_test(recipient: &str) -> Batch {
        let message = QueuedMessage::new(
            (1, 1),
            "default".into(),
            "x.test".into(),
            vec![recipient.to_owned()],
            Body::Memory(Arc::from(&b"x\r\n"[..])),
        );
        Batch::split(message, 1, DomainId(0)).remove(0)
    }

    /// The message's recipients in batches of at most `size`, for the
    /// queue `queue`.
    pub(crate) fn split(mut message: QueuedMessage, size: usize, queue: DomainId) -> Vec<Batch> {
        let size = size.max(1);
        let attempts = message.attempts;
        // The batches hold the recipients; the shared message keeps none,
        // so that a queued recipient is in memory once.
        let recipients = std::mem::take(&mut message.recipients);
        let message = Arc::new(message);
        let batch = |recipients, alone| Batch {
            message: message.clone(),
            queue,
            recipients,
            attempts,
            alone,
            last: None,
        };
        match recipients.len() {
            0 => Vec::new(),
            n if n <= size => vec![batch(recipients, true)],
            _ => recipients
                .chunks(size)
                .map(|c| batch(c.to_vec(), false))
                .collect(),
        }
    }

    /// Its last transient failure, or "not delivered in time" when it had
    /// none: what its expiry reports.
    pub(crate) fn last_failure(&self) -> Failure {
        self.last.as_deref().cloned().unwrap_or_else(|| {
            (
                Reply::with_status(451, (4, 4, 7), "not delivered in time"),
                None,
            )
        })
    }
}
