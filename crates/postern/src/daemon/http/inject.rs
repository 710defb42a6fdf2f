//! `POST /api/inject/v1`, in KumoMTA's schema: a JSON object with
//! `envelope_sender`, `recipients` (each with `email`, optional `name` and
//! `substitutions`) and `content` (a complete RFC 5322 message, or a
//! builder object), plus global `substitutions`. Each recipient becomes a
//! message of its own; with substitutions the content is a template
//! (minijinja, KumoMTA's engine), rendered per recipient with the global
//! values overridden by the recipient's.

use std::collections::BTreeMap;

use base64::Engine;
use mail_builder::MessageBuilder;
use mail_builder::headers::raw::Raw;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Request {
    pub(crate) envelope_sender: String,
    pub(crate) recipients: Vec<Recipient>,
    pub(crate) content: Content,
    #[serde(default)]
    pub(crate) substitutions: Map<String, Value>,
    /// Postern: the binding, instead of an `X-Binding` header.
    #[serde(default)]
    pub(crate) binding: Option<String>,
}

/// One recipient.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Recipient {
    pub(crate) email: String,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) substitutions: Map<String, Value>,
}

/// A whole message, or the parts to build one from.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    Raw(String),
    Builder(Builder),
}

/// The builder form of `content`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Builder {
    pub(crate) from: Mailbox,
    #[serde(default)]
    pub(crate) subject: Option<String>,
    #[serde(default)]
    pub(crate) reply_to: Option<Mailbox>,
    #[serde(default)]
    pub(crate) text_body: Option<String>,
    #[serde(default)]
    pub(crate) html_body: Option<String>,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) attachments: Vec<Attachment>,
}

/// A name and an address.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Mailbox {
    pub(crate) email: String,
    #[serde(default)]
    pub(crate) name: Option<String>,
}

/// An attachment: `data` is base64 unless `base64` is false.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Attachment {
    pub(crate) data: String,
    pub(crate) content_type: String,
    #[serde(default)]
    pub(crate) file_name: Option<String>,
    #[serde(default = "yes")]
    pub(crate) base64: bool,
}

fn yes() -> bool {
    true
}

/// The answer to a request that was read.
#[derive(Debug, Serialize)]
pub(crate) struct Response {
    pub(crate) success_count: usize,
    pub(crate) fail_count: usize,
    pub(crate) failed_recipients: Vec<String>,
    pub(crate) errors: Vec<String>,
}

/// A request that cannot be taken: 400, naming the field.
#[derive(Debug, Serialize)]
pub(crate) struct BadRequest {
    pub(crate) error: String,
    pub(crate) field: String,
}

fn bad(field: impl Into<String>, error: impl Into<String>) -> BadRequest {
    BadRequest {
        error: error.into(),
        field: field.into(),
    }
}

/// An address as SMTP carries it: `local@domain`, printable, no spaces
/// or angle brackets. Non-ASCII is allowed (it then needs SMTPUTF8).
fn check_address(address: &str) -> Result<(), String> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(format!("{address:?} is not an address (local@domain)"));
    };
    if local.is_empty() || domain.is_empty() {
        return Err(format!("{address:?} is not an address (local@domain)"));
    }
    if address
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>'))
    {
        return Err(format!(
            "{address:?} has a space, a control character or an angle bracket"
        ));
    }
    if address.len() > 254 {
        return Err(format!("{address:?} is longer than 254 bytes"));
    }
    Ok(())
}

impl Request {
    /// Checks what does not depend on a recipient's values.
    pub(crate) fn check(&self) -> Result<(), BadRequest> {
        if !self.envelope_sender.is_empty() {
            check_address(&self.envelope_sender).map_err(|e| bad("envelope_sender", e))?;
        }
        if self.recipients.is_empty() {
            return Err(bad("recipients", "at least one recipient is required"));
        }
        for (i, r) in self.recipients.iter().enumerate() {
            check_address(&r.email).map_err(|e| bad(format!("recipients[{i}].email"), e))?;
        }
        if let Content::Builder(b) = &self.content {
            check_address(&b.from.email).map_err(|e| bad("content.from.email", e))?;
            if b.text_body.is_none() && b.html_body.is_none() {
                return Err(bad(
                    "content",
                    "a builder needs text_body or html_body (or send a complete message as a string)",
                ));
            }
            for (i, a) in b.attachments.iter().enumerate() {
                if a.base64 {
                    base64::engine::general_purpose::STANDARD
                        .decode(&a.data)
                        .map_err(|e| {
                            bad(format!("content.attachments[{i}].data"), e.to_string())
                        })?;
                }
            }
        }
        Ok(())
    }

    /// True when the content is a template.
    fn templated(&self) -> bool {
        !self.substitutions.is_empty()
            || self.recipients.iter().any(|r| !r.substitutions.is_empty())
    }

