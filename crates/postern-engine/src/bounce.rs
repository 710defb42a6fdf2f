//! Delivery status notifications (RFC 3464): the bounce a sender gets for
//! the recipients of one message that failed for good in one attempt
//! round, and the settlement that carries those failures to the
//! [`Outcomes`](crate::Outcomes) sink, which stores the bounce and marks
//! the failures done in one record.

use std::time::{SystemTime, UNIX_EPOCH};

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::mime::MimePart;
use postern_conf::ReplyClass;
use postern_smtp::Reply;

use std::sync::Arc;

use crate::message::{Body, HostInfo, QueuedMessage};

/// One recipient in a bounce.
#[derive(Debug, Clone)]
pub struct FailedRecipient {
    /// The address.
    pub recipient: String,
    /// The reply that failed it (the server's, or Postern's own for DNS
    /// failures, expiry and too many retries).
    pub reply: Reply,
    /// The host that gave the reply, when one did.
    pub host: Option<HostInfo>,
    /// The reply's class (written as `X-Postern-Class`).
    pub class: ReplyClass,
}

/// A bounce to queue: it goes to the original sender, from `<>`.
#[derive(Debug, Clone)]
pub struct Bounce {
    /// The message that failed.
    pub original_id: u64,
    /// Its binding; the bounce is sent in the same binding.
    pub binding: String,
    /// Whom the bounce goes to: the original envelope sender.
    pub recipient: String,
    /// The RFC 3464 message, CRLF line endings.
    pub body: Vec<u8>,
}

/// The recipients of one entry that failed for good in one attempt round.
/// Their reports came already; they are done when this is recorded: with
/// the bounce, in the same spool record, when one is wanted.
#[derive(Debug, Clone)]
pub struct Settlement {
    /// The entry (the message's part for one queue).
    pub entry: u64,
    /// The message.
    pub message: Arc<QueuedMessage>,
    /// Its recipients that failed.
    pub failed: Vec<FailedRecipient>,
    /// A bounce is wanted: the domain sends them and the sender is not
    /// `<>`. Render it with [`bounce`](Self::bounce).
    pub wants_bounce: bool,
    /// The name in the bounce's `Reporting-MTA` and `From`.
    pub hostname: String,
}

impl Settlement {
    /// The bounce, rendered with the headers of the original `body`.
    pub fn bounce(&self, body: &[u8]) -> Option<Bounce> {
        if !self.wants_bounce {
            return None;
        }
        build(&self.message, body, &self.failed, &self.hostname)
    }

    /// The failed addresses.
    pub fn recipients(&self) -> impl Iterator<Item = &str> {
        self.failed.iter().map(|f| f.recipient.as_str())
    }
}

impl Bounce {
    /// The domain the bounce goes to (the original sender's), lower-case.
    pub fn domain(&self) -> String {
        self.recipient
            .rsplit_once('@')
            .map_or_else(String::new, |(_, d)| d.to_ascii_lowercase())
    }

    /// The bounce as a message for the engine, with the spool's ids for
    /// the message and its one entry, and its `Message-ID`.
    pub fn queued(&self, queue_id: u64, id: u64, message_id: String) -> QueuedMessage {
        QueuedMessage {
            message_id: message_id.into(),
            ..QueuedMessage::new(
                (id, queue_id),
                self.binding.as_str().into(),
                self.domain().into(),
                vec![self.recipient.clone()],
                Body::Memory(self.body.clone().into()),
            )
        }
    }
}

/// The headers of a message: everything before the first empty line.
fn headers(body: &[u8]) -> &[u8] {
    body.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .and_then(|i| body.get(..i + 2))
        .unwrap_or(body)
}

fn status(reply: &Reply) -> String {
    match reply.status {
        Some(s) => s.to_string(),
        None => format!("{}.0.0", reply.code / 100),
    }
}

fn rfc2822_date(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// The bounce for `failed` recipients of `message`; `None` for a message
/// from the null sender, which never gets one (RFC 5321 6.1, RFC 3464).
fn build(
    message: &QueuedMessage,
    body: &[u8],
    failed: &[FailedRecipient],
    hostname: &str,
) -> Option<Bounce> {
    if message.sender.is_empty() || failed.is_empty() {
        return None;
    }
    let mut text = format!(
        "This is the mail system at host {hostname}.\r\n\r\n\
         Your message could not be delivered to the following recipients,\r\n\
         and no further attempt will be made:\r\n\r\n"
    );
    let mut report = format!(
        "Reporting-MTA: dns; {hostname}\r\nX-Postern-Queue-ID: {}\r\n",
        message.id
    );
    for f in failed {
        text.push_str(&format!("<{}>: {}\r\n", f.recipient, f.reply));
        // RFC 6533: an address that is not ASCII is of type utf-8.
        let kind = if f.recipient.is_ascii() {
            "rfc822"
        } else {
            "utf-8"
        };
        report.push_str(&format!(
            "\r\nFinal-Recipient: {kind}; {}\r\nAction: failed\r\nStatus: {}\r\n",
            f.recipient,
            status(&f.reply)
        ));
        if let Some(h) = &f.host {
            report.push_str(&format!("Remote-MTA: dns; {}\r\n", h.name));
        }
        report.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", f.reply));
        report.push_str(&format!("X-Postern-Class: {}\r\n", f.class.as_str()));
    }
    let original = String::from_utf8_lossy(headers(body)).into_owned();
    let report_type =
        ContentType::new("multipart/report").attribute("report-type", "delivery-status");
    let body = MimePart::new(
        report_type,
        vec![
            MimePart::new("text/plain", text),
            MimePart::new(ContentType::new("message/delivery-status"), report),
            MimePart::new(ContentType::new("text/rfc822-headers"), original),
        ],
    );
    let from = format!("MAILER-DAEMON@{hostname}");
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let bytes = MessageBuilder::new()
        .message_id(format!("bounce.{:x}.{micros:x}@{hostname}", message.id))
        .from(("Mail Delivery System", from.as_str()))
        .to(&*message.sender)
        .subject("Undelivered Mail Returned to Sender")
        .date(rfc2822_date(SystemTime::now()))
        .header(
            "Auto-Submitted",
            mail_builder::headers::raw::Raw::new("auto-replied"),
        )
        .body(body)
        .write_to_vec()
        .ok()?;
    Some(Bounce {
        original_id: message.id,
        binding: message.binding.to_string(),
        recipient: message.sender.to_string(),
        body: bytes,
    })
}
