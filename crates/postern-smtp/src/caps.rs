//! What a server offers in its EHLO or LHLO reply.

use crate::Reply;

/// The extensions Postern uses, from an EHLO/LHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870), with its limit when given (0: no fixed limit).
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// CHUNKING (RFC 3030): BDAT instead of DATA.
    pub chunking: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// AUTH mechanisms, upper-case (RFC 4954).
    pub auth: Vec<String>,
    /// XCLIENT (Postfix) and the attributes it takes, upper-case; `None`
    /// when not offered.
    pub xclient: Option<Vec<String>>,
}

impl Capabilities {
    /// Reads the keyword lines of an EHLO reply (the first line is the
    /// server's name and is skipped). Unknown keywords are ignored.
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut caps = Self::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "STARTTLS" => caps.starttls = true,
                "CHUNKING" => caps.chunking = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "XCLIENT" => {
                    caps.xclient = Some(words.map(str::to_ascii_uppercase).collect());
                }
                "AUTH" => {
                    for m in words {
                        let m = m.to_ascii_uppercase();
                        if !caps.auth.contains(&m) {
                            caps.auth.push(m);
                        }
                    }
                }
                _ => {}
            }
        }
        caps
    }

    /// True when `mechanism` is offered.
    pub fn offers_auth(&self, mechanism: &str) -> bool {
        self.auth.iter().any(|m| m.eq_ignore_ascii_case(mechanism))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_read_case_insensitively() {
        let reply = Reply {
            code: 250,
            status: None,
            lines: [
                "mx.example greets you",
                "pipelining",
                "SIZE 35882577",
                "8BITMIME",
                "SMTPUTF8",
                "STARTTLS",
                "chunking",
                "ENHANCEDSTATUSCODES",
                "AUTH PLAIN login",
                "X-UNKNOWN 1",
            ]
            .map(String::from)
            .to_vec(),
        };
        let caps = Capabilities::from_ehlo(&reply);
        assert!(caps.pipelining && caps.eight_bit_mime && caps.smtputf8);
        assert!(caps.starttls && caps.chunking && caps.enhanced_status_codes);
        assert_eq!(caps.size, Some(35_882_577));
        assert!(caps.offers_auth("LOGIN") && caps.offers_auth("plain"));
        assert!(!caps.offers_auth("CRAM-MD5"));
        assert_eq!(
            Capabilities::from_ehlo(&Reply::new(250, None, "only a name")),
            Capabilities::default()
        );
    }
}
