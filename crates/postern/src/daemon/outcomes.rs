//! What comes back from the engine, on its control loop: each outcome
//! becomes a delivery-log record, a count, and a spool record (done, or
//! another attempt made with the time of the next); permanent failures
//! are marked done when their round settles, in the same spool record as
//! the bounce that reports them. Nothing here blocks: the spool and the
//! log have threads of their own.

use std::sync::Arc;
use std::time::SystemTime;

use postern_engine::{Bounce, Handle, Outcomes, Report, Settlement};
use postern_smtp::client::Outcome;
use postern_spool::{NewMessage, Spool};

use super::dkim::Signers;
use super::inbound::message_id;
use super::log::{Attempt, BounceQueued, DeliveryLog, Hex, Status};
use super::stats::Totals;

/// The daemon's [`Outcomes`].
pub(crate) struct Recorder {
    pub(crate) spool: Spool,
    pub(crate) log: DeliveryLog,
    pub(crate) totals: Arc<Totals>,
    /// Bounces are signed like received mail.
    pub(crate) dkim: Arc<Signers>,
}

fn event(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Delivered(_) => "delivery",
        Outcome::Transient(_) => "transient_failure",
        Outcome::Permanent(r) if r.text().starts_with("message expired") => "expiry",
        Outcome::Permanent(_) => "permanent_failure",
    }
}

impl Outcomes for Recorder {
    fn report(&mut self, r: Report) {
        let reply = r.outcome.reply();
        let event = event(&r.outcome);
        let m = &r.message;
        let age = SystemTime::now()
            .duration_since(m.received)
            .unwrap_or_default();
        self.totals
            .outcome(&m.binding, &r.outcome, event == "expiry", age);
        let record = Attempt {
            queue_id: Hex(m.queue_id),
            message_id: &m.message_id,
            binding: &m.binding,
            domain: &m.domain,
            sender: &m.sender,
            rcpt: &r.recipient,
            host: r.host.as_ref().map(|h| h.name.as_str()),
            ip: r.host.as_ref().map(|h| h.addr.ip()),
            port: r.host.as_ref().map(|h| h.addr.port()),
            code: reply.code,
            enhanced_code: reply.status.map(Status),
            reply: reply.text(),
            class: r.class.as_str(),
            attempt: r.attempt,
            mta_sts: r.mta_sts.as_ref().map(|p| p.policy.mode.as_str()),
            mta_sts_id: r.mta_sts.as_ref().map(|p| p.id.as_str()),
            mta_sts_unnamed: r
                .mta_sts
                .as_ref()
                .is_some_and(|p| r.host.as_ref().is_some_and(|h| p.unnamed.contains(&h.name))),
            mta_sts_tls: r.host.as_ref().and_then(|h| h.tls_problem.as_deref()),
        };
        self.log.write(event, &record);
        match &r.outcome {
            Outcome::Delivered(_) => self.spool.done(r.id, &r.recipient),
            Outcome::Transient(_) => self.spool.attempted(r.id, r.attempt, r.retry_at),
            // Done when the round settles, with the bounce when one is
            // wanted: see `settle`.
            Outcome::Permanent(_) => {}
        }
    }

    fn settle(&mut self, s: Settlement, engine: &Handle) {
        if !s.wants_bounce {
            for r in s.recipients() {
                self.spool.done(s.entry, r);
            }
            return;
        }
        let (spool, log, totals, engine, dkim) = (
            self.spool.clone(),
            self.log.clone(),
            self.totals.clone(),
            engine.clone(),
            self.dkim.clone(),
        );
        // The original's headers are read back off the control loop; the
        // bounce and the failures it reports are then stored in one record
        // and the bounce queued once durable.
        tokio::spawn(async move {
            let original = s.message.body.load(s.message.queue_id).await;
            let Some(mut b) = s.bounce(original.as_deref().unwrap_or_default()) else {
                for r in s.recipients() {
                    spool.done(s.entry, r);
                }
                return;
            };
            // Signed off the control loop, like received mail.
            let (binding, unsigned) = (b.binding.clone(), b.body.clone());
            let body = tokio::task::spawn_blocking(move || match dkim.sign(&binding, &unsigned) {
                Some((signed, _)) => signed,
                None => unsigned,
            })
            .await
            .unwrap_or_else(|_| b.body.clone());
            // What is queued is what is stored: the signed bytes.
            b.body = body.clone();
            let body: Arc<[u8]> = body.into();
            let message_id = message_id(&body);
            let stored = spool.store(NewMessage {
                received: SystemTime::now(),
                message_id: message_id.clone(),
                sender: String::new(),
                binding: b.binding.clone(),
                eight_bit: false,
                smtputf8: false,
                client: None,
                body,
                entries: vec![(b.domain(), vec![b.recipient.clone()])],
                completes: s.recipients().map(|r| (s.entry, r.to_owned())).collect(),
            });
            let stored = match stored.await {
                Ok(Ok(stored)) => stored,
                Ok(Err(e)) => return lost(&log, &b, &e.to_string()),
                Err(_) => return lost(&log, &b, "the spool is closed"),
            };
            let Some(&entry) = stored.entries.first() else {
                return;
            };
            totals.bounce(&b.binding);
            let record = BounceQueued {
                queue_id: Some(Hex(stored.message)),
                binding: &b.binding,
                rcpt: &b.recipient,
                original_entry: Hex(b.original_id),
                reply: None,
            };
            log.write("bounce", &record);
            engine.submit(b.queued(stored.message, entry, message_id));
        });
    }
}

fn lost(log: &DeliveryLog, b: &Bounce, why: &str) {
    let record = BounceQueued {
        queue_id: None,
        binding: &b.binding,
        rcpt: &b.recipient,
        original_entry: Hex(b.original_id),
        reply: Some(format!(
            "the bounce could not be spooled ({why}): its failed recipients stay queued in the spool and are tried again after a restart"
        )),
    };
    log.write("bounce", &record);
}
