//! The options whose values are keywords (`Delivery_Method`, `TLS`,
//! `On_Failure` ...): one enum each, read case-insensitively and printed
//! as written.

use std::fmt;
use std::str::FromStr;

macro_rules! keyword_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                parse_keyword(s, &[$(($s, $name::$v)),+])
            }
        }

        impl $name {
            /// The keyword as written in the configuration.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keyword_enum!(
    /// `Delivery_Method`.
    DeliveryMethod {
        /// SMTP with EHLO and its extensions.
        Esmtp => "ESMTP",
        /// Plain SMTP: HELO, no extensions.
        Smtp => "SMTP",
        /// LMTP (RFC 2033): LHLO, one reply per recipient after DATA.
        Lmtp => "LMTP",
    }
);

keyword_enum!(
    /// `TLS` policy for outbound connections.
    TlsMode {
        /// Never STARTTLS.
        No => "no",
        /// STARTTLS when the host offers it.
        IfAvailable => "ifavailable",
        /// STARTTLS or no delivery (`451 4.7.6`, retried).
        Required => "required",
    }
);

keyword_enum!(
    /// `TLS_Verify`: how much of the peer certificate is checked.
    TlsVerify {
        /// Encrypt only.
        No => "no",
        /// The chain must lead to a trusted CA.
        Ca => "ca",
        /// The chain must be trusted and name the host.
        Host => "host",
    }
);

keyword_enum!(
    /// SMTP AUTH mechanism.
    AuthMech {
        /// RFC 4616.
        Plain => "PLAIN",
        /// The LOGIN mechanism.
        Login => "LOGIN",
    }
);

keyword_enum!(
    /// `Recipient_Verification` for relay domains.
    RecipientVerification {
        /// Accept every recipient of a relay domain.
        None => "none",
        /// Ask the domain's route with `RCPT TO` first.
        Callout => "callout",
    }
);

keyword_enum!(
    /// A `Milter` stanza's `On_Failure`: what a message gets when its
    /// filter cannot be asked (down, too slow, speaking nonsense).
    OnFailure {
        /// `451 4.7.1`: the client tries again later.
        Tempfail => "tempfail",
        /// Accept it unscanned (its level is "unscored").
        Accept => "accept",
    }
);

keyword_enum!(
    /// What is done with a message of a spam level.
    SpamAction {
        /// Deliver it as it is (with the filter's own headers).
        Deliver => "deliver",
        /// Add `X-Spam-Level` and `X-Spam-Status`.
        Header => "header",
        /// Prefix its subject with `Spam_Subject_Prefix` (and add the headers).
        Prefix => "prefix",
        /// Deliver it to `Spam_Quarantine` instead of its recipients.
        Quarantine => "quarantine",
        /// Refuse it in the SMTP session (`550 5.7.1`).
        Refuse => "refuse",
    }
);

keyword_enum!(
    /// `Relay_Domain_Verification`: what `Relay_Domains` lists.
    DomainVerification {
        /// The domains accepted from any client.
        Specified => "specified",
        /// The domains refused: every other domain is accepted.
        AllButSpecified => "all_but_specified",
    }
);

/// Matches `s` case-insensitively against `(keyword, value)` pairs.
pub(crate) fn parse_keyword<T: Copy>(s: &str, choices: &[(&str, T)]) -> Result<T, String> {
    choices
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(s))
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(k, _)| *k).collect();
            format!("{s:?} is not one of: {}", names.join(", "))
        })
}
