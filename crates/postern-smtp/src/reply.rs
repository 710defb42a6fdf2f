//! SMTP replies: the typed [`Reply`] with its enhanced status code, and the
//! incremental [`ReplyParser`] (smtp-proto's response receiver underneath).

use std::fmt;

use smtp_proto::response::parser::ResponseReceiver;

use crate::CodecError;

/// An enhanced status code (RFC 3463): `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    /// 2 (success), 4 (transient) or 5 (permanent).
    pub class: u8,
    /// The subject (0–7 defined).
    pub subject: u8,
    /// The detail.
    pub detail: u8,
}

impl EnhancedStatus {
    /// `class.subject.detail`.
    pub const fn new(class: u8, subject: u8, detail: u8) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }

    /// Appends `class.subject.detail`: replies and log lines write it for
    /// every message, so without `fmt`'s machinery.
    pub fn write_to(self, out: &mut Vec<u8>) {
        let mut digits = itoa::Buffer::new();
        out.extend_from_slice(digits.format(self.class).as_bytes());
        out.push(b'.');
        out.extend_from_slice(digits.format(self.subject).as_bytes());
        out.push(b'.');
        out.extend_from_slice(digits.format(self.detail).as_bytes());
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One SMTP reply, single- or multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The enhanced status code, when the server sent one.
    pub status: Option<EnhancedStatus>,
    /// The text lines, without code, status and line endings.
    pub lines: Vec<String>,
}

/// How a reply (or an outcome built from one) counts for delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx, 3xx: it worked (so far).
    Positive,
    /// 4xx: try again later.
    Transient,
    /// 5xx: it will never work.
    Permanent,
}

impl Reply {
    /// A one-line reply.
    pub fn new(code: u16, status: Option<EnhancedStatus>, text: impl Into<String>) -> Self {
        Self {
            code,
            status,
            lines: vec![text.into()],
        }
    }

    /// A one-line reply with an enhanced status `class.subject.detail`.
    pub fn with_status(
        code: u16,
        (class, subject, detail): (u8, u8, u8),
        text: impl Into<String>,
    ) -> Self {
        Self::new(
            code,
            Some(EnhancedStatus::new(class, subject, detail)),
            text,
        )
    }

    /// Positive, transient or permanent, by the first digit of the code.
    pub fn class(&self) -> Class {
        match self.code {
            200..=399 => Class::Positive,
            400..=499 => Class::Transient,
            _ => Class::Permanent,
        }
    }

    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        self.class() == Class::Positive
    }

    /// The text, lines joined by a space.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// The reply on the wire: `CODE[-| ]STATUS TEXT\r\n` per line.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        let empty = [String::new()];
        let lines = if self.lines.is_empty() {
            &empty[..]
        } else {
            &self.lines[..]
        };
        for (i, line) in lines.iter().enumerate() {
            out.extend_from_slice(itoa::Buffer::new().format(self.code).as_bytes());
            out.push(if i == last { b' ' } else { b'-' });
            if let Some(s) = self.status {
                s.write_to(out);
                out.push(b' ');
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl fmt::Display for Reply {
    /// `451 4.7.6 text` on one line, as a log or a bounce shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(s) = self.status {
            write!(f, " {s}")?;
        }
        let text = self.text();
        if !text.is_empty() {
            write!(f, " {text}")?;
        }
        Ok(())
    }
}

/// Parses replies as bytes arrive. A reply cut anywhere is "not enough
/// bytes yet"; a reply longer than 4 KiB or not of the form `DDD[ -]...`
/// is an error, and the connection should be closed.
#[derive(Default)]
pub struct ReplyParser {
    inner: ResponseReceiver,
}

impl fmt::Debug for ReplyParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyParser")
    }
}

