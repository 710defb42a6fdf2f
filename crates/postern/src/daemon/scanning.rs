//! Content scanning at `DATA`, before the client's `250`: the message goes
//! through its `Milter` stanzas in order (`Inbound_Milters` for mail to
//! relay domains, `Submission_Milters` for mail from `Relay_Hosts`), each
//! seeing the changes of the ones before; the first that refuses,
//! tempfails or discards decides. Then the spam level from the score the
//! filters' headers give, and that level's action (`Spam_*_Action`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use postern_conf::{Config, Directive, OnFailure, SpamAction, Value};
use postern_milter::{Decision, Envelope, Message};
use postern_smtp::Reply;
use serde::Serialize;

use super::inbound::domain_of;
use super::listener::Shared;
use super::log::ScanRefusal;
use super::reception::Incoming;

/// One `Milter` stanza, ready.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    name: String,
    addr: SocketAddr,
    timeout: Duration,
    on_failure: OnFailure,
}

/// Every `Milter` stanza, by name.
#[derive(Debug, Default)]
pub(crate) struct Filters(HashMap<String, Filter>);

impl Filters {
    pub(crate) fn of(config: &Config) -> Filters {
        let filters = config.milters.values().filter_map(|m| {
            let addr = match m.options.get(Directive::MilterAddress)?.value {
                Value::SocketAddr(a) => a,
                _ => return None,
            };
            let timeout = match m.options.get(Directive::ResolverTimeout).map(|s| &s.value) {
                Some(Value::Seconds(s)) => Duration::from_secs(*s),
                _ => Duration::from_secs(30),
            };
            let on_failure = match m.options.value_or_default(Directive::MilterOnFailure) {
                Some(Value::OnFailure(f)) => *f,
                _ => OnFailure::Tempfail,
            };
            let filter = Filter {
                name: m.name.clone(),
                addr,
                timeout,
                on_failure,
            };
            Some((m.name.clone(), filter))
        });
        Filters(filters.collect())
    }

    /// No `Milter` stanza: nothing is ever scanned.
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The spam levels, from none to high, and unscored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Level {
    None,
    Low,
    Medium,
    High,
    Unscored,
}

impl Level {
    pub(crate) const ALL: [Level; 5] = [
        Level::None,
        Level::Low,
        Level::Medium,
        Level::High,
        Level::Unscored,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Unscored => "unscored",
        }
    }
}

/// What the delivery log says of a scan.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ScanRecord {
    /// The filters asked, in order, comma-separated.
    pub(crate) scanner: String,
    /// `accept`, `quarantine` (a filter asked for it), `reject`,
    /// `tempfail`, `discard`, or `failed` (a filter could not be asked and
    /// its `On_Failure` tempfailed the message).
    pub(crate) verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) score: Option<f64>,
    pub(crate) level: Level,
    /// `deliver`, `header`, `prefix`, `quarantine` or `refuse`.
    pub(crate) action: &'static str,
}

/// What becomes of a scanned message.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Store it: its bytes (changed), its recipients (the quarantine
    /// address when quarantined).
    Accept {
        body: Vec<u8>,
        recipients: Option<Vec<String>>,
        record: ScanRecord,
    },
    /// Answer the client with this (4xx or 5xx), store nothing.
    Refuse(Reply, ScanRecord),
    /// Answer 250 and store nothing.
    Discard(ScanRecord),
}

/// The message and its session, as the filters are told.
pub(crate) struct Scan<'a> {
    pub(crate) envelope: Envelope<'a>,
    pub(crate) body: Vec<u8>,
    /// The options for the spam levels (the first recipient's domain).
    pub(crate) options: Option<postern_conf::Effective<'a>>,
}

fn names(options: Option<&postern_conf::Effective<'_>>, d: Directive) -> Vec<String> {
    options
        .and_then(|eff| {
            eff.pick(d, |v| match v {
                Value::Names(n) => Some(n.clone()),
                _ => None,
            })
        })
        .unwrap_or_default()
}

/// The filters a message goes through: `Submission_Milters` for a relay
/// client's mail, else `Inbound_Milters` of its first recipient's domain.
pub(crate) fn chosen(
    options: Option<&postern_conf::Effective<'_>>,
    relay_client: bool,
) -> Vec<String> {
    if relay_client {
        names(options, Directive::SubmissionMilters)
    } else {
        names(options, Directive::InboundMilters)
    }
}

