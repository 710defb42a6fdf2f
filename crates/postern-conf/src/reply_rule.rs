//! Reply rules: how a reply from a destination is classed, and what the
//! engine does about it. The engine ships a rule table; `Reply_Rule`
//! stanzas add rules of the operator's, which are tried first.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::Location;
use crate::keywords::parse_keyword;

keyword_enum!(
    /// A reply's class: a stable name for what the destination meant.
    ReplyClass {
        /// Accepted.
        Delivered => "delivered",
        /// The mailbox does not exist.
        InvalidRecipient => "invalid_recipient",
        /// The domain does not exist or takes no mail.
        BadDomain => "bad_domain",
        /// The mailbox is over its quota.
        MailboxFull => "mailbox_full",
        /// The host refuses more connections from us.
        TooManyConnections => "too_many_connections",
        /// The host asks us to send more slowly.
        RateLimited => "rate_limited",
        /// Refused for the sender's reputation (block lists).
        SpamBlock => "spam_block",
        /// Refused for the message's content.
        SpamContent => "spam_content",
        /// Refused by another policy.
        Policy => "policy",
        /// AUTH failed or is required.
        Authentication => "authentication",
        /// TLS failed or is required.
        Tls => "tls",
        /// No route, a mail loop, or a configuration problem.
        Routing => "routing",
        /// The host stopped answering or the connection broke.
        Timeout => "timeout",
        /// The connection could not be made.
        ConnectionRefused => "connection_refused",
        /// Any other transient reply.
        OtherTransient => "other_transient",
        /// Any other permanent reply.
        OtherPermanent => "other_permanent",
    }
);

impl ReplyClass {
    /// Every class, for metrics registered at zero.
    pub const ALL: [ReplyClass; 16] = [
        ReplyClass::Delivered,
        ReplyClass::InvalidRecipient,
        ReplyClass::BadDomain,
        ReplyClass::MailboxFull,
        ReplyClass::TooManyConnections,
        ReplyClass::RateLimited,
        ReplyClass::SpamBlock,
        ReplyClass::SpamContent,
        ReplyClass::Policy,
        ReplyClass::Authentication,
        ReplyClass::Tls,
        ReplyClass::Routing,
        ReplyClass::Timeout,
        ReplyClass::ConnectionRefused,
        ReplyClass::OtherTransient,
        ReplyClass::OtherPermanent,
    ];
}

keyword_enum!(
    /// What the engine does with a reply a rule matches.
    RuleAction {
        /// The usual: by the reply's code (retry a 4xx, fail a 5xx), and
        /// "slow down" classes steer the host's adaptive limits.
        Default => "default",
        /// Lower the host's connections and rate (the adaptive loop); the
        /// mail goes back without an attempt counted.
        Backoff => "backoff",
        /// Hold the domain's queue for `Suspend_For`; the mail goes back
        /// without an attempt counted.
        Suspend => "suspend",
        /// Fail the recipients now with the reply (a bounce).
        Bounce => "bounce",
    }
);

/// A pattern of reply codes: a basic code (`421`, `4xx`, `5x1`) or an
/// enhanced status (`4.7.28`, `5.7.*`, `*.1.1`); `x` or `*` matches any
/// digit or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodePattern {
    /// Three digits of the basic code.
    Basic([Option<u8>; 3]),
    /// class.subject.detail.
    Enhanced([Option<u16>; 3]),
}

fn any(s: &str) -> bool {
    s == "x" || s == "X" || s == "*"
}

