//! Several transactions in one write. To a server that offers PIPELINING
//! and CHUNKING, each message goes as RSET, MAIL, its RCPTs and `BDAT n
//! LAST` with the body (RFC 3030 allows BDAT in a pipelined group), and
//! the next message follows at once, without waiting for the replies of
//! the one before: one round trip for all of them. The replies come back
//! in order; where the session breaks, the transactions before have their
//! outcomes and the ones behind are told apart by whether their message
//! reached the server.

use std::borrow::Cow;

use crate::body::canonical;
use crate::client::transaction::{BODY_CHUNK, Rset};
use crate::client::{Outcome, Phase, Session, SessionError, Transaction};

/// What became of transactions sent together.
#[derive(Debug)]
pub struct Sent {
    /// The outcomes of the transactions that completed, in order: one
    /// list per transaction, one outcome per recipient.
    pub outcomes: Vec<Vec<Outcome>>,
    /// Why the session broke at the next transaction, when it did. The
    /// session must then be dropped.
    pub broke: Option<SessionError>,
    /// How many transactions, from the first, the server may have read
    /// whole (every one of a write that failed part way). Those behind
    /// the broken one, within this count, may have been delivered; the
    /// others were never started.
    pub written: usize,
}

impl Session {
    /// Sends the transactions in order. To a server that offers
    /// PIPELINING and CHUNKING (with `chunking` set), each run of two or
    /// more messages whose bodies fit one write, that need no XCLIENT
    /// (`Session::changes_client`: the session already speaks for their
    /// client, or for none and they have none) and would not be refused
    /// before MAIL goes in one write; any other
    /// message goes on its own (a refused one is not sent at all), and
    /// the run after it together again.
    pub async fn send_many(&mut self, txs: &[Transaction<'_>]) -> Sent {
        let mut sent = Sent {
            outcomes: Vec::with_capacity(txs.len()),
            broke: None,
            written: 0,
        };
        let mut rest = txs;
        while let Some(first) = rest.first() {
            let mut bodies = self.run_of(rest);
            let (part, after) = match rest.split_at_checked(bodies.len()) {
                Some((run, after)) if run.len() > 1 => (self.together(run, &bodies).await, after),
                // A run cut at its second message has its first body made.
                _ => (
                    self.alone(first, bodies.pop()).await,
                    rest.get(1..).unwrap_or_default(),
                ),
            };
            sent.written = sent.outcomes.len() + part.written;
            sent.outcomes.extend(part.outcomes);
            if part.broke.is_some() {
                sent.broke = part.broke;
                return sent;
            }
            rest = after;
        }
        sent
    }

    /// The canonical bodies of the leading transactions of `txs` that may
    /// share a write; none for fewer than two, or when the server cannot
    /// take a write of several (one when the second cannot share it).
    fn run_of<'t>(&self, txs: &'t [Transaction<'_>]) -> Vec<Cow<'t, [u8]>> {
        let mut bodies = Vec::new();
        if txs.len() < 2 || !(self.caps.pipelining && self.caps.chunking && self.settings.chunking)
        {
            return bodies;
        }
        for tx in txs {
            if tx.body.len() > BODY_CHUNK
                || self.changes_client(tx.xclient)
                || self.refusal(tx).is_some()
            {
                break;
            }
            let body = canonical(tx.body);
            if body.len() > BODY_CHUNK {
                break;
            }
            bodies.push(body);
        }
        bodies
    }

    /// One transaction, on its own, with its canonical body if made.
    async fn alone(&mut self, tx: &Transaction<'_>, body: Option<Cow<'_, [u8]>>) -> Sent {
        match self.send_with(tx, body).await {
            Ok(outcomes) => Sent {
                outcomes: vec![outcomes],
                broke: None,
                written: 1,
            },
            Err(e) => Sent {
                outcomes: Vec::new(),
                broke: Some(e),
                written: 0,
            },
        }
    }

    /// Every transaction in one write, then every reply. RSET goes before
    /// each but the first of a fresh session: a server may keep a
    /// transaction open after a refused chunk.
    async fn together(&mut self, txs: &[Transaction<'_>], bodies: &[impl AsRef<[u8]>]) -> Sent {
        let used = std::mem::replace(&mut self.used, true);
        let size: usize = bodies.iter().map(|b| b.as_ref().len() + 96).sum();
        let mut wire = Vec::with_capacity(size);
        let mut ready = 0;
        let mut broke = None;
        for (i, (tx, body)) in txs.iter().zip(bodies).enumerate() {
            let body = body.as_ref();
            let start = wire.len();
            if let Err(e) = self.chunked(tx, body.len(), used || i > 0, self.params(tx), &mut wire)
            {
                wire.truncate(start);
                broke = Some(e);
                break;
            }
            wire.extend_from_slice(body);
            ready += 1;
        }
        // Whatever part of the write failed, the server may have read
        // whole messages before it: all of them count as written, and the
        // error as lost after the end of the data.
        let mut sent = Sent {
            outcomes: Vec::with_capacity(ready),
            broke: None,
            written: ready,
        };
        if let Err(e) = self.write(&wire, Phase::DataEnd).await {
            sent.broke = Some(e);
            return sent;
        }
        for (i, tx) in txs.iter().take(ready).enumerate() {
            let rset = match i {
                0 => Rset::after(used),
                _ => Rset::Behind,
            };
            match self.chunked_replies(tx.recipients.len(), rset).await {
                Ok(o) => sent.outcomes.push(o),
                Err(e) => {
                    sent.broke = Some(e);
                    return sent;
                }
            }
        }
        sent.broke = broke;
        sent
    }
}