/// Counts a scan's verdict, and its level when it got as far as one.
fn count(verdict: &'static str, level: Option<Level>) {
    metrics::counter!(postern_metrics::SCANS, "verdict" => verdict).increment(1);
    if let Some(level) = level {
        metrics::counter!(postern_metrics::SPAM_LEVELS, "level" => level.as_str()).increment(1);
    }
}

impl Filters {
    /// Runs the message through `chosen` filters and its level's action.
    pub(crate) async fn scan(&self, chosen: &[String], scan: Scan<'_>) -> Outcome {
        let mut message = Message::parse(&scan.body);
        let mut score: Option<f64> = None;
        let mut quarantined: Option<String> = None;
        let scanner = chosen.join(",");
        for name in chosen {
            let Some(filter) = self.0.get(name) else {
                continue;
            };
            let verdict =
                postern_milter::scan(filter.addr, filter.timeout, &scan.envelope, &message).await;
            let verdict = match verdict {
                Ok(v) => v,
                Err(e) => {
                    metrics::counter!(postern_metrics::MILTER_FAILURES).increment(1);
                    tracing::warn!(milter = %filter.name, addr = %filter.addr, error = %e, on_failure = %filter.on_failure, "content filter failed");
                    if filter.on_failure == OnFailure::Tempfail {
                        let record = ScanRecord {
                            scanner: filter.name.clone(),
                            verdict: "failed",
                            score: None,
                            level: Level::Unscored,
                            action: "tempfail",
                        };
                        count("failed", None);
                        let reply = Reply::with_status(
                            451,
                            (4, 7, 1),
                            "the content filter is not available, try again later",
                        );
                        return Outcome::Refuse(reply, record);
                    }
                    continue;
                }
            };
            verdict.apply(&mut message);
            score = verdict.score().or(score);
            if let Some(reason) = &verdict.quarantine {
                quarantined = Some(reason.clone());
            }
            let decided = |action: &'static str| ScanRecord {
                scanner: filter.name.clone(),
                verdict: verdict.decision.as_str(),
                score,
                level: if score.is_some() {
                    Level::None
                } else {
                    Level::Unscored
                },
                action,
            };
            match &verdict.decision {
                Decision::Accept => {}
                Decision::Discard => {
                    count("discard", None);
                    return Outcome::Discard(decided("discard"));
                }
                d @ (Decision::Reject(_) | Decision::Tempfail(_)) => {
                    count(d.as_str(), None);
                    let reply = d
                        .reply()
                        .unwrap_or_else(|| Reply::new(550, None, "refused"));
                    return Outcome::Refuse(reply, decided("refuse"));
                }
            }
        }
        let policy = Policy::of(scan.options.as_ref());
        let level = policy.level(score);
        // A filter's quarantine request wins over the level's action.
        let (verdict, action) = match &quarantined {
            Some(reason) => {
                message.add_header("X-Quarantine-Reason", reason);
                ("quarantine", SpamAction::Quarantine)
            }
            None => ("accept", policy.action(level)),
        };
        count(verdict, Some(level));
        let record = ScanRecord {
            scanner,
            verdict,
            score,
            level,
            action: action.as_str(),
        };
        policy.carry_out(action, level, score, message, record)
    }
}

/// The spam options in force for a message.
struct Policy {
    low: f64,
    medium: f64,
    high: f64,
    actions: [SpamAction; 4],
    prefix: String,
    quarantine: Option<String>,
}

impl Policy {
    fn of(eff: Option<&postern_conf::Effective<'_>>) -> Policy {
        let score = |d, fallback| eff.and_then(|e| e.score(d)).unwrap_or(fallback);
        let action = |d, fallback| {
            eff.and_then(|e| {
                e.pick(d, |v| match v {
                    Value::SpamAction(a) => Some(*a),
                    _ => None,
                })
            })
            .unwrap_or(fallback)
        };
        let text = |d| eff.and_then(|e| e.text(d)).map(str::to_owned);
        Policy {
            low: score(Directive::SpamLowScore, 5.0),
            medium: score(Directive::SpamMediumScore, 10.0),
            high: score(Directive::SpamHighScore, 15.0),
            actions: [
                action(Directive::SpamLowAction, SpamAction::Header),
                action(Directive::SpamMediumAction, SpamAction::Prefix),
                action(Directive::SpamHighAction, SpamAction::Refuse),
                action(Directive::UnscoredAction, SpamAction::Deliver),
            ],
            prefix: text(Directive::SpamSubjectPrefix).unwrap_or_else(|| "[SPAM]".into()),
            quarantine: text(Directive::SpamQuarantine),
        }
    }