impl FromStr for CodePattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?} is not a reply code pattern: a code like 421, 4xx, or an enhanced status like 4.7.28, 5.7.*"
            )
        };
        if s.contains('.') {
            let parts: Vec<&str> = s.split('.').collect();
            let [a, b, c] = parts.as_slice() else {
                return Err(bad());
            };
            let part = |p: &str| -> Result<Option<u16>, String> {
                if any(p) {
                    return Ok(None);
                }
                p.parse::<u16>().map(Some).map_err(|_| bad())
            };
            let class = part(a)?;
            if class.is_some_and(|c| !(2..=5).contains(&c)) {
                return Err(bad());
            }
            return Ok(CodePattern::Enhanced([class, part(b)?, part(c)?]));
        }
        let chars: Vec<char> = s.chars().collect();
        let [a, b, c] = chars.as_slice() else {
            return Err(bad());
        };
        let digit = |ch: char| -> Result<Option<u8>, String> {
            if any(&ch.to_string()) {
                return Ok(None);
            }
            ch.to_digit(10)
                .and_then(|d| u8::try_from(d).ok())
                .map(Some)
                .ok_or_else(bad)
        };
        let first = digit(*a)?;
        if first.is_some_and(|d| !(2..=5).contains(&d)) {
            return Err(bad());
        }
        Ok(CodePattern::Basic([first, digit(*b)?, digit(*c)?]))
    }
}

impl CodePattern {
    /// True when a reply with this code and enhanced status matches.
    pub fn matches(&self, code: u16, status: Option<(u8, u8, u8)>) -> bool {
        fn fits<T: PartialEq>(pattern: &[Option<T>; 3], value: [T; 3]) -> bool {
            pattern
                .iter()
                .zip(value)
                .all(|(p, v)| p.as_ref().is_none_or(|p| *p == v))
        }
        match self {
            CodePattern::Basic(p) => {
                let digits = [code / 100, code / 10 % 10, code % 10]
                    .map(|d| u8::try_from(d).unwrap_or(u8::MAX));
                fits(p, digits)
            }
            CodePattern::Enhanced(p) => {
                status.is_some_and(|(c, s, d)| fits(p, [u16::from(c), u16::from(s), u16::from(d)]))
            }
        }
    }
}

impl fmt::Display for CodePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn show<T: fmt::Display>(p: &Option<T>) -> String {
            p.as_ref()
                .map_or_else(|| "x".to_owned(), ToString::to_string)
        }
        match self {
            CodePattern::Basic(p) => write!(f, "{}{}{}", show(&p[0]), show(&p[1]), show(&p[2])),
            CodePattern::Enhanced(p) => {
                write!(f, "{}.{}.{}", show(&p[0]), show(&p[1]), show(&p[2]))
            }
        }
    }
}

/// One `Reply_Rule` stanza.
#[derive(Debug, Clone)]
pub struct ReplyRule {
    /// The stanza's label.
    pub name: String,
    /// Where it was written.
    pub at: Location,
    /// Codes it matches (any when unset).
    pub code: Option<CodePattern>,
    /// A regex on the reply text, case-insensitive (any when unset).
    pub pattern: Option<String>,
    /// Replies of this shipped class only (any when unset).
    pub for_class: Option<ReplyClass>,
    /// The class it gives (the shipped table's when unset).
    pub class: Option<ReplyClass>,
    /// What to do (by the class when unset).
    pub action: RuleAction,
    /// How long `suspend` holds the queue.
    pub suspend_for: Duration,
    /// Only for this binding, domain or MX host name.
    pub binding: Option<String>,
    /// Only for this destination domain.
    pub domain: Option<String>,
    /// Only for this MX host name.
    pub host: Option<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn code_patterns_match_codes_and_statuses() {
        let p = |s: &str| s.parse::<CodePattern>().unwrap();
        assert!(p("421").matches(421, None));
        assert!(!p("421").matches(451, None));
        assert!(p("4xx").matches(451, Some((4, 7, 1))));
        assert!(p("4.7.28").matches(451, Some((4, 7, 28))));
        assert!(!p("4.7.28").matches(451, None));
        assert!(p("5.7.*").matches(550, Some((5, 7, 1))));
        assert!(p("x.1.1").matches(550, Some((5, 1, 1))));
        assert_eq!(p("5.7.x").to_string(), "5.7.x");
        for bad in ["42", "4211", "6xx", "4.7", "9.1.1", "a.b.c"] {
            assert!(bad.parse::<CodePattern>().is_err(), "{bad}");
        }
    }
}
