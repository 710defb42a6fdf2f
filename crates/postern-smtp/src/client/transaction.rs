//! One mail transaction on an open session: MAIL, RCPT for each recipient,
//! DATA, the dot-stuffed body, and the final reply (one per recipient for
//! LMTP). With PIPELINING, everything up to DATA goes in one write; with
//! CHUNKING too, the body goes in the same write after `BDAT n LAST`.

use std::borrow::Cow;

use crate::body::{DotStuffer, canonical};
use crate::client::{Outcome, Phase, Protocol, Session, SessionError};
use crate::command::{self, MailParams};
use crate::reply::Reply;
use crate::xclient::Xclient;

/// A message to send.
#[derive(Debug, Clone, Copy)]
pub struct Transaction<'a> {
    /// The envelope sender; empty for the null sender `<>`.
    pub sender: &'a str,
    /// The envelope recipients.
    pub recipients: &'a [String],
    /// The message (headers and body), CRLF or LF line endings, not
    /// dot-stuffed.
    pub body: &'a [u8],
    /// The body has 8-bit content (`BODY=8BITMIME`).
    pub eight_bit: bool,
    /// An address is non-ASCII (`SMTPUTF8`).
    pub smtputf8: bool,
    /// The original client, told with XCLIENT when the settings ask for it
    /// and the server offers it.
    pub xclient: Option<&'a Xclient>,
}

/// Bytes of body encoded per write.
pub(super) const BODY_CHUNK: usize = 64 * 1024;

fn all(n: usize, reply: &Reply) -> Vec<Outcome> {
    vec![Outcome::from_reply(reply.clone()); n]
}

impl Session {
    /// Sends one message and returns an outcome for every recipient, in
    /// order. An `Err` means the session broke: no recipient's fate is
    /// known, and the session must be dropped.
    pub async fn send(&mut self, tx: &Transaction<'_>) -> Result<Vec<Outcome>, SessionError> {
        self.send_with(tx, None).await
    }

    /// [`Session::send`], with the body's canonical form when the caller
    /// has made it already (it is then not made again for BDAT).
    pub(super) async fn send_with(
        &mut self,
        tx: &Transaction<'_>,
        canonical_body: Option<Cow<'_, [u8]>>,
    ) -> Result<Vec<Outcome>, SessionError> {
        let n = tx.recipients.len();
        if let Some(refusal) = self.refusal(tx) {
            return Ok(all(n, &refusal));
        }
        let params = self.params(tx);
        let mut rset = std::mem::replace(&mut self.used, true);
        if self.xclient(tx.xclient).await? {
            // The server starts afresh after XCLIENT and EHLO.
            rset = false;
        }
        if !self.caps.pipelining {
            if rset {
                check_rset(self.command(b"RSET\r\n", Phase::Rset).await?, Phase::Rset)?;
            }
            let mut line = Vec::new();
            command::mail_from(tx.sender, params, &mut line)?;
            return self.send_in_steps(tx, line).await;
        }
        if self.caps.chunking && self.settings.chunking {
            let body = canonical_body.unwrap_or_else(|| canonical(tx.body));
            return self.send_chunked(tx, &body, rset, params).await;
        }
        let mut batch = Vec::with_capacity(64 + 64 * n);
        envelope(tx, rset, params, &mut batch)?;
        batch.extend_from_slice(b"DATA\r\n");
        self.write(&batch, Phase::MailFrom).await?;
        let (mail, rcpt) = self.envelope_replies(n, Rset::after(rset), false).await?;
        let data = self.read(Phase::RcptTo).await?;
        let accepted = rcpt.iter().filter(|r| r.is_positive()).count();
        if data.code == 354 && (!mail.is_positive() || accepted == 0) {
            // RFC 2920: DATA was accepted after everything else failed;
            // end it with an empty body and ignore the reply.
            self.write(b".\r\n", Phase::Data).await?;
            self.read(Phase::DataEnd).await?;
        }
        if !mail.is_positive() {
            return Ok(all(n, &mail));
        }
        if accepted == 0 {
            return Ok(rcpt.into_iter().map(Outcome::from_reply).collect());
        }
        if data.code != 354 {
            return Ok(merge(rcpt, |_| Outcome::from_reply(data.clone())));
        }
        self.body_and_final(tx, rcpt).await
    }

    /// With CHUNKING and PIPELINING (RFC 3030): RSET when needed, MAIL,
    /// every RCPT, `BDAT n LAST` and the body in one write (the body
    /// apart when it is large), then every reply. The server reads the
    /// chunk whatever it answered before, so nothing is left to end. A
    /// session lost after that write may have delivered the message: the
    /// error then names the end of the data.
    async fn send_chunked(
        &mut self,
        tx: &Transaction<'_>,
        body: &[u8],
        rset: bool,
        params: MailParams,
    ) -> Result<Vec<Outcome>, SessionError> {
        let inline = body.len() <= BODY_CHUNK;
        let mut wire = Vec::with_capacity(96 + 64 * tx.recipients.len());
        self.chunked(tx, body.len(), rset, params, &mut wire)?;
        if inline {
            wire.extend_from_slice(body);
            self.write(&wire, Phase::Data).await?;
        } else {
            self.write(&wire, Phase::Data).await?;
            self.write(body, Phase::Data).await?;
        }
        self.chunked_replies(tx.recipients.len(), Rset::after(rset))
            .await
    }

