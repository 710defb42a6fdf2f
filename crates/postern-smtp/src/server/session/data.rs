//! A message's data: DATA (dot-unstuffed until the final dot), BDAT
//! chunks (RFC 3030, read by count), and the end both share.

use std::io;

use super::{End, Session, reply};
use crate::server::{DataReply, Envelope, Handler};
use crate::{BodyReader, Reply};

/// A BDAT transaction's body so far (RFC 3030), and its size counted in
/// full even past the limit (the body is then dropped).
#[derive(Default)]
pub(super) struct Chunks {
    body: Vec<u8>,
    total: u64,
}

impl<H: Handler> Session<'_, H> {
    pub(super) async fn data(&mut self) -> io::Result<Option<End>> {
        let Some(envelope) = self.envelope.take() else {
            let r = reply(503, (5, 5, 1), "send MAIL first");
            return Ok(self.error(&r).then_some(End::Closed));
        };
        if self.chunks.is_some() {
            self.envelope = Some(envelope);
            let r = reply(503, (5, 5, 1), "DATA after BDAT in one transaction");
            return Ok(self.error(&r).then_some(End::Closed));
        }
        if envelope.rcpt_to.is_empty() {
            self.push(&reply(554, (5, 5, 1), "no valid recipients"));
            return Ok(None);
        }
        self.push(&Reply::new(354, None, "end data with <CR><LF>.<CR><LF>"));
        let max = self.settings.max_message_size;
        let mut reader = BodyReader::default();
        let mut body = Vec::new();
        let mut total: u64 = 0;
        let deadline = crate::stream::deadline(self.settings.data_timeout);
        loop {
            let mut bytes = &self.conn.buf[..];
            let len_before = body.len();
            let done = reader.read(&mut bytes, &mut body);
            let used = self.conn.buf.len() - bytes.len();
            self.conn.buf.drain(..used);
            total += body.len().saturating_sub(len_before) as u64;
            if total > max {
                body.clear();
            }
            if self.handler.drop_during_data() && total > 0 {
                return Ok(Some(End::Eof));
            }
            if done {
                break;
            }
            if !self.fill(deadline).await? {
                return Ok(Some(End::Eof));
            }
        }
        self.finish(envelope, body, total > max).await
    }

    /// BDAT (RFC 3030): reads exactly `size` octets whatever state the
    /// transaction is in (a client pipelines them behind MAIL and RCPT),
    /// then answers. The last chunk ends the transaction as the final dot
    /// ends DATA.
    pub(super) async fn bdat(&mut self, size: usize, last: bool) -> io::Result<Option<End>> {
        let open = self.envelope.as_ref().map(|e| !e.rcpt_to.is_empty());
        let max = self.settings.max_message_size;
        let mut chunks = self.chunks.take().unwrap_or_default();
        let deadline = crate::stream::deadline(self.settings.data_timeout);
        let mut left = size;
        while left > 0 {
            if self.conn.buf.is_empty() {
                if !self.fill(deadline).await? {
                    return Ok(Some(End::Eof));
                }
                continue;
            }
            let n = left.min(self.conn.buf.len());
            chunks.total += n as u64;
            if open == Some(true) && chunks.total <= max {
                chunks.body.extend(self.conn.buf.drain(..n));
            } else {
                self.conn.buf.drain(..n);
                chunks.body = Vec::new();
            }
            left -= n;
            if open == Some(true) && self.handler.drop_during_data() {
                return Ok(Some(End::Eof));
            }
        }
        match open {
            None => {
                let r = reply(503, (5, 5, 1), "send MAIL first");
                return Ok(self.error(&r).then_some(End::Closed));
            }
            Some(false) => {
                self.reset();
                self.push(&reply(554, (5, 5, 1), "no valid recipients"));
                return Ok(None);
            }
            Some(true) => {}
        }
        if !last {
            self.push(&reply(250, (2, 0, 0), &format!("{size} octets received")));
            self.chunks = Some(chunks);
            return Ok(None);
        }
        let Some(mut envelope) = self.envelope.take() else {
            return Ok(None);
        };
        envelope.chunked = true;
        self.finish(envelope, chunks.body, chunks.total > max).await
    }

    /// The end of a message's data (the final dot, or the last chunk):
    /// the size limit, then the handler's answer.
    async fn finish(
        &mut self,
        envelope: Envelope,
        body: Vec<u8>,
        too_big: bool,
    ) -> io::Result<Option<End>> {
        self.ended_at = Some(self.reads);
        self.idle_commands = 0;
        if too_big {
            self.push(&reply(
                552,
                (5, 3, 4),
                "message size exceeds fixed maximum message size",
            ));
            return Ok(None);
        }
        let n = envelope.rcpt_to.len();
        match self.handler.data(&envelope, body).await {
            DataReply::Drop => return Ok(Some(End::Eof)),
            DataReply::One(r) if self.settings.lmtp => {
                for _ in 0..n {
                    self.push(&r);
                }
            }
            DataReply::One(r) => self.push(&r),
            DataReply::PerRecipient(replies) => {
                let fallback = reply(451, (4, 3, 0), "no reply for this recipient");
                for i in 0..n {
                    let r = replies.get(i).unwrap_or(&fallback).clone();
                    self.push(&r);
                    if !self.settings.lmtp {
                        break;
                    }
                }
            }
        }
        Ok(None)
    }
}
