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
    /// Checks what does not depend on a recipient's values, and prepares
    /// what every recipient's message shares: the templates compiled once,
    /// the attachments decoded once.
    pub(crate) fn renderer(&self) -> Result<Renderer<'_>, BadRequest> {
        if !self.envelope_sender.is_empty() {
            check_address(&self.envelope_sender).map_err(|e| bad("envelope_sender", e))?;
        }
        if self.recipients.is_empty() {
            return Err(bad("recipients", "at least one recipient is required"));
        }
        for (i, r) in self.recipients.iter().enumerate() {
            check_address(&r.email).map_err(|e| bad(format!("recipients[{i}].email"), e))?;
        }
        let mut attachments = Vec::new();
        if let Content::Builder(b) = &self.content {
            check_address(&b.from.email).map_err(|e| bad("content.from.email", e))?;
            if b.text_body.is_none() && b.html_body.is_none() {
                return Err(bad(
                    "content",
                    "a builder needs text_body or html_body (or send a complete message as a string)",
                ));
            }
            for (i, a) in b.attachments.iter().enumerate() {
                let data = match a.base64 {
                    true => base64::engine::general_purpose::STANDARD
                        .decode(&a.data)
                        .map_err(|e| {
                            bad(format!("content.attachments[{i}].data"), e.to_string())
                        })?,
                    false => a.data.clone().into_bytes(),
                };
                attachments.push(data);
            }
        }
        let templated = !self.substitutions.is_empty()
            || self.recipients.iter().any(|r| !r.substitutions.is_empty());
        let templates = templated.then(|| self.compile());
        Ok(Renderer {
            request: self,
            templates,
            attachments,
        })
    }

    /// Every field of the content as a template, by field name.
    fn compile(&self) -> Result<minijinja::Environment<'_>, String> {
        let mut env = minijinja::Environment::new();
        let mut add = |name: String, source: &'_ str| {
            env.add_template_owned(name, source.to_owned())
                .map_err(|e| format!("template: {e}"))
        };
        match &self.content {
            Content::Raw(raw) => add("content".into(), raw)?,
            Content::Builder(b) => {
                let fields = [
                    ("from.name", b.from.name.as_deref()),
                    ("subject", b.subject.as_deref()),
                    ("text_body", b.text_body.as_deref()),
                    ("html_body", b.html_body.as_deref()),
                ];
                for (name, source) in fields {
                    if let Some(source) = source {
                        add(name.into(), source)?;
                    }
                }
                for (name, value) in &b.headers {
                    add(format!("headers.{name}"), value)?;
                }
            }
        }
        Ok(env)
    }
}

/// A request ready to render one message per recipient.
pub(crate) struct Renderer<'r> {
    request: &'r Request,
    /// The compiled templates when there are substitutions (or why they
    /// did not compile: every recipient fails with it).
    templates: Option<Result<minijinja::Environment<'r>, String>>,
    /// The builder's attachments, decoded.
    attachments: Vec<Vec<u8>>,
}

impl Renderer<'_> {
    /// The message for one recipient: its bytes, CRLF line endings.
    pub(crate) fn render(&self, r: &Recipient, message_id: &str) -> Result<Vec<u8>, String> {
        let values = self.templates.as_ref().map(|_| {
            let mut values = self.request.substitutions.clone();
            values.extend(r.substitutions.clone());
            values
        });
        // A field as written, or rendered with this recipient's values.
        let text = |field: &str, source: &str| -> Result<String, String> {
            let (Some(templates), Some(values)) = (&self.templates, &values) else {
                return Ok(source.to_owned());
            };
            let env = templates.as_ref().map_err(Clone::clone)?;
            env.get_template(field)
                .and_then(|t| t.render(values))
                .map_err(|e| format!("template: {e}"))
        };
        match &self.request.content {
            Content::Raw(raw) => Ok(crlf(&text("content", raw)?)),
            Content::Builder(b) => {
                let to = mail_builder::headers::address::Address::new_address(
                    r.name.as_deref(),
                    r.email.as_str(),
                );
                let from_name = match &b.from.name {
                    Some(n) => text("from.name", n)?,
                    None => String::new(),
                };
                let mut m = MessageBuilder::new()
                    .from((from_name, b.from.email.clone()))
                    .to(to)
                    .message_id(message_id.trim_matches(|c| c == '<' || c == '>').to_owned());
                if let Some(s) = &b.subject {
                    m = m.subject(text("subject", s)?);
                }
                if let Some(rt) = &b.reply_to {
                    m = m.reply_to((rt.name.clone().unwrap_or_default(), rt.email.clone()));
                }
                if let Some(t) = &b.text_body {
                    m = m.text_body(text("text_body", t)?);
                }
                if let Some(h) = &b.html_body {
                    m = m.html_body(text("html_body", h)?);
                }
                for (name, value) in &b.headers {
                    m = m.header(
                        name.clone(),
                        Raw::new(text(&format!("headers.{name}"), value)?),
                    );
                }
                for (a, data) in b.attachments.iter().zip(&self.attachments) {
                    let name = a.file_name.clone().unwrap_or_else(|| "attachment".into());
                    m = m.attachment(a.content_type.clone(), name, data.clone());
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
        let body = r
            .renderer()
            .unwrap()
            .render(&r.recipients[0], "<1@h>")
            .unwrap();
        assert_eq!(body, b"Subject: hi Ann\r\n\r\nFrom Acme.\r\n");
    }

    #[test]
    fn without_substitutions_braces_stay() {
        let r = request(
            r#"{"envelope_sender": "", "recipients": [{"email": "a@x.test"}],
                "content": "Subject: {{ x }}\r\n\r\nbody"}"#,
        );
        let body = r
            .renderer()
            .unwrap()
            .render(&r.recipients[0], "<1@h>")
            .unwrap();
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
        let rendered = r
            .renderer()
            .unwrap()
            .render(&r.recipients[0], "<id1@mta.test>");
        let body = String::from_utf8(rendered.unwrap()).unwrap();
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
        assert_eq!(r.renderer().err().unwrap().field, "recipients[1].email");
        let r = request(r#"{"envelope_sender": "bad sender@x", "recipients": [], "content": "x"}"#);
        assert_eq!(r.renderer().err().unwrap().field, "envelope_sender");
        let r = request(r#"{"envelope_sender": "", "recipients": [], "content": "x"}"#);
        assert_eq!(r.renderer().err().unwrap().field, "recipients");
    }
}
