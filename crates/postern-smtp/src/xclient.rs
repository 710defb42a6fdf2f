//! XCLIENT (Postfix's SMTP extension): a trusted client tells the server
//! who the original client was. The client side sends
//! `XCLIENT ADDR=... NAME=... HELO=... PROTO=...` with the attributes the
//! server offers in its EHLO reply, values in xtext (RFC 3461 4); the
//! server answers with a new greeting and the client says EHLO again.

use std::net::IpAddr;

/// The original client of a message, as XCLIENT tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xclient {
    /// Its address.
    pub addr: IpAddr,
    /// Its verified host name, if any (`[UNAVAILABLE]` is sent otherwise).
    pub name: Option<String>,
    /// Its HELO/EHLO name.
    pub helo: String,
    /// `SMTP` or `ESMTP`.
    pub proto: String,
}

/// RFC 3461 xtext: `+` and `=`, controls, space and non-ASCII as `+HH`.
pub fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Decodes xtext; a bad `+HH` is kept as written.
pub fn unxtext(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'+', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Xclient {
    /// The command line with the attributes in `offered` (as the EHLO
    /// keyword lists them), CRLF included.
    pub fn command(&self, offered: &[String]) -> Vec<u8> {
        let addr = match self.addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("IPV6:{a}"),
        };
        let name = self.name.clone().unwrap_or_else(|| "[UNAVAILABLE]".into());
        let mut line = String::from("XCLIENT");
        for (attr, value) in [
            ("ADDR", addr.as_str()),
            ("NAME", name.as_str()),
            ("HELO", self.helo.as_str()),
            ("PROTO", self.proto.as_str()),
        ] {
            if offered.iter().any(|o| o.eq_ignore_ascii_case(attr)) {
                line.push_str(&format!(" {attr}={}", xtext(value)));
            }
        }
        line.push_str("\r\n");
        line.into_bytes()
    }
}

/// The attributes of an `XCLIENT` line, names upper-cased, values
/// decoded; `None` when the line is not an XCLIENT command.
pub fn parse(line: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(line).ok()?.trim_end();
    let (verb, rest) = text.split_once(' ').unwrap_or((text, ""));
    if !verb.eq_ignore_ascii_case("XCLIENT") {
        return None;
    }
    Some(
        rest.split_ascii_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_ascii_uppercase(), unxtext(v)))
            .collect(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_command_carries_the_offered_attributes_in_xtext() {
        let x = Xclient {
            addr: "2001:db8::1".parse().unwrap(),
            name: None,
            helo: "a+b=c host".into(),
            proto: "ESMTP".into(),
        };
        let offered: Vec<String> = ["ADDR", "HELO", "PROTO"].map(String::from).to_vec();
        let line = String::from_utf8(x.command(&offered)).unwrap();
        assert_eq!(
            line,
            "XCLIENT ADDR=IPV6:2001:db8::1 HELO=a+2Bb+3Dc+20host PROTO=ESMTP\r\n"
        );
        let attrs = parse(line.as_bytes()).unwrap();
        assert_eq!(attrs[1], ("HELO".into(), "a+b=c host".into()));
        assert!(parse(b"EHLO x\r\n").is_none());
    }
}
