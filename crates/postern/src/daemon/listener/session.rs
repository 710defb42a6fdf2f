//! One SMTP injection session's answers: relay control (`Relay_Hosts`,
//! `Relay_Domains`, the postmaster), recipient callouts with their
//! bounded cache, backpressure at `MAIL`, and the message at `DATA`
//! handed to reception.

use std::net::IpAddr;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use postern_conf::{Directive, DomainVerification, RecipientVerification, Value};
use postern_dns::Dns;
use postern_engine::outbound::client_settings;
use postern_smtp::Reply;
use postern_smtp::client::Session;
use postern_smtp::server::{DataReply, Envelope, Handler};
use postern_smtp::xclient::Xclient;

use super::{Shared, storage_full, try_later};
use crate::daemon::inbound::{domain_of, prepare, received, unique};
use crate::daemon::log::Hex;
use crate::daemon::reception::{Client, Incoming, NotStored, Refused};
use crate::daemon::stats::{Rejection, Totals};

/// Callout answers kept at most; past it, expired ones are dropped, and
/// if none has expired the cache starts again.
const CALLOUT_CACHE: usize = 10_000;

/// One injection session's view.
pub(super) struct Inbound {
    pub(super) shared: Arc<Shared>,
    pub(super) dns: Option<Arc<Dns>>,
    pub(super) relay_client: bool,
    pub(super) default_binding: String,
    /// The client's address as `Received:` writes it, made once for the
    /// session's messages (again if XCLIENT changes it).
    pub(super) peer_ip: Option<(IpAddr, String)>,
}

impl Inbound {
    /// A domain accepted from any client: listed in `Relay_Domains`, or,
    /// with `Relay_Domain_Verification = all_but_specified`, not listed.
    fn relay_domain(&self, domain: &str) -> bool {
        let global = &self.shared.config.global;
        let listed = match global.value_or_default(Directive::RelayDomains) {
            Some(Value::Domains(list)) => list.iter().any(|d| d == domain),
            _ => false,
        };
        match global.value_or_default(Directive::RelayDomainVerification) {
            Some(Value::DomainVerification(DomainVerification::AllButSpecified)) => !listed,
            _ => listed,
        }
    }

    /// `Recipient_Verification = callout`: ask the domain's route.
    async fn callout(&self, domain: &str, recipient: &str) -> Option<Reply> {
        let config = &self.shared.config;
        let eff = config.effective("default", domain)?;
        let wanted = eff.pick(Directive::RecipientVerification, |v| match v {
            Value::RecipientVerification(r) => Some(*r),
            _ => None,
        });
        if wanted != Some(RecipientVerification::Callout) {
            return None;
        }
        let cache_for = eff
            .seconds(Directive::RecipientVerificationCache)
            .unwrap_or(Duration::from_secs(600));
        let key = recipient.to_ascii_lowercase();
        {
            let cache = self
                .shared
                .callouts
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some((reply, until)) = cache.get(&key)
                && Instant::now() < *until
            {
                return Some(reply.clone());
            }
        }
        // Boxed: a whole outbound session's future would otherwise make
        // every RCPT's future that large, callout or not.
        let reply = Box::pin(self.ask(domain, recipient, &eff)).await;
        if !matches!(reply.class(), postern_smtp::Class::Transient) {
            let mut cache = self
                .shared
                .callouts
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= CALLOUT_CACHE {
                let now = Instant::now();
                cache.retain(|_, (_, until)| *until > now);
                if cache.len() >= CALLOUT_CACHE {
                    cache.clear();
                }
            }
            cache.insert(key, (reply.clone(), Instant::now() + cache_for));
        }
        Some(reply)
    }

    async fn ask(&self, domain: &str, recipient: &str, eff: &postern_conf::Effective<'_>) -> Reply {
        let unavailable = |why: String| {
            Reply::with_status(
                451,
                (4, 4, 3),
                format!("cannot verify the recipient now: {why}"),
            )
        };
        let Some(dns) = &self.dns else {
            return unavailable("no resolver".into());
        };
        let config = &self.shared.config;
        let table = match dns.route_table(config, "default", domain).await {
            Ok(t) => t,
            Err(e) => return unavailable(e.to_string()),
        };
        let Some((_, entry)) = table.entries().next() else {
            return unavailable("no route".into());
        };
        let settings = {
            let mut tls = self
                .shared
                .tls
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            client_settings(config, eff, entry, &self.shared.hostname, &mut tls)
        };
        let mut settings = match settings {
            Ok(s) => s,
            Err(e) => return unavailable(e),
        };
        settings.timeouts.connect = settings.timeouts.connect.min(Duration::from_secs(30));
        settings.timeouts.ehlo = settings.timeouts.ehlo.min(Duration::from_secs(30));
        // The callout's connection counts against the Host limit there,
        // like a delivery's.
        let Some(_slot) = self
            .shared
            .engine
            .callout_slot("default", settings.bind, entry.addr)
            .await
        else {
            return Reply::with_status(
                451,
                (4, 4, 5),
                "cannot verify the recipient now: its server is at its connection limit",
            );
        };
        match Session::connect(entry.addr, &settings).await {
            Ok(mut session) => {
                let reply = session.verify_recipient(recipient).await;
                let _ = session.quit().await;
                reply.unwrap_or_else(|e| unavailable(e.to_string()))
            }
            Err(e) => unavailable(e.to_string()),
        }
    }

