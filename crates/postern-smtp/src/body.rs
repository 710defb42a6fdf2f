//! The message body on the wire: CRLF line endings, dot-stuffing, and the
//! final `.` line (RFC 5321 sections 2.3.8 and 4.5.2), done while
//! streaming so that a body is never copied whole.

use std::borrow::Cow;

use memchr::{memchr2, memchr3};
use smtp_proto::request::receiver::DataReceiver;

/// Encodes a body chunk by chunk.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    at_line_start: bool,
    pending_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self {
            at_line_start: true,
            pending_cr: false,
        }
    }
}

impl DotStuffer {
    /// Appends `chunk` to `out`: a lone LF or CR becomes CRLF, and a line
    /// starting with `.` gets a second one.
    pub fn encode(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 64 + 4);
        while !chunk.is_empty() {
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
                if let [b'\n', rest @ ..] = chunk {
                    chunk = rest;
                    continue;
                }
            }
            if self.at_line_start
                && let [b'.', rest @ ..] = chunk
            {
                out.extend_from_slice(b"..");
                self.at_line_start = false;
                chunk = rest;
                continue;
            }
            match memchr3(b'\r', b'\n', b'.', chunk) {
                None => {
                    out.extend_from_slice(chunk);
                    self.at_line_start = false;
                    return;
                }
                Some(i) => {
                    let (run, rest) = chunk.split_at(i);
                    out.extend_from_slice(run);
                    if !run.is_empty() {
                        self.at_line_start = false;
                    }
                    let (byte, rest) = match rest {
                        [b, rest @ ..] => (*b, rest),
                        [] => return,
                    };
                    chunk = rest;
                    match byte {
                        b'\r' => self.pending_cr = true,
                        b'\n' => {
                            out.extend_from_slice(b"\r\n");
                            self.at_line_start = true;
                        }
                        _ => {
                            // A dot inside a line (line starts were handled above).
                            out.push(byte);
                            self.at_line_start = false;
                        }
                    }
                }
            }
        }
    }

    /// Ends the body: closes an unterminated last line, then `.` CRLF.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            out.extend_from_slice(b"\r\n");
            self.at_line_start = true;
        }
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = Self::default();
    }
}

/// Reads a body after `354` on the server side: dot-unstuffing and the
/// end at `CRLF . CRLF`, with smtp-proto's receiver underneath.
pub struct BodyReader {
    inner: DataReceiver,
}

impl std::fmt::Debug for BodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyReader")
    }
}

impl Default for BodyReader {
    /// A reader at the start of a body. The receiver is told of the CRLF
    /// that ended the DATA command, so that a first line starting with a
    /// dot, or a lone `.` (an empty message), is read as such.
    fn default() -> Self {
        let mut inner = DataReceiver::new();
        let mut primer = Vec::new();
        inner.ingest(&mut b"\r\n".iter(), &mut primer);
        Self { inner }
    }
}

impl BodyReader {
    /// Appends the body bytes in `bytes` to `out` and advances `bytes`;
    /// true when the final dot was read (`bytes` then starts after it).
    pub fn read(&mut self, bytes: &mut &[u8], out: &mut Vec<u8>) -> bool {
        // Unstuffing only shrinks: room for all of `bytes` means no
        // reallocation while the receiver pushes byte by byte.
        out.reserve(bytes.len());
        let mut iter = bytes.iter();
        let done = self.inner.ingest(&mut iter, out);
        *bytes = iter.as_slice();
        done
    }
}

/// The body as BDAT sends it (RFC 3030): CRLF line endings (a lone CR or
/// LF becomes CRLF), the last line ended, no dot-stuffing; the bytes a
/// server reading DATA would have kept. Borrowed when already so.
pub fn canonical(body: &[u8]) -> Cow<'_, [u8]> {
    if is_canonical(body) {
        return Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len() + body.len() / 64 + 2);
    let mut rest = body;
    while let Some(i) = memchr2(b'\r', b'\n', rest) {
        let (run, tail) = rest.split_at(i);
        out.extend_from_slice(run);
        out.extend_from_slice(b"\r\n");
        rest = match tail {
            [b'\r', b'\n', after @ ..] | [_, after @ ..] => after,
            [] => &[],
        };
    }
    out.extend_from_slice(rest);
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    Cow::Owned(out)
}

