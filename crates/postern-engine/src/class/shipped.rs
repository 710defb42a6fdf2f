//! The shipped rule table: enhanced status codes first, then what large
//! providers write in their replies. The first row that matches gives the
//! class; a reply no row matches is `other_transient` or
//! `other_permanent` by its code.

use postern_conf::{CodePattern, ReplyClass};
use regex::{Regex, RegexBuilder};

use ReplyClass as C;

/// Rows: a code pattern, an optional regex on the text, the class.
const ROWS: &[(&str, Option<&str>, ReplyClass)] = &[
    // Postern's own replies for connection failures (postern-smtp).
    ("x.4.1", None, C::ConnectionRefused),
    ("x.4.2", None, C::Timeout),
    ("x.4.7", None, C::Timeout),
    ("x.7.5", None, C::Tls),
    ("x.7.6", None, C::Tls),
    ("x.7.10", None, C::Tls),
    ("x.7.8", None, C::Authentication),
    ("x.7.9", None, C::Authentication),
    ("530", Some("auth"), C::Authentication),
    // Slow down.
    ("x.7.28", None, C::RateLimited),
    (
        "4xx",
        Some(
            r"rate.?limit|at a rate|too many (messages|mails|emails)|sending rate|throttl|unusual rate",
        ),
        C::RateLimited,
    ),
    (
        "4xx",
        Some(r"too many (connections|concurrent|sessions|hosts)|connection limit"),
        C::TooManyConnections,
    ),
    ("421", None, C::TooManyConnections),
    // The mailbox and the domain.
    ("x.2.2", None, C::MailboxFull),
    (
        "xxx",
        Some(r"mailbox (is )?full|over ?quota|quota exceeded|insufficient (system )?storage"),
        C::MailboxFull,
    ),
    ("x.1.10", None, C::BadDomain),
    ("x.1.2", None, C::BadDomain),
    (
        "xxx",
        Some(r"domain (not found|does not exist)|no such domain|host not found|null mx"),
        C::BadDomain,
    ),
    ("x.1.1", None, C::InvalidRecipient),
    (
        "xxx",
        Some(
            r"user unknown|unknown user|no such user|does not exist|invalid recipient|recipient (address )?rejected|no mailbox|mailbox unavailable",
        ),
        C::InvalidRecipient,
    ),
    // Reputation, content, policy.
    (
        "xxx",
        Some(r"block ?list|black ?list|spamhaus|spamcop|\brbl\b|dnsbl|reputation|listed|blocked"),
        C::SpamBlock,
    ),
    (
        "xxx",
        Some(r"spam|content|virus|malware|phish"),
        C::SpamContent,
    ),
    ("x.7.x", None, C::Policy),
    // Routing and our own configuration.
    ("x.4.4", None, C::Routing),
    ("x.4.6", None, C::Routing),
    ("x.4.0", None, C::Routing),
    ("x.3.5", None, C::Routing),
];

/// The table, compiled.
pub(super) fn table() -> Vec<(CodePattern, Option<Regex>, ReplyClass)> {
    ROWS.iter()
        .filter_map(|(code, pattern, class)| {
            let code = code.parse().ok()?;
            let pattern = match pattern {
                Some(p) => Some(RegexBuilder::new(p).case_insensitive(true).build().ok()?),
                None => None,
            };
            Some((code, pattern, *class))
        })
        .collect()
}

/// A reply no row matched.
pub(super) fn by_code(code: u16) -> ReplyClass {
    if code >= 500 {
        C::OtherPermanent
    } else {
        C::OtherTransient
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_row_compiles() {
        assert_eq!(super::table().len(), super::ROWS.len());
    }
}