    /// Appends the commands of a chunked transaction to `wire`: RSET
    /// when asked, MAIL, every RCPT and `BDAT size LAST`; the body of
    /// `size` bytes (canonical) follows.
    pub(super) fn chunked(
        &self,
        tx: &Transaction<'_>,
        size: usize,
        rset: bool,
        mut params: MailParams,
        wire: &mut Vec<u8>,
    ) -> Result<(), SessionError> {
        params.size = self.caps.size.map(|_| size as u64);
        envelope(tx, rset, params, wire)?;
        wire.extend_from_slice(b"BDAT ");
        wire.extend_from_slice(itoa::Buffer::new().format(size).as_bytes());
        wire.extend_from_slice(b" LAST\r\n");
        Ok(())
    }

    /// The replies to a chunked transaction of `n` recipients, and each
    /// recipient's outcome.
    pub(super) async fn chunked_replies(
        &mut self,
        n: usize,
        rset: Rset,
    ) -> Result<Vec<Outcome>, SessionError> {
        let (mail, rcpt) = self.envelope_replies(n, rset, true).await?;
        let accepted = match mail.is_positive() {
            true => rcpt.iter().filter(|r| r.is_positive()).count(),
            false => 0,
        };
        // LMTP answers the last chunk once per accepted recipient; SMTP,
        // and a transaction with nobody accepted, once.
        let lmtp = self.settings.protocol == Protocol::Lmtp;
        let mut finals = Vec::new();
        for _ in 0..if lmtp { accepted.max(1) } else { 1 } {
            finals.push(self.read(Phase::DataEnd).await?);
        }
        if !mail.is_positive() {
            return Ok(all(n, &mail));
        }
        if accepted == 0 {
            return Ok(rcpt.into_iter().map(Outcome::from_reply).collect());
        }
        let last = finals.last().cloned().unwrap_or_else(missing);
        let mut finals = finals.into_iter();
        Ok(merge(rcpt, |_| match lmtp {
            true => finals
                .next()
                .map_or_else(|| Outcome::Transient(missing()), Outcome::from_reply),
            false => Outcome::from_reply(last.clone()),
        }))
    }

    /// The replies to [`envelope`]'s commands: RSET's checked, then MAIL's
    /// and each RCPT's. With `message_sent` (BDAT) the message went with
    /// them, so a session lost now may have delivered it.
    async fn envelope_replies(
        &mut self,
        n: usize,
        rset: Rset,
        message_sent: bool,
    ) -> Result<(Reply, Vec<Reply>), SessionError> {
        let phase = |p| if message_sent { Phase::DataEnd } else { p };
        match rset {
            Rset::No => {}
            // A reused session the server has closed ends here, at RSET,
            // before the server read anything else: the batch goes again
            // at once. A server that refuses RSET otherwise may still
            // have taken a message sent behind it.
            Rset::Idle => check_rset(self.read(Phase::Rset).await?, phase(Phase::Rset))?,
            // Behind another message of the same write: the server was
            // reading on, so a session lost here may have taken this one.
            Rset::Behind => check_rset(self.read(Phase::DataEnd).await?, Phase::DataEnd)?,
        }
        let mail = self.read(phase(Phase::MailFrom)).await?;
        let mut rcpt = Vec::with_capacity(n);
        for _ in 0..n {
            rcpt.push(self.read(phase(Phase::RcptTo)).await?);
        }
        Ok((mail, rcpt))
    }

    /// Asks whether the server would take `recipient` (a callout): MAIL
    /// FROM:<>, RCPT TO, then RSET; nothing is sent. The RCPT reply (or
    /// MAIL's, when MAIL is refused) is the answer.
    pub async fn verify_recipient(&mut self, recipient: &str) -> Result<Reply, SessionError> {
        if std::mem::replace(&mut self.used, true) {
            check_rset(self.command(b"RSET\r\n", Phase::Rset).await?, Phase::Rset)?;
        }
        let mut line = Vec::new();
        command::mail_from("", MailParams::default(), &mut line)?;
        let mail = self.command(&line, Phase::MailFrom).await?;
        if !mail.is_positive() {
            return Ok(mail);
        }
        line.clear();
        command::rcpt_to(recipient, &mut line)?;
        self.command(&line, Phase::RcptTo).await
    }

    /// MAIL's parameters for the message, as far as the server offers them.
    pub(super) fn params(&self, tx: &Transaction<'_>) -> MailParams {
        MailParams {
            size: self.caps.size.map(|_| tx.body.len() as u64),
            eight_bit: tx.eight_bit && self.caps.eight_bit_mime,
            smtputf8: tx.smtputf8,
        }
    }

