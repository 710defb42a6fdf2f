//! The AUTH exchange (RFC 4954): PLAIN, with or without an initial
//! response, and LOGIN, each answered by the handler's check.

use std::io;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};

use super::{End, Session, reply};
use crate::Reply;
use crate::server::Handler;

impl<H: Handler> Session<'_, H> {
    /// Reads one line of a SASL exchange.
    async fn sasl_line(&mut self) -> io::Result<Option<String>> {
        let deadline = crate::stream::deadline(self.settings.command_timeout);
        loop {
            if let Some(end) = self.conn.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.conn.buf.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                return Ok(Some(text));
            }
            if self.conn.buf.len() > 4096 || !self.fill(deadline).await? {
                return Ok(None);
            }
        }
    }

    async fn challenge(&mut self, prompt: &str) -> io::Result<Option<String>> {
        self.push(&Reply::new(334, None, prompt));
        let Some(line) = self.sasl_line().await? else {
            return Ok(None);
        };
        if line == "*" {
            return Ok(None);
        }
        Ok(BASE64
            .decode(line.as_bytes())
            .ok()
            .and_then(|b| String::from_utf8(b).ok()))
    }

    pub(super) async fn authenticate(
        &mut self,
        mechanism: u64,
        initial: String,
    ) -> io::Result<Option<End>> {
        if !self.auth_offered() {
            let r = reply(502, (5, 5, 1), "AUTH not available");
            return Ok(self.error(&r).then_some(End::Closed));
        }
        if self.auth.is_some() || self.envelope.is_some() {
            let r = reply(503, (5, 5, 1), "AUTH not allowed now");
            return Ok(self.error(&r).then_some(End::Closed));
        }
        let credentials = if mechanism == AUTH_PLAIN {
            let token = if initial.is_empty() {
                self.challenge("").await?
            } else {
                BASE64
                    .decode(initial.as_bytes())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
            };
            token.and_then(|t| {
                let mut parts = t.splitn(3, '\0');
                let _authzid = parts.next()?;
                Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
            })
        } else if mechanism == AUTH_LOGIN {
            match self.challenge("VXNlcm5hbWU6").await? {
                Some(user) => self.challenge("UGFzc3dvcmQ6").await?.map(|p| (user, p)),
                None => None,
            }
        } else {
            let r = reply(504, (5, 5, 4), "unrecognized authentication type");
            return Ok(self.error(&r).then_some(End::Closed));
        };
        let Some((user, password)) = credentials else {
            let r = reply(501, (5, 5, 2), "malformed authentication response");
            return Ok(self.error(&r).then_some(End::Closed));
        };
        if self.handler.auth(&user, &password).await {
            self.auth = Some(user);
            self.push(&reply(235, (2, 7, 0), "authentication succeeded"));
            Ok(None)
        } else {
            let r = reply(535, (5, 7, 8), "authentication credentials invalid");
            Ok(self.error(&r).then_some(End::Closed))
        }
    }
}