    /// The `Received:` header: the client's HELO name and address (made
    /// into text once per session).
    fn received(&mut self, envelope: &Envelope, id: &str) -> String {
        let ip = envelope.peer.ip();
        let peer = match &mut self.peer_ip {
            Some((known, text)) if *known == ip => text,
            slot => &slot.insert((ip, ip.to_string())).1,
        };
        let with = if envelope.tls { "ESMTPS" } else { "ESMTP" };
        received(
            &[&envelope.helo, " (", peer, ")\r\n\t"],
            &self.shared.hostname,
            with,
            id,
        )
    }
}

#[async_trait::async_trait]
impl Handler for Inbound {
    /// New mail waits while delivery is behind, and is refused while the
    /// spool's disk is full or delivery is far behind.
    async fn mail_from(&mut self, _envelope: &Envelope) -> Reply {
        match self.shared.admit_mail().await {
            Ok(()) => {}
            Err(Refused::Behind) => {
                return Reply::with_status(
                    452,
                    (4, 3, 1),
                    "too much mail waiting for delivery, try again later",
                );
            }
            Err(Refused::Full) => return storage_full(),
        }
        Reply::with_status(250, (2, 1, 0), "sender ok")
    }

    async fn rcpt_to(&mut self, _envelope: &Envelope, recipient: &str) -> Reply {
        let Some(domain) = domain_of(recipient) else {
            return Reply::with_status(501, (5, 1, 3), "the recipient needs a domain");
        };
        if self.relay_client {
            return Reply::with_status(250, (2, 1, 5), "recipient ok");
        }
        // RFC 5321 4.5.1: mail to this server's postmaster is accepted
        // from anyone.
        if recipient.eq_ignore_ascii_case(&format!("postmaster@{}", self.shared.hostname)) {
            return Reply::with_status(250, (2, 1, 5), "postmaster ok");
        }
        if !self.relay_domain(&domain) {
            Totals::rejected(Rejection::RelayingDenied);
            return Reply::with_status(
                550,
                (5, 7, 1),
                format!("relaying denied: {domain} is not a relay domain"),
            );
        }
        match self.callout(&domain, recipient).await {
            Some(reply) if !reply.is_positive() => {
                Totals::rejected(Rejection::Callout);
                reply
            }
            _ => Reply::with_status(250, (2, 1, 5), "recipient ok"),
        }
    }

    async fn data(&mut self, envelope: &Envelope, body: Vec<u8>) -> DataReply {
        let id = unique();
        let prepared = prepare(&body, &self.received(envelope, &id), &self.shared.hostname);
        let binding = prepared
            .binding
            .clone()
            .unwrap_or_else(|| self.default_binding.clone());
        if !self.shared.binding_known(&binding) {
            Totals::rejected(Rejection::UnknownBinding);
            return DataReply::One(Reply::with_status(
                550,
                (5, 7, 1),
                format!("binding \"{binding}\" named by X-Binding is not configured"),
            ));
        }
        let origin = self.shared.keep_client.then(|| {
            Arc::new(Xclient {
                addr: envelope.peer.ip(),
                name: None,
                helo: envelope.helo.clone(),
                proto: "ESMTP".into(),
            })
        });
        let mut incoming = Incoming {
            sender: envelope.mail_from.clone(),
            recipients: envelope.rcpt_to.clone(),
            binding,
            prepared,
            eight_bit: envelope.eight_bit,
            smtputf8: envelope.smtputf8,
            origin,
            scan: None,
        };
        let scanned = self
            .shared
            .scan(
                &mut incoming,
                envelope.peer,
                &envelope.helo,
                self.relay_client,
                &id,
            )
            .await;
        if let Err(reply) = scanned {
            return DataReply::One(reply);
        }
        let client = Client {
            ip: envelope.peer.ip(),
            tls: envelope.tls,
            protocol: "smtp",
        };
        let stored = match self.shared.receive(vec![incoming], client).await {
            Ok(mut stored) => match stored.pop() {
                Some(s) => s,
                None => return DataReply::One(try_later("spool closed")),
            },
            Err(NotStored::Full) => return DataReply::One(storage_full()),
            Err(NotStored::Failed(why)) => return DataReply::One(try_later(&why)),
        };
        let mut text = String::from("queued as ");
        Hex(stored.message).push_to(&mut text);
        DataReply::One(Reply::with_status(250, (2, 0, 0), text))
    }
}
