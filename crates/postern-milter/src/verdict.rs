//! What a filter decided about a message, the changes it asked for, and
//! the spam score its headers carry.

use postern_smtp::{Reply, ReplyParser};

use crate::message::Message;
use crate::wire::Response;

/// The filter's decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Decision {
    /// Accept (with the changes asked for).
    #[default]
    Accept,
    /// Refuse: the filter's reply, or `550 5.7.1` when it gave none.
    Reject(Option<Reply>),
    /// Fail for now: the filter's reply, or `451 4.7.1`.
    Tempfail(Option<Reply>),
    /// Accept and drop the message.
    Discard,
}

impl Decision {
    /// A `SMFIR_REPLYCODE` text: a 4xx reply is a tempfail, anything else
    /// a reject.
    pub fn from_reply_code(text: &str) -> Decision {
        let mut wire = text.replace("\r\n", "\n").replace('\n', "\r\n");
        wire.push_str("\r\n");
        let mut bytes = wire.as_bytes();
        let reply = ReplyParser::default().parse(&mut bytes).ok().flatten();
        match reply {
            Some(r) if (400..500).contains(&r.code) => Decision::Tempfail(Some(r)),
            Some(r) if r.code >= 500 => Decision::Reject(Some(r)),
            _ => Decision::Reject(None),
        }
    }

    /// The decision a reply makes, if it makes one (`accept`, `reject`,
    /// `tempfail`, `discard`, a reply code); `continue` and changes make
    /// none.
    pub(crate) fn of(reply: &Response) -> Option<Decision> {
        Some(match reply {
            Response::Accept => Decision::Accept,
            Response::Reject => Decision::Reject(None),
            Response::Tempfail => Decision::Tempfail(None),
            Response::Discard => Decision::Discard,
            Response::ReplyCode(text) => Decision::from_reply_code(text),
            _ => return None,
        })
    }

    /// The SMTP reply a refused or tempfailed message gets.
    pub fn reply(&self) -> Option<Reply> {
        match self {
            Decision::Reject(r) => Some(r.clone().unwrap_or_else(|| {
                Reply::with_status(550, (5, 7, 1), "Message refused by the content filter")
            })),
            Decision::Tempfail(r) => Some(r.clone().unwrap_or_else(|| {
                Reply::with_status(451, (4, 7, 1), "Message deferred by the content filter")
            })),
            Decision::Accept | Decision::Discard => None,
        }
    }

    /// `accept`, `reject`, `tempfail` or `discard`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Accept => "accept",
            Decision::Reject(_) => "reject",
            Decision::Tempfail(_) => "tempfail",
            Decision::Discard => "discard",
        }
    }
}

/// A filter's answer: its decision, and the changes it asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// What to do with the message.
    pub decision: Decision,
    /// Header and body changes, in the order asked.
    pub changes: Vec<Response>,
    /// The quarantine reason, when the filter asked for one.
    pub quarantine: Option<String>,
}

impl Verdict {
    pub(crate) fn decided(decision: Decision) -> Verdict {
        Verdict {
            decision,
            ..Verdict::default()
        }
    }

    pub(crate) fn with(mut self, decision: Decision) -> Verdict {
        self.decision = decision;
        self
    }

    pub(crate) fn push(&mut self, change: Response) {
        match change {
            Response::Quarantine(reason) => self.quarantine = Some(reason),
            other => self.changes.push(other),
        }
    }

    /// Makes the changes on `message`. A replaced body is the chunks sent,
    /// in order.
    pub fn apply(&self, message: &mut Message) {
        let mut body: Option<Vec<u8>> = None;
        for change in &self.changes {
            match change {
                Response::AddHeader { name, value } => message.add_header(name, value),
                Response::InsertHeader { index, name, value } => {
                    message.insert_header(
                        usize::try_from(*index).unwrap_or(usize::MAX),
                        name,
                        value,
                    );
                }
                Response::ChangeHeader { index, name, value } => {
                    message.change_header(
                        usize::try_from(*index).unwrap_or(usize::MAX),
                        name,
                        value,
                    );
                }
                Response::ReplaceBody(chunk) => {
                    body.get_or_insert_with(Vec::new).extend_from_slice(chunk)
                }
                _ => {}
            }
        }
        if let Some(body) = body {
            message.body = body;
        }
    }

    /// The spam score the filter's headers give: `X-Spamd-Result`
    /// (`[score / threshold]`, rspamd), `X-Spam-Status` (`score=`,
    /// SpamAssassin and rspamd), `X-Spam-Score` or `X-Rspamd-Score`.
    pub fn score(&self) -> Option<f64> {
        self.changes.iter().find_map(|change| match change {
            Response::AddHeader { name, value }
            | Response::InsertHeader { name, value, .. }
            | Response::ChangeHeader { name, value, .. } => header_score(name, value),
            _ => None,
        })
    }
}

fn number(text: &str) -> Option<f64> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(text.len());
    text.get(..end)?
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite())
}

/// The score in one header a scanner adds, if it is one of those known.
pub fn header_score(name: &str, value: &str) -> Option<f64> {
    let name = name.to_ascii_lowercase();
    let value = value.trim();
    match name.as_str() {
        "x-spamd-result" => number(value.split_once('[')?.1.trim_start()),
        "x-spam-status" => number(value.split_once("score=")?.1),
        "x-spam-score" | "x-rspamd-score" => number(value),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_decide_by_class() {
        let reject = Decision::from_reply_code("554 5.7.1 Spam message rejected");
        let reply = reject.reply().unwrap();
        assert_eq!(
            (reply.code, reply.text()),
            (554, "Spam message rejected".into())
        );
        assert_eq!(reply.status.unwrap().to_string(), "5.7.1");
        assert!(matches!(
            Decision::from_reply_code("451 4.7.1 try later"),
            Decision::Tempfail(Some(_))
        ));
        assert_eq!(Decision::from_reply_code("garbage"), Decision::Reject(None));
        assert_eq!(Decision::Reject(None).reply().unwrap().code, 550);
        assert_eq!(Decision::Tempfail(None).reply().unwrap().code, 451);
    }

    #[test]
    fn scores_come_from_the_known_headers() {
        assert_eq!(
            header_score(
                "X-Spamd-Result",
                "default: False [9.00 / 15.00];\n\tSYM(1.00)"
            ),
            Some(9.0)
        );
        assert_eq!(
            header_score("X-Spam-Status", "Yes, score=12.5 required=5.0"),
            Some(12.5)
        );
        assert_eq!(header_score("X-Spam-Score", "-1.2"), Some(-1.2));
        assert_eq!(header_score("Subject", "score=5"), None);
        assert_eq!(header_score("X-Spam-Status", "No"), None);
    }

    #[test]
    fn changes_apply_in_order() {
        let mut verdict = Verdict::default();
        verdict.push(Response::AddHeader {
            name: "X-Spamd-Result".into(),
            value: "default: True [7.50 / 15.00]".into(),
        });
        verdict.push(Response::ChangeHeader {
            index: 1,
            name: "Subject".into(),
            value: "*** SPAM *** hi".into(),
        });
        verdict.push(Response::Quarantine("held".into()));
        let mut m = Message::parse(b"Subject: hi\r\n\r\nbody\r\n");
        verdict.apply(&mut m);
        assert_eq!(m.header("subject").as_deref(), Some("*** SPAM *** hi"));
        assert_eq!(verdict.score(), Some(7.5));
        assert_eq!(verdict.quarantine.as_deref(), Some("held"));
    }
}
