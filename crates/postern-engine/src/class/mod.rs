//! Every reply gets a class ([`ReplyClass`]): what the destination meant,
//! as a stable name for the delivery log, bounces and metrics. The
//! operator's `Reply_Rule` stanzas are tried first, in the order written;
//! then the shipped table (`shipped.rs`). A rule may also say what to do:
//! back off, suspend the queue, or bounce at once.

mod shipped;

use std::time::Duration;

use postern_conf::{CodePattern, Config, ReplyClass, RuleAction};
use postern_smtp::Reply;
use regex::{Regex, RegexBuilder};

/// What the engine does with a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// By the reply's code: retry a 4xx, fail a 5xx.
    Default,
    /// Slow the host down; the mail goes back without an attempt counted.
    Backoff,
    /// Hold the domain's queue this long; no attempt counted.
    Suspend(Duration),
    /// Fail the recipients now.
    Bounce,
}

/// A reply's class and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) class: ReplyClass,
    pub(crate) action: Action,
}

/// Where a reply came from, for rules limited to a binding, a domain or
/// an MX host.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub(crate) binding: &'a str,
    pub(crate) domain: &'a str,
    pub(crate) host: Option<&'a str>,
}

/// One rule: what it matches and what it gives.
#[derive(Debug)]
struct Rule {
    code: Option<CodePattern>,
    pattern: Option<Regex>,
    for_class: Option<ReplyClass>,
    class: Option<ReplyClass>,
    action: RuleAction,
    suspend_for: Duration,
    binding: Option<String>,
    domain: Option<String>,
    host: Option<String>,
}

impl Rule {
    fn matches(&self, reply: &Reply, text: &str, shipped: ReplyClass) -> bool {
        let status = reply.status.map(|s| (s.class, s.subject, s.detail));
        self.code.is_none_or(|c| c.matches(reply.code, status))
            && self.pattern.as_ref().is_none_or(|p| p.is_match(text))
            && self.for_class.is_none_or(|c| c == shipped)
    }

    fn applies(&self, cx: &Context<'_>) -> bool {
        let same = |want: &Option<String>, have: Option<&str>| {
            want.as_ref()
                .is_none_or(|w| have.is_some_and(|h| w.eq_ignore_ascii_case(h)))
        };
        same(&self.binding, Some(cx.binding))
            && same(&self.domain, Some(cx.domain))
            && same(&self.host, cx.host)
    }
}

/// The rules in force: the operator's, then the shipped table.
#[derive(Debug)]
pub(crate) struct Classifier {
    configured: Vec<Rule>,
    shipped: Vec<(CodePattern, Option<Regex>, ReplyClass)>,
}

fn regex(source: &str) -> Option<Regex> {
    RegexBuilder::new(source)
        .case_insensitive(true)
        .build()
        .ok()
}

impl Classifier {
    /// The shipped table and the configuration's `Reply_Rule`s.
    pub(crate) fn new(config: &Config) -> Self {
        let configured = config
            .reply_rules
            .iter()
            .map(|r| Rule {
                code: r.code,
                pattern: r.pattern.as_deref().and_then(regex),
                for_class: r.for_class,
                class: r.class,
                action: r.action,
                suspend_for: r.suspend_for,
                binding: r.binding.clone(),
                domain: r.domain.clone(),
                host: r.host.clone(),
            })
            .collect();
        Self {
            configured,
            shipped: shipped::table(),
        }
    }

    /// The shipped table's class of a reply.
    fn shipped_class(&self, reply: &Reply, text: &str) -> ReplyClass {
        let status = reply.status.map(|s| (s.class, s.subject, s.detail));
        self.shipped
            .iter()
            .find(|(code, pattern, _)| {
                code.matches(reply.code, status)
                    && pattern.as_ref().is_none_or(|p| p.is_match(text))
            })
            .map_or_else(|| shipped::by_code(reply.code), |(_, _, class)| *class)
    }

    /// The class of a reply and what to do about it.
    pub(crate) fn judge(&self, reply: &Reply, cx: &Context<'_>) -> Verdict {
        if reply.is_positive() {
            return Verdict {
                class: ReplyClass::Delivered,
                action: Action::Default,
            };
        }
        let text = reply.text();
        let shipped = self.shipped_class(reply, &text);
        let rule = self
            .configured
            .iter()
            .find(|r| r.applies(cx) && r.matches(reply, &text, shipped));
        let class = rule.and_then(|r| r.class).unwrap_or(shipped);
        let action = match rule.map(|r| (r.action, r.suspend_for)) {
            Some((RuleAction::Backoff, _)) => Action::Backoff,
            Some((RuleAction::Suspend, d)) => Action::Suspend(d),
            Some((RuleAction::Bounce, _)) => Action::Bounce,
            Some((RuleAction::Default, _)) | None => default_action(class),
        };
        Verdict { class, action }
    }
}

