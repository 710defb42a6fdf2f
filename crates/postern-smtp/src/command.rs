//! Commands as the client writes them. Addresses and names come from the
//! spool and the configuration; a CR or LF in one is refused here so that
//! nothing can inject a command.

use std::io::Write as _;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

/// A value that cannot go on a command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} contains a line break or a control character")]
pub struct UnsafeArgument {
    /// Which argument.
    pub what: &'static str,
}

fn clean<'a>(what: &'static str, s: &'a str) -> Result<&'a str, UnsafeArgument> {
    if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(UnsafeArgument { what });
    }
    Ok(s)
}

/// True for a local part that needs no quotes: a dot-atom of RFC 5321
/// `atext` (and, with SMTPUTF8, any non-ASCII character).
fn is_dot_atom(local: &str) -> bool {
    let atext =
        |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    !local.is_empty()
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext))
}

/// A mailbox as it goes between `<` and `>`: the local part quoted when it
/// is not a dot-atom (the server side keeps it unquoted).
pub fn mailbox(address: &str) -> String {
    let (local, domain) = match address.rsplit_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (address, None),
    };
    let mut out = String::with_capacity(address.len() + 2);
    if is_dot_atom(local) || local.is_empty() {
        out.push_str(local);
    } else {
        out.push('"');
        for c in local.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    if let Some(d) = domain {
        out.push('@');
        out.push_str(d);
    }
    out
}

/// The `MAIL FROM` parameters Postern sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=` (sent when the server offers SIZE).
    pub size: Option<u64>,
    /// `BODY=8BITMIME`.
    pub eight_bit: bool,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
}

/// `EHLO name`, `HELO name` or `LHLO name`.
pub fn hello(verb: &str, name: &str, out: &mut Vec<u8>) -> Result<(), UnsafeArgument> {
    let name = clean("the HELO name", name)?;
    out.extend_from_slice(format!("{verb} {name}\r\n").as_bytes());
    Ok(())
}

/// `MAIL FROM:<sender>` with parameters; `<>` for the null sender.
pub fn mail_from(
    sender: &str,
    params: MailParams,
    out: &mut Vec<u8>,
) -> Result<(), UnsafeArgument> {
    let sender = clean("the sender", sender)?;
    out.extend_from_slice(b"MAIL FROM:<");
    out.extend_from_slice(mailbox(sender).as_bytes());
    out.push(b'>');
    if let Some(size) = params.size {
        // Writing to a Vec cannot fail.
        let _ = write!(out, " SIZE={size}");
    }
    if params.eight_bit {
        out.extend_from_slice(b" BODY=8BITMIME");
    }
    if params.smtputf8 {
        out.extend_from_slice(b" SMTPUTF8");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// `RCPT TO:<recipient>`.
pub fn rcpt_to(recipient: &str, out: &mut Vec<u8>) -> Result<(), UnsafeArgument> {
    let recipient = clean("a recipient", recipient)?;
    out.extend_from_slice(b"RCPT TO:<");
    out.extend_from_slice(mailbox(recipient).as_bytes());
    out.extend_from_slice(b">\r\n");
    Ok(())
}

/// `AUTH PLAIN` with its initial response (RFC 4616).
pub fn auth_plain(user: &str, password: &str) -> String {
    let token = BASE64.encode(format!("\0{user}\0{password}"));
    format!("AUTH PLAIN {token}\r\n")
}

/// One line of a base64 SASL exchange (AUTH LOGIN's user name, password).
pub fn sasl_line(value: &str) -> String {
    format!("{}\r\n", BASE64.encode(value))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn commands_on_the_wire() {
        let mut out = Vec::new();
        hello("EHLO", "postern.example", &mut out).unwrap();
        let params = MailParams {
            size: Some(1234),
            eight_bit: true,
            smtputf8: false,
        };
        mail_from("a@example.com", params, &mut out).unwrap();
        mail_from("", MailParams::default(), &mut out).unwrap();
        rcpt_to("b@example.net", &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "EHLO postern.example\r\nMAIL FROM:<a@example.com> SIZE=1234 BODY=8BITMIME\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.net>\r\n"
        );
        assert_eq!(auth_plain("u", "p"), "AUTH PLAIN AHUAcA==\r\n");
        assert_eq!(sasl_line("u"), "dQ==\r\n");
    }

    #[test]
    fn local_parts_are_quoted_when_they_must_be() {
        assert_eq!(mailbox("a.b+c@example.com"), "a.b+c@example.com");
        assert_eq!(
            mailbox("quoted local@example.com"),
            "\"quoted local\"@example.com"
        );
        assert_eq!(mailbox("a..b@example.com"), "\"a..b\"@example.com");
        assert_eq!(
            mailbox("say \"hi\"@x.example"),
            "\"say \\\"hi\\\"\"@x.example"
        );
        assert_eq!(mailbox("用户@例子.广告"), "用户@例子.广告");
        assert_eq!(mailbox("postmaster"), "postmaster");
        assert_eq!(mailbox(""), "");
    }

    #[test]
    fn line_breaks_in_arguments_are_refused() {
        let mut out = Vec::new();
        assert!(rcpt_to("a@b>\r\nDATA", &mut out).is_err());
        assert!(mail_from("a\n@b", MailParams::default(), &mut out).is_err());
        assert!(hello("EHLO", "x\ry", &mut out).is_err());
        assert!(out.is_empty());
    }
}