    fn level(&self, score: Option<f64>) -> Level {
        match score {
            None => Level::Unscored,
            Some(s) if s >= self.high => Level::High,
            Some(s) if s >= self.medium => Level::Medium,
            Some(s) if s >= self.low => Level::Low,
            Some(_) => Level::None,
        }
    }

    fn action(&self, level: Level) -> SpamAction {
        let [low, medium, high, unscored] = self.actions;
        match level {
            Level::None => SpamAction::Deliver,
            Level::Low => low,
            Level::Medium => medium,
            Level::High => high,
            Level::Unscored => unscored,
        }
    }

    fn carry_out(
        &self,
        action: SpamAction,
        level: Level,
        score: Option<f64>,
        mut message: Message,
        record: ScanRecord,
    ) -> Outcome {
        let mark = |m: &mut Message| {
            let stars = score.map_or(0, |s| s.clamp(0.0, 50.0).floor() as usize);
            m.add_header("X-Spam-Level", &"*".repeat(stars));
            let status = match score {
                Some(s) => format!("Yes, score={s:.2} level={}", level.as_str()),
                None => "Unknown, not scored".to_owned(),
            };
            m.add_header("X-Spam-Status", &status);
        };
        let mut recipients = None;
        match action {
            SpamAction::Deliver => {}
            SpamAction::Header => mark(&mut message),
            SpamAction::Prefix => {
                mark(&mut message);
                let subject = message.header("Subject").unwrap_or_default();
                let prefixed = format!("{} {}", self.prefix, subject.trim_start());
                message.change_header(1, "Subject", prefixed.trim_end());
            }
            SpamAction::Quarantine => {
                mark(&mut message);
                let Some(address) = self.quarantine.clone() else {
                    // Only a filter's request gets here: the configuration
                    // check asks for the address of a quarantine action.
                    let text =
                        "message quarantined by the content filter, and no Spam_Quarantine is set";
                    return Outcome::Refuse(Reply::with_status(550, (5, 7, 1), text), record);
                };
                recipients = Some(vec![address]);
            }
            SpamAction::Refuse => {
                let text = match score {
                    Some(s) => format!(
                        "message refused as spam (level {}, score {s:.2})",
                        level.as_str()
                    ),
                    None => "message refused: it could not be scanned".to_owned(),
                };
                return Outcome::Refuse(Reply::with_status(550, (5, 7, 1), text), record);
            }
        }
        Outcome::Accept {
            body: message.to_bytes(),
            recipients,
            record,
        }
    }
}

impl Shared {
    /// Runs a message through its content filters, if it has any
    /// (`Submission_Milters` for a relay client's, else `Inbound_Milters`
    /// of its first recipient's domain): changed, re-addressed or, as
    /// `Err`, the client's answer when nothing is to be stored (a `250`
    /// for a discarded message). Each message not stored is logged.
    pub(crate) async fn scan(
        &self,
        incoming: &mut Incoming,
        peer: SocketAddr,
        helo: &str,
        relay_client: bool,
        id: &str,
    ) -> Result<(), Reply> {
        // Without filters, nothing to look up for each message.
        if self.filters.is_empty() {
            return Ok(());
        }
        let options = incoming
            .recipients
            .first()
            .and_then(|r| domain_of(r))
            .and_then(|d| self.config.effective(&incoming.binding, &d));
        let chosen = chosen(options.as_ref(), relay_client);
        if chosen.is_empty() {
            return Ok(());
        }
        let scan = Scan {
            envelope: Envelope {
                client: peer,
                client_name: None,
                helo,
                sender: &incoming.sender,
                recipients: &incoming.recipients,
                hostname: &self.hostname,
                queue_id: id,
            },
            body: std::mem::take(&mut incoming.prepared.body),
            options,
        };
        let (reply, record) = match self.filters.scan(&chosen, scan).await {
            Outcome::Accept {
                body,
                recipients,
                record,
            } => {
                incoming.prepared.body = body;
                if let Some(r) = recipients {
                    incoming.recipients = r;
                }
                incoming.scan = Some(record);
                return Ok(());
            }
            Outcome::Refuse(reply, record) => (reply, record),
            Outcome::Discard(record) => {
                let reply = Reply::with_status(250, (2, 0, 0), "message accepted");
                (reply, record)
            }
        };
        self.log.write(
            "scan",
            &ScanRefusal {
                message_id: &incoming.prepared.message_id,
                sender: &incoming.sender,
                recipients: incoming.recipients.len(),
                ip: peer.ip(),
                scan: &record,
                reply: reply.to_string(),
            },
        );
        Err(reply)
    }
}