/// What a class calls for when no rule says.
fn default_action(class: ReplyClass) -> Action {
    match class {
        ReplyClass::TooManyConnections | ReplyClass::RateLimited => Action::Backoff,
        _ => Action::Default,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn classify(code: u16, status: (u8, u8, u8), text: &str) -> ReplyClass {
        let c = Classifier::new(&Config::default());
        let cx = Context {
            binding: "default",
            domain: "example.com",
            host: None,
        };
        c.judge(&Reply::with_status(code, status, text), &cx).class
    }

    #[test]
    fn the_shipped_table_names_what_providers_say() {
        use ReplyClass as C;
        let cases = [
            (250, (2, 0, 0), "ok", C::Delivered),
            (
                550,
                (5, 1, 1),
                "The email account that you tried to reach does not exist",
                C::InvalidRecipient,
            ),
            (550, (5, 1, 10), "null MX", C::BadDomain),
            (552, (5, 2, 2), "mailbox full", C::MailboxFull),
            (
                452,
                (4, 2, 2),
                "The email account that you tried to reach is over quota",
                C::MailboxFull,
            ),
            (
                421,
                (4, 7, 0),
                "Too many connections from your IP",
                C::TooManyConnections,
            ),
            (
                421,
                (4, 7, 0),
                "Try again later, closing connection",
                C::TooManyConnections,
            ),
            (
                451,
                (4, 7, 28),
                "Our system has detected an unusual rate of mail",
                C::RateLimited,
            ),
            (
                450,
                (4, 2, 1),
                "The user you are trying to contact is receiving mail at a rate that prevents additional messages",
                C::RateLimited,
            ),
            (
                550,
                (5, 7, 1),
                "Service unavailable; Client host blocked using Spamhaus",
                C::SpamBlock,
            ),
            (
                554,
                (5, 7, 1),
                "Message rejected due to content restrictions (spam)",
                C::SpamContent,
            ),
            (
                550,
                (5, 7, 26),
                "Unauthenticated email is not accepted from this domain (DMARC policy)",
                C::Policy,
            ),
            (
                451,
                (4, 7, 6),
                "TLS is required and mx does not offer STARTTLS",
                C::Tls,
            ),
            (
                451,
                (4, 7, 8),
                "AUTH failed: 535 bad credentials",
                C::Authentication,
            ),
            (
                451,
                (4, 4, 1),
                "cannot connect to 127.0.0.1:25: Connection refused",
                C::ConnectionRefused,
            ),
            (451, (4, 4, 2), "timeout in DATA", C::Timeout),
            (
                550,
                (5, 4, 6),
                "mail loop: this server is an MX host",
                C::Routing,
            ),
            (
                451,
                (4, 3, 0),
                "temporary failure, try again",
                C::OtherTransient,
            ),
            (554, (5, 0, 0), "transaction failed", C::OtherPermanent),
        ];
        for (code, status, text, want) in cases {
            assert_eq!(classify(code, status, text), want, "{code} {text}");
        }
    }

    #[test]
    fn a_rule_can_act_on_a_whole_class() {
        let config = Config::from_text(
            "Reply_Rule listed {\n  For_Class = spam_block\n  Action = bounce\n}",
            std::path::Path::new("t.conf"),
        )
        .unwrap();
        let c = Classifier::new(&config);
        let cx = Context {
            binding: "default",
            domain: "example.com",
            host: None,
        };
        let listed = Reply::with_status(451, (4, 7, 1), "Client host blocked using Spamhaus");
        assert_eq!(c.judge(&listed, &cx).action, Action::Bounce);
        let busy = Reply::with_status(451, (4, 3, 0), "try again");
        assert_eq!(c.judge(&busy, &cx).action, Action::Default);
    }

    #[test]
    fn an_operators_rule_comes_first_and_can_be_limited_to_a_domain() {
        let config = Config::from_text(
            "Reply_Rule quota {\n  Match = \"/daily sending quota/\"\n  Class = rate_limited\n  Action = suspend\n  Suspend_For = 60\n  For_Domain = \"gmail.test\"\n}",
            std::path::Path::new("t.conf"),
        )
        .unwrap();
        let c = Classifier::new(&config);
        let reply = Reply::with_status(550, (5, 4, 5), "Daily sending quota exceeded");
        let gmail = Context {
            binding: "default",
            domain: "gmail.test",
            host: None,
        };
        let v = c.judge(&reply, &gmail);
        assert_eq!(v.class, ReplyClass::RateLimited);
        assert_eq!(v.action, Action::Suspend(Duration::from_secs(60)));
        let other = Context {
            domain: "other.test",
            ..gmail
        };
        assert_eq!(c.judge(&reply, &other).action, Action::Default);
    }
}