impl ReplyParser {
    /// The next complete reply from `bytes`, advancing it past what was
    /// used; `Ok(None)` when `bytes` was used up without completing one
    /// (the parser keeps the partial reply).
    pub fn parse(&mut self, bytes: &mut &[u8]) -> Result<Option<Reply>, CodecError> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let mut iter = bytes.iter();
        let result = self.inner.parse(&mut iter);
        *bytes = iter.as_slice();
        match result {
            Ok(response) => {
                self.inner.reset();
                if !(200..=599).contains(&response.code) {
                    return Err(CodecError::BadReply(format!(
                        "reply code {} out of range",
                        response.code
                    )));
                }
                let status = match response.esc {
                    [0, _, _] => None,
                    [class, subject, detail] => Some(EnhancedStatus::new(class, subject, detail)),
                };
                let lines = response
                    .message
                    .split('\n')
                    .map(|l| l.trim_end_matches('\r').to_owned())
                    .collect();
                Ok(Some(Reply {
                    code: response.code,
                    status,
                    lines,
                }))
            }
            Err(smtp_proto::Error::NeedsMoreData { .. }) => Ok(None),
            Err(smtp_proto::Error::ResponseTooLong) => Err(CodecError::LineTooLong),
            Err(e) => Err(CodecError::BadReply(format!("{e:?}"))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Vec<Reply> {
        let mut parser = ReplyParser::default();
        let mut bytes = input;
        let mut out = Vec::new();
        while let Some(r) = parser.parse(&mut bytes).unwrap() {
            out.push(r);
        }
        assert!(bytes.is_empty());
        out
    }

    #[test]
    fn single_and_multi_line_replies_with_enhanced_codes() {
        let replies = parse_all(
            b"250 2.1.0 Sender ok\r\n550-5.1.1 No such user\r\n550 5.1.1 here\r\n354 go ahead\r\n",
        );
        assert_eq!(replies[0], Reply::with_status(250, (2, 1, 0), "Sender ok"));
        assert_eq!(replies[1].code, 550);
        assert_eq!(replies[1].status, Some(EnhancedStatus::new(5, 1, 1)));
        assert_eq!(replies[1].lines, ["No such user", "here"]);
        assert_eq!(replies[2], Reply::new(354, None, "go ahead"));
    }

    #[test]
    fn a_reply_cut_anywhere_is_completed_by_the_next_bytes() {
        let wire = b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n";
        for cut in 0..wire.len() {
            let mut parser = ReplyParser::default();
            let (head, tail) = wire.split_at(cut);
            let mut bytes = head;
            assert_eq!(parser.parse(&mut bytes).unwrap(), None, "cut at {cut}");
            let mut bytes = tail;
            let reply = parser.parse(&mut bytes).unwrap().unwrap();
            assert_eq!(reply.lines, ["mx.example", "PIPELINING", "SIZE 1000"]);
        }
    }

    #[test]
    fn status_codes_with_two_digit_details() {
        let r = parse_all(b"550 5.1.10 Null MX\r\n");
        assert_eq!(r[0].status, Some(EnhancedStatus::new(5, 1, 10)));
        assert_eq!(r[0].to_string(), "550 5.1.10 Null MX");
    }

    #[test]
    fn garbage_and_overlong_replies_are_errors() {
        let mut p = ReplyParser::default();
        assert!(p.parse(&mut &b"hello\r\n"[..]).is_err());
        let mut p = ReplyParser::default();
        let long = [b"250 ".as_slice(), &[b'x'; 5000], b"\r\n"].concat();
        assert!(p.parse(&mut &long[..]).is_err());
        let mut p = ReplyParser::default();
        assert!(p.parse(&mut &b"999 what\r\n"[..]).is_err());
    }

    #[test]
    fn replies_print_back_to_the_wire() {
        let r = Reply {
            code: 250,
            status: Some(EnhancedStatus::new(2, 0, 0)),
            lines: vec!["one".into(), "two".into()],
        };
        let mut out = Vec::new();
        r.write_to(&mut out);
        assert_eq!(out, b"250-2.0.0 one\r\n250 2.0.0 two\r\n");
        assert_eq!(parse_all(&out), [r]);

        let r = Reply::with_status(550, (5, 7, 26), "unauthenticated");
        out.clear();
        r.write_to(&mut out);
        assert_eq!(out, b"550 5.7.26 unauthenticated\r\n");
        assert_eq!(parse_all(&out), [r]);
    }
}
