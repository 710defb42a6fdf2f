//! What the listener does to a message before it is spooled: the
//! `Received:` header on top, a `Message-ID` when it has none, the
//! `X-Binding` header read and removed, and its recipients split by domain.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::log::Hex;
use super::time::push_rfc5322;

/// A message ready to spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prepared {
    /// Headers and body as they will be delivered.
    pub(crate) body: Vec<u8>,
    /// The `X-Binding` header's value, if there was one.
    pub(crate) binding: Option<String>,
    /// The `Message-ID` (its own, or the one added).
    pub(crate) message_id: String,
}

/// The domain of an address, lower-case, without a trailing dot.
pub(crate) fn domain_of(address: &str) -> Option<String> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .filter(|d| !d.is_empty())
}

/// The `Received:` header of a message taken now: `from` is what the
/// client said of itself (its parts in a row), then this host, the
/// protocol and the message's id. Put together without `fmt`, as it is
/// made for every message.
pub(crate) fn received(from: &[&str], hostname: &str, with: &str, id: &str) -> String {
    let from_len: usize = from.iter().map(|p| p.len()).sum();
    let mut h = String::with_capacity(96 + from_len + hostname.len() + id.len());
    h.push_str("Received: from ");
    for part in from {
        h.push_str(part);
    }
    for part in [
        "by ",
        hostname,
        " (Postern) with ",
        with,
        " id ",
        id,
        ";\r\n\t",
    ] {
        h.push_str(part);
    }
    push_rfc5322(SystemTime::now(), &mut h);
    h.push_str("\r\n");
    h
}

/// A unique token for added Message-IDs and Received ids.
pub(crate) fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut token = String::with_capacity(24);
    Hex(u64::try_from(micros).unwrap_or(u64::MAX)).push_to(&mut token);
    token.push('.');
    Hex(n).push_to(&mut token);
    token
}

/// The header block (each header with its folded lines) and the rest.
fn split(raw: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut headers: Vec<&[u8]> = Vec::new();
    let mut at = 0;
    while at < raw.len() {
        let rest = raw.get(at..).unwrap_or_default();
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(rest.len(), |i| i + 2);
        let line = rest.get(..end).unwrap_or_default();
        if line == b"\r\n" {
            break;
        }
        let folded = matches!(line.first(), Some(b' ' | b'\t'));
        let is_header = line
            .iter()
            .take_while(|b| **b != b':')
            .all(|b| b.is_ascii_graphic())
            && line.contains(&b':');
        match headers.last_mut() {
            Some(last) if folded => {
                // The header so far ends where this line starts.
                let start = at - last.len();
                *last = raw.get(start..at + end).unwrap_or(last);
            }
            _ if is_header && !folded => headers.push(line),
            _ => break,
        }
        at += end;
    }
    (headers, raw.get(at..).unwrap_or_default())
}

fn name_is(header: &[u8], name: &str) -> bool {
    header
        .iter()
        .position(|b| *b == b':')
        .and_then(|i| header.get(..i))
        .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
}

fn value(header: &[u8]) -> String {
    let i = header.iter().position(|b| *b == b':').map_or(0, |i| i + 1);
    String::from_utf8_lossy(header.get(i..).unwrap_or_default())
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prepares `raw` (as received, dot-unstuffed) for the spool.
pub(crate) fn prepare(raw: &[u8], received: &str, hostname: &str) -> Prepared {
    let (headers, rest) = split(raw);
    let binding = headers
        .iter()
        .find(|h| name_is(h, "X-Binding"))
        .map(|h| value(h))
        .filter(|v| !v.is_empty());
    let existing = headers
        .iter()
        .find(|h| name_is(h, "Message-ID"))
        .map(|h| value(h));
    let mut body = Vec::with_capacity(raw.len() + received.len() + 64);
    body.extend_from_slice(received.as_bytes());
    let message_id = match existing {
        Some(id) => id,
        None => {
            let id = format!("<{}@{hostname}>", unique());
            body.extend_from_slice(format!("Message-ID: {id}\r\n").as_bytes());
            id
        }
    };
    for h in headers.iter().filter(|h| !name_is(h, "X-Binding")) {
        body.extend_from_slice(h);
    }
    body.extend_from_slice(rest);
    Prepared {
        body,
        binding,
        message_id,
    }
}

/// The `Message-ID` header of a stored body, for the log.
pub(crate) fn message_id(body: &[u8]) -> String {
    let (headers, _) = split(body);
    headers
        .iter()
        .find(|h| name_is(h, "Message-ID"))
        .map(|h| value(h))
        .unwrap_or_default()
}

/// Recipients grouped by domain (lower-case), in first-seen order.
pub(crate) fn by_domain(recipients: &[String]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for r in recipients {
        let domain = r
            .rsplit_once('@')
            .map_or_else(String::new, |(_, d)| d.to_ascii_lowercase());
        match out.iter_mut().find(|(d, _)| *d == domain) {
            Some((_, list)) => list.push(r.clone()),
            None => out.push((domain, vec![r.clone()])),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const RECEIVED: &str = "Received: from c (127.0.0.1) by mx.test; now\r\n";

    #[test]
    fn received_headers_of_smtp_and_http_clients() {
        let smtp = received(
            &["client.test", " (", "127.0.0.1", ")\r\n\t"],
            "mx.test",
            "ESMTPS",
            "ab.1",
        );
        let (head, date) = smtp.split_once(";\r\n\t").expect("a date line");
        assert_eq!(
            head,
            "Received: from client.test (127.0.0.1)\r\n\tby mx.test (Postern) with ESMTPS id ab.1"
        );
        assert!(date.ends_with(" +0000\r\n"), "{date:?}");
        let http = received(&["127.0.0.1", " "], "mx.test", "HTTP", "cd.2");
        assert!(
            http.starts_with(
                "Received: from 127.0.0.1 by mx.test (Postern) with HTTP id cd.2;\r\n\t"
            ),
            "{http}"
        );
    }

    #[test]
    fn x_binding_is_read_and_removed_and_a_message_id_added() {
        let raw = b"Subject: hi\r\nX-Binding:  receipts\r\n  (folded)\r\nTo: a@b\r\n\r\nX-Binding: in body\r\n";
        let p = prepare(raw, RECEIVED, "mx.test");
        assert_eq!(p.binding.as_deref(), Some("receipts (folded)"));
        let text = String::from_utf8(p.body).unwrap();
        assert!(text.starts_with(RECEIVED));
        assert!(text.contains(&format!("Message-ID: {}\r\n", p.message_id)));
        assert!(p.message_id.ends_with("@mx.test>"));
        assert!(
            text.ends_with("Subject: hi\r\nTo: a@b\r\n\r\nX-Binding: in body\r\n"),
            "{text}"
        );
    }

    #[test]
    fn an_existing_message_id_is_kept() {
        let p = prepare(b"Message-ID: <x@y>\r\n\r\nbody\r\n", RECEIVED, "mx.test");
        assert_eq!(p.message_id, "<x@y>");
        assert_eq!(p.binding, None);
        assert_eq!(
            String::from_utf8(p.body).unwrap(),
            format!("{RECEIVED}Message-ID: <x@y>\r\n\r\nbody\r\n")
        );
    }

    #[test]
    fn recipients_split_by_domain() {
        let r: Vec<String> = ["a@X.example", "b@y.example", "c@x.example"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            by_domain(&r),
            [
                (
                    "x.example".to_owned(),
                    vec!["a@X.example".to_owned(), "c@x.example".to_owned()]
                ),
                ("y.example".to_owned(), vec!["b@y.example".to_owned()]),
            ]
        );
    }
}
