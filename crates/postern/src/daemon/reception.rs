//! Reception, after the protocol: a message prepared (by the SMTP session
//! or the HTTP injection API) is stored in the spool and, once durable,
//! logged and handed to the engine, one entry per destination domain.
//! The answer to the client (250, or 200) comes only after that.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use postern_engine::QueuedMessage;
use postern_smtp::xclient::Xclient;
use postern_spool::{NewMessage, SpoolError, Stored};

use super::dkim::Signed;
use super::inbound::{Prepared, by_domain};
use super::listener::Shared;
use super::log::{Hex, Reception};
use super::scanning::ScanRecord;
use super::spool::Verdict;
use super::stats::{Rejection, Totals};

/// A message ready to be stored.
pub(crate) struct Incoming {
    pub(crate) sender: String,
    pub(crate) recipients: Vec<String>,
    pub(crate) binding: String,
    pub(crate) prepared: Prepared,
    pub(crate) eight_bit: bool,
    pub(crate) smtputf8: bool,
    /// The client, kept for XCLIENT towards next hops (when some route
    /// asks for it).
    pub(crate) origin: Option<Arc<Xclient>>,
    /// What the content filters said, for the log.
    pub(crate) scan: Option<ScanRecord>,
}

/// Where a message came from, for the reception log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client {
    pub(crate) ip: IpAddr,
    pub(crate) tls: bool,
    /// `smtp` or `http`.
    pub(crate) protocol: &'static str,
}

/// The spool's record of a message's client.
fn client_record(x: &Xclient) -> Box<postern_spool::ClientRecord> {
    Box::new(postern_spool::ClientRecord {
        addr: x.addr.to_string(),
        name: x.name.clone().unwrap_or_default(),
        helo: x.helo.clone(),
        proto: x.proto.clone(),
    })
}

/// Why new mail is refused before it is read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refused {
    /// Delivery is far behind (`Max_Ready_Batches`).
    Behind,
    /// The spool's disk is (nearly) full or the spool is unhealthy.
    Full,
}

/// Why a message was not stored.
#[derive(Debug)]
pub(crate) enum NotStored {
    /// The disk is full.
    Full,
    /// Another spool failure (or the spool is closed).
    Failed(String),
}

/// A message's spool record and what the engine needs of it.
struct Pending {
    entries: Vec<(String, Vec<String>)>,
    body: Arc<[u8]>,
    incoming: Incoming,
    signed: Option<Signed>,
}

impl Shared {
    /// New mail waits while delivery is behind, and is refused while the
    /// spool's disk is full or delivery is far behind (counted).
    pub(crate) async fn admit_mail(&self) -> Result<(), Refused> {
        match self.pressure.verdict() {
            Verdict::Go => Ok(()),
            Verdict::Wait(pause) => {
                metrics::counter!(postern_metrics::LISTENER_DELAYED).increment(1);
                tokio::time::sleep(pause).await;
                Ok(())
            }
            Verdict::Behind => {
                Totals::rejected(Rejection::Backpressure);
                Err(Refused::Behind)
            }
            Verdict::Full => {
                Totals::rejected(Rejection::SpoolUnhealthy);
                Err(Refused::Full)
            }
        }
    }

    /// A binding mail may name (`X-Binding`, or the HTTP `binding` field).
    pub(crate) fn binding_known(&self, binding: &str) -> bool {
        binding == "default" || self.config.bindings.contains_key(binding)
    }

    /// Stores the messages in one write (all or none), then logs and
    /// queues each; returns their spool ids.
    pub(crate) async fn receive(
        &self,
        messages: Vec<Incoming>,
        client: Client,
    ) -> Result<Vec<Stored>, NotStored> {
        let received = SystemTime::now();
        let messages = self.sign(messages).await?;
        let mut pending = Vec::with_capacity(messages.len());
        let mut records = Vec::with_capacity(messages.len());
        for (mut incoming, signed) in messages {
            let entries = by_domain(&incoming.recipients);
            let body: Arc<[u8]> = std::mem::take(&mut incoming.prepared.body).into();
            records.push(NewMessage {
                received,
                message_id: incoming.prepared.message_id.clone(),
                sender: incoming.sender.clone(),
                binding: incoming.binding.clone(),
                eight_bit: incoming.eight_bit,
                smtputf8: incoming.smtputf8,
                client: incoming.origin.as_deref().map(client_record),
                body: body.clone(),
                entries: entries.clone(),
                completes: Vec::new(),
            });
            pending.push(Pending {
                entries,
                body,
                incoming,
                signed,
            });
        }
        let stored = match self.spool.store_all(records).await {
            Ok(Ok(stored)) => stored,
            Ok(Err(SpoolError::Full(_))) => {
                Totals::rejected(Rejection::SpoolFull);
                return Err(NotStored::Full);
            }
            Ok(Err(e)) => {
                Totals::rejected(Rejection::SpoolError);
                return Err(NotStored::Failed(e.to_string()));
            }
            Err(_) => {
                Totals::rejected(Rejection::SpoolError);
                return Err(NotStored::Failed("spool closed".into()));
            }
        };
        for (p, s) in pending.into_iter().zip(&stored) {
            self.queue(p, s, received, client);
        }
        Ok(stored)
    }

    /// Signs each message a `DKIM_Sign` stanza applies to, off the event
    /// loop (an RSA signature costs a millisecond or more).
    async fn sign(
        &self,
        messages: Vec<Incoming>,
    ) -> Result<Vec<(Incoming, Option<Signed>)>, NotStored> {
        if self.dkim.is_empty() {
            return Ok(messages.into_iter().map(|m| (m, None)).collect());
        }
        let dkim = self.dkim.clone();
        let work = move || {
            messages
                .into_iter()
                .map(|mut m| match dkim.sign(&m.binding, &m.prepared.body) {
                    Some((body, signed)) => {
                        m.prepared.body = body;
                        (m, Some(signed))
                    }
                    None => (m, None),
                })
                .collect::<Vec<_>>()
        };
        tokio::task::spawn_blocking(work).await.map_err(|e| {
            tracing::error!(error = %e, "DKIM: the signing task failed");
            NotStored::Failed("signing failed".into())
        })
    }

    /// A stored message: logged, counted, and handed to the engine.
    fn queue(&self, p: Pending, stored: &Stored, received: SystemTime, client: Client) {
        let m = &p.incoming;
        self.totals.received(&m.binding);
        self.log.write(
            "reception",
            &Reception {
                queue_id: Hex(stored.message),
                message_id: &m.prepared.message_id,
                binding: &m.binding,
                sender: &m.sender,
                recipients: m.recipients.len(),
                size: p.body.len(),
                ip: client.ip,
                tls: client.tls,
                protocol: client.protocol,
                dkim_domain: p.signed.as_ref().map(|s| s.domain.as_str()),
                dkim_selector: p.signed.as_ref().map(|s| s.selector.as_str()),
                scan: m.scan.as_ref(),
            },
        );
        for ((domain, recipients), entry) in p.entries.into_iter().zip(&stored.entries) {
            self.submissions.push(QueuedMessage {
                id: *entry,
                queue_id: stored.message,
                message_id: m.prepared.message_id.as_str().into(),
                binding: m.binding.as_str().into(),
                domain: domain.into(),
                sender: m.sender.as_str().into(),
                recipients,
                body: self.body.clone(),
                eight_bit: m.eight_bit,
                smtputf8: m.smtputf8,
                attempts: 0,
                received,
                not_before: None,
                client: m.origin.clone(),
            });
        }
    }
}