    /// The message for one recipient: its bytes, CRLF line endings.
    pub(crate) fn render(&self, r: &Recipient, message_id: &str) -> Result<Vec<u8>, String> {
        let mut values = self.substitutions.clone();
        values.extend(r.substitutions.clone());
        let templated = self.templated();
        let text = |s: &str| -> Result<String, String> {
            if !templated {
                return Ok(s.to_owned());
            }
            minijinja::Environment::new()
                .render_str(s, &values)
                .map_err(|e| format!("template: {e}"))
        };
        match &self.content {
            Content::Raw(raw) => Ok(crlf(&text(raw)?)),
            Content::Builder(b) => {
                let to = match &r.name {
                    Some(name) => mail_builder::headers::address::Address::new_address(
                        Some(name.as_str()),
                        r.email.as_str(),
                    ),
                    None => mail_builder::headers::address::Address::new_address(
                        None::<&str>,
                        r.email.as_str(),
                    ),
                };
                let from_name = b.from.name.as_deref().map(text).transpose()?;
                let mut m = MessageBuilder::new()
                    .from((from_name.unwrap_or_default(), b.from.email.clone()))
                    .to(to)
                    .message_id(message_id.trim_matches(|c| c == '<' || c == '>').to_owned());
                if let Some(s) = &b.subject {
                    m = m.subject(text(s)?);
                }
                if let Some(rt) = &b.reply_to {
                    m = m.reply_to((rt.name.clone().unwrap_or_default(), rt.email.clone()));
                }
                if let Some(t) = &b.text_body {
                    m = m.text_body(text(t)?);
                }
                if let Some(h) = &b.html_body {
                    m = m.html_body(text(h)?);
                }
                for (name, value) in &b.headers {
                    m = m.header(name.clone(), Raw::new(text(value)?));
                }
                for a in &b.attachments {
                    let data = match a.base64 {
                        true => base64::engine::general_purpose::STANDARD
                            .decode(&a.data)
                            .map_err(|e| e.to_string())?,
                        false => a.data.clone().into_bytes(),
                    };
                    let name = a.file_name.clone().unwrap_or_else(|| "attachment".into());
                    m = m.attachment(a.content_type.clone(), name, data);
                }
                m.write_to_vec().map_err(|e| e.to_string())
            }
        }
    }
}

/// Line endings as CRLF, whatever the client sent.
fn crlf(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 32);
    for line in text.split_inclusive('\n') {
        let line = line
            .strip_suffix('\n')
            .map_or(line, |l| l.strip_suffix('\r').unwrap_or(l));
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request(json: &str) -> Request {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_raw_message_is_rendered_per_recipient() {
        let r = request(
            r#"{"envelope_sender": "s@example.org",
                "recipients": [{"email": "a@x.test", "substitutions": {"name": "Ann"}}],
                "substitutions": {"name": "nobody", "shop": "Acme"},
                "content": "Subject: hi {{ name }}\n\nFrom {{ shop }}.\n"}"#,
        );
        r.check().unwrap();
        let body = r.render(&r.recipients[0], "<1@h>").unwrap();
        assert_eq!(body, b"Subject: hi Ann\r\n\r\nFrom Acme.\r\n");
    }

    #[test]
    fn without_substitutions_braces_stay() {
        let r = request(
            r#"{"envelope_sender": "", "recipients": [{"email": "a@x.test"}],
                "content": "Subject: {{ x }}\r\n\r\nbody"}"#,
        );
        let body = r.render(&r.recipients[0], "<1@h>").unwrap();
        assert_eq!(body, b"Subject: {{ x }}\r\n\r\nbody\r\n");
    }

    #[test]
    fn a_builder_message_has_its_parts() {
        let r = request(
            r#"{"envelope_sender": "s@example.org",
                "recipients": [{"email": "a@x.test", "name": "Ann", "substitutions": {"code": "42"}}],
                "content": {"from": {"email": "news@example.org", "name": "News"},
                    "subject": "Your code {{ code }}", "text_body": "Code: {{ code }}",
                    "headers": {"X-Campaign": "c-{{ code }}"},
                    "attachments": [{"data": "aGVsbG8=", "content_type": "text/plain", "file_name": "a.txt"}]}}"#,
        );
        r.check().unwrap();
        let body =
            String::from_utf8(r.render(&r.recipients[0], "<id1@mta.test>").unwrap()).unwrap();
        assert!(body.contains("Subject: Your code 42"), "{body}");
        assert!(body.contains("X-Campaign: c-42"), "{body}");
        assert!(body.contains("Message-ID: <id1@mta.test>"), "{body}");
        assert!(body.contains("\"Ann\" <a@x.test>"), "{body}");
        assert!(body.contains("Code: 42"), "{body}");
        assert!(body.contains("a.txt"), "{body}");
    }

    #[test]
    fn bad_requests_name_the_field() {
        let r = request(
            r#"{"envelope_sender": "s@example.org", "recipients": [{"email": "a@x.test"}, {"email": "nobody"}],
                "content": "x"}"#,
        );
        assert_eq!(r.check().unwrap_err().field, "recipients[1].email");
        let r = request(r#"{"envelope_sender": "bad sender@x", "recipients": [], "content": "x"}"#);
        assert_eq!(r.check().unwrap_err().field, "envelope_sender");
        let r = request(r#"{"envelope_sender": "", "recipients": [], "content": "x"}"#);
        assert_eq!(r.check().unwrap_err().field, "recipients");
    }
}