fn is_canonical(body: &[u8]) -> bool {
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        return false;
    }
    let mut rest = body;
    while let Some(i) = memchr2(b'\r', b'\n', rest) {
        match (rest.get(i..i + 2), rest.get(i + 2..)) {
            (Some(b"\r\n"), Some(after)) => rest = after,
            _ => return false,
        }
    }
    true
}

/// The whole body encoded in one call.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    let mut s = DotStuffer::default();
    s.encode(body, &mut out);
    s.finish(&mut out);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_reader_finds_the_end_and_unstuffs_the_first_line() {
        for (wire, body) in [
            (&b".\r\nMAIL"[..], &b""[..]),
            (b"..one\r\n.\r\nMAIL", b".one\r\n"),
            (b"a\r\n..\r\n.\r\nMAIL", b"a\r\n.\r\n"),
        ] {
            let mut reader = BodyReader::default();
            let mut out = Vec::new();
            let mut bytes = wire;
            assert!(reader.read(&mut bytes, &mut out));
            assert_eq!(out, body);
            assert_eq!(bytes, b"MAIL");
        }
    }

    #[test]
    fn dots_line_endings_and_the_end_marker() {
        assert_eq!(dot_stuff(b""), b".\r\n");
        assert_eq!(dot_stuff(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(dot_stuff(b"a"), b"a\r\n.\r\n");
        assert_eq!(dot_stuff(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(dot_stuff(b"x\n.y\n..z"), b"x\r\n..y\r\n...z\r\n.\r\n");
        assert_eq!(dot_stuff(b"a.b\rc"), b"a.b\r\nc\r\n.\r\n");
    }

    #[test]
    fn the_canonical_form_is_borrowed_when_already_canonical() {
        assert!(matches!(canonical(b""), Cow::Borrowed(_)));
        assert!(matches!(canonical(b".a\r\n\r\n"), Cow::Borrowed(_)));
        assert_eq!(&*canonical(b"a\nb"), b"a\r\nb\r\n");
        assert_eq!(&*canonical(b"a\r"), b"a\r\n");
        assert_eq!(&*canonical(b"\n\r.x"), b"\r\n\r\n.x\r\n");
    }

    /// Undoes the encoding as a receiver does (RFC 5321 4.5.2).
    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let text = wire.strip_suffix(b".\r\n").unwrap();
        let mut out = Vec::new();
        for line in text.split_inclusive(|b| *b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    fn crlf(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < body.len() {
            match (body[i], body.get(i + 1)) {
                (b'\r', Some(b'\n')) => {
                    out.extend_from_slice(b"\r\n");
                    i += 2;
                    continue;
                }
                (b'\r' | b'\n', _) => out.extend_from_slice(b"\r\n"),
                (b, _) => out.push(b),
            }
            i += 1;
        }
        if !out.is_empty() && !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_output(
            body in proptest::collection::vec(prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a')], 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let whole = dot_stuff(&body);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(body.len())).collect();
            cuts.sort_unstable();
            let mut out = Vec::new();
            let mut s = DotStuffer::default();
            let mut from = 0;
            for c in cuts.into_iter().chain([body.len()]) {
                s.encode(&body[from..c], &mut out);
                from = c;
            }
            s.finish(&mut out);
            prop_assert_eq!(&out, &whole);
            // No line of the wire form is a lone ".", except the last.
            let body_lines = &whole[..whole.len() - 3];
            prop_assert!(!body_lines.split(|b| *b == b'\n').any(|l| l == b".\r"));
            prop_assert_eq!(unstuff(&whole), crlf(&body));
            let mut reader = BodyReader::default();
            let mut read = Vec::new();
            let mut bytes = &whole[..];
            prop_assert!(reader.read(&mut bytes, &mut read));
            prop_assert!(bytes.is_empty());
            prop_assert_eq!(&read, &crlf(&body));
            // BDAT sends what DATA's reader keeps.
            prop_assert_eq!(&*canonical(&body), &read[..]);
        }
    }
}
