//! What comes back from the engine: each outcome goes to the delivery log
//! and to the spool (done, or another attempt made); each bounce is spooled
//! and queued like any message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::SystemTime;

use crossbeam_channel::{Receiver, select};
use postern_engine::{Bounce, Handle, Report};
use postern_smtp::client::Outcome;
use postern_spool::{NewMessage, Spool};
use serde_json::json;

use super::inbound::message_id;
use super::log::DeliveryLog;
use super::stats::Totals;

/// What the log needs to know of a queue entry.
#[derive(Debug, Clone)]
pub(crate) struct EntryInfo {
    /// The spool's message id.
    pub(crate) message: u64,
    /// The `Message-ID` header.
    pub(crate) message_id: String,
    /// The envelope sender.
    pub(crate) sender: String,
    /// Recipients without a final outcome.
    pub(crate) remaining: usize,
    /// When the message was received.
    pub(crate) received: SystemTime,
}

/// Entries in flight, by entry id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tracker(Arc<Mutex<HashMap<u64, EntryInfo>>>);

impl Tracker {
    pub(crate) fn add(&self, entry: u64, info: EntryInfo) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(entry, info);
    }

    fn get(&self, entry: u64) -> Option<EntryInfo> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&entry)
            .cloned()
    }

    fn finished_one(&self, entry: u64) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(info) = map.get_mut(&entry) {
            info.remaining = info.remaining.saturating_sub(1);
            if info.remaining == 0 {
                map.remove(&entry);
            }
        }
    }
}

/// The parts that outcomes go to.
pub(crate) struct Sinks {
    pub(crate) spool: Spool,
    pub(crate) engine: Handle,
    pub(crate) log: DeliveryLog,
    pub(crate) tracker: Tracker,
    pub(crate) totals: Arc<Totals>,
}

/// Starts the thread; it ends when the engine is gone.
pub(crate) fn start(
    reports: Receiver<Report>,
    bounces: Receiver<Bounce>,
    sinks: Sinks,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("postern-outcomes".into())
        .spawn(move || {
            loop {
                select! {
                    recv(reports) -> r => match r {
                        Ok(r) => sinks.report(&r),
                        Err(_) => break,
                    },
                    recv(bounces) -> b => if let Ok(b) = b {
                        sinks.bounce(&b);
                    },
                }
            }
            while let Ok(b) = bounces.try_recv() {
                sinks.bounce(&b);
            }
        })
}

fn event(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Delivered(_) => "delivery",
        Outcome::Transient(_) => "transient_failure",
        Outcome::Permanent(r) if r.text().starts_with("message expired") => "expiry",
        Outcome::Permanent(_) => "permanent_failure",
    }
}

impl Sinks {
    fn report(&self, r: &Report) {
        let info = self.tracker.get(r.id);
        let reply = r.outcome.reply();
        let event = event(&r.outcome);
        let age = info
            .as_ref()
            .and_then(|i| SystemTime::now().duration_since(i.received).ok())
            .unwrap_or_default();
        self.totals
            .outcome(&r.binding, &r.outcome, event == "expiry", age);
        self.log.event(
            event,
            json!({
                "queue_id": info.as_ref().map(|i| format!("{:x}", i.message)),
                "message_id": info.as_ref().map(|i| i.message_id.clone()),
                "binding": r.binding,
                "domain": r.domain,
                "sender": info.as_ref().map(|i| i.sender.clone()),
                "rcpt": r.recipient,
                "host": r.host.as_ref().map(|h| h.name.clone()),
                "ip": r.host.as_ref().map(|h| h.addr.ip().to_string()),
                "port": r.host.as_ref().map(|h| h.addr.port()),
                "code": reply.code,
                "enhanced_code": reply.status.map(|s| s.to_string()),
                "reply": reply.text(),
                "attempt": r.attempt,
            }),
        );
        if r.is_final() {
            self.spool.done(r.id, &r.recipient);
            self.tracker.finished_one(r.id);
        } else {
            self.spool.attempted(r.id, r.attempt);
        }
    }

    fn bounce(&self, b: &Bounce) {
        let message = b.queued(0);
        let stored = self
            .spool
            .store(NewMessage {
                received: message.received,
                sender: String::new(),
                binding: message.binding.clone(),
                eight_bit: false,
                smtputf8: false,
                body: message.body.clone(),
                entries: vec![(message.domain.clone(), message.recipients.clone())],
            })
            .blocking_recv();
        let Ok(Ok(stored)) = stored else {
            self.log.event(
                "bounce",
                json!({ "rcpt": b.recipient, "reply": "the bounce could not be spooled" }),
            );
            return;
        };
        let Some(&entry) = stored.entries.first() else {
            return;
        };
        self.tracker.add(
            entry,
            EntryInfo {
                message: stored.message,
                message_id: message_id(&message.body),
                sender: String::new(),
                remaining: 1,
                received: message.received,
            },
        );
        self.totals.bounce(&b.binding);
        self.log.event(
            "bounce",
            json!({
                "queue_id": format!("{:x}", stored.message),
                "binding": b.binding,
                "rcpt": b.recipient,
                "original_entry": format!("{:x}", b.original_id),
            }),
        );
        self.engine.submit(b.queued(entry));
    }
}