    /// A reason not to start the transaction at all.
    pub(super) fn refusal(&self, tx: &Transaction<'_>) -> Option<Reply> {
        if let Some(limit) = self.caps.size
            && limit > 0
            && tx.body.len() as u64 > limit
        {
            return Some(Reply::with_status(
                552,
                (5, 3, 4),
                format!(
                    "message of {} bytes exceeds the server's limit of {limit}",
                    tx.body.len()
                ),
            ));
        }
        if tx.smtputf8 && !self.caps.smtputf8 {
            return Some(Reply::with_status(
                553,
                (5, 6, 7),
                "an address is not ASCII and the server does not offer SMTPUTF8",
            ));
        }
        None
    }

    /// Without PIPELINING: each command waits for its reply, and the
    /// transaction stops at the first step that leaves nothing to send.
    async fn send_in_steps(
        &mut self,
        tx: &Transaction<'_>,
        mail_line: Vec<u8>,
    ) -> Result<Vec<Outcome>, SessionError> {
        let n = tx.recipients.len();
        let mail = self.command(&mail_line, Phase::MailFrom).await?;
        if !mail.is_positive() {
            return Ok(all(n, &mail));
        }
        let mut rcpt = Vec::with_capacity(n);
        let mut line = Vec::new();
        for r in tx.recipients {
            line.clear();
            command::rcpt_to(r, &mut line)?;
            rcpt.push(self.command(&line, Phase::RcptTo).await?);
        }
        if !rcpt.iter().any(Reply::is_positive) {
            return Ok(rcpt.into_iter().map(Outcome::from_reply).collect());
        }
        let data = self.command(b"DATA\r\n", Phase::RcptTo).await?;
        if data.code != 354 {
            return Ok(merge(rcpt, |_| Outcome::from_reply(data.clone())));
        }
        self.body_and_final(tx, rcpt).await
    }

    /// Streams the body, then reads the final reply (SMTP: one for all
    /// accepted recipients; LMTP: one each, in order).
    async fn body_and_final(
        &mut self,
        tx: &Transaction<'_>,
        rcpt: Vec<Reply>,
    ) -> Result<Vec<Outcome>, SessionError> {
        let mut stuffer = DotStuffer::default();
        let mut wire = Vec::with_capacity(BODY_CHUNK + BODY_CHUNK / 16);
        let mut chunks = tx.body.chunks(BODY_CHUNK).peekable();
        // The end of data goes out with the last chunk: one write (and one
        // wake-up of the server) for a message of up to 64 KiB.
        loop {
            wire.clear();
            if let Some(chunk) = chunks.next() {
                stuffer.encode(chunk, &mut wire);
            }
            if chunks.peek().is_none() {
                stuffer.finish(&mut wire);
                self.write(&wire, Phase::Data).await?;
                break;
            }
            self.write(&wire, Phase::Data).await?;
        }
        if self.settings.protocol == Protocol::Lmtp {
            let mut finals = Vec::new();
            for _ in rcpt.iter().filter(|r| r.is_positive()) {
                finals.push(self.read(Phase::DataEnd).await?);
            }
            let mut finals = finals.into_iter();
            return Ok(merge(rcpt, |_| {
                finals
                    .next()
                    .map_or_else(|| Outcome::Transient(missing()), Outcome::from_reply)
            }));
        }
        let end = self.read(Phase::DataEnd).await?;
        Ok(merge(rcpt, |_| Outcome::from_reply(end.clone())))
    }
}

/// Whether a transaction's commands start with RSET, and what a session
/// lost at its reply means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rset {
    /// None: the session is fresh.
    No,
    /// The first transaction of a write on a reused session: a session
    /// lost at RSET was closed while idle.
    Idle,
    /// Behind another transaction of the same write.
    Behind,
}

impl Rset {
    /// The first transaction of a write, on a session used before or not.
    pub(super) fn after(used: bool) -> Self {
        if used { Rset::Idle } else { Rset::No }
    }
}

/// RSET when the session was used before, MAIL, and an RCPT per recipient.
fn envelope(
    tx: &Transaction<'_>,
    rset: bool,
    params: MailParams,
    batch: &mut Vec<u8>,
) -> Result<(), SessionError> {
    if rset {
        batch.extend_from_slice(b"RSET\r\n");
    }
    command::mail_from(tx.sender, params, batch)?;
    for r in tx.recipients {
        command::rcpt_to(r, batch)?;
    }
    Ok(())
}

fn missing() -> Reply {
    Reply::with_status(451, (4, 4, 2), "no reply for this recipient")
}

/// RSET's reply, refused as a failure in `phase`.
fn check_rset(reply: Reply, phase: Phase) -> Result<(), SessionError> {
    if reply.code == 250 {
        Ok(())
    } else {
        Err(SessionError::Rejected { phase, reply })
    }
}

/// Refused recipients keep their RCPT reply; accepted ones get `accepted`.
fn merge(rcpt: Vec<Reply>, mut accepted: impl FnMut(&Reply) -> Outcome) -> Vec<Outcome> {
    rcpt.into_iter()
        .map(|r| {
            if r.is_positive() {
                accepted(&r)
            } else {
                Outcome::from_reply(r)
            }
        })
        .collect()
}
