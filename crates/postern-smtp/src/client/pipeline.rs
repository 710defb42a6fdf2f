//! Several transactions in one write. To a server that offers PIPELINING
//! and CHUNKING, each message goes as RSET, MAIL, its RCPTs and `BDAT n
//! LAST` with the body (RFC 3030 allows BDAT in a pipelined group), and
//! the next message follows at once, without waiting for the replies of
//! the one before: one round trip for all of them. The replies come back
//! in order; where the session breaks, the transactions before have their
//! outcomes and the ones behind are told apart by whether their message
//! reached the server.

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
    /// Sends the transactions in order, together when the server offers
    /// PIPELINING and CHUNKING (and `chunking` is set), every body fits
    /// one write and no message needs XCLIENT or would be refused before
    /// MAIL; one after the other otherwise.
    pub async fn send_many(&mut self, txs: &[Transaction<'_>]) -> Sent {
        let together = txs.len() > 1
            && self.caps.pipelining
            && self.caps.chunking
            && self.settings.chunking
            && !(self.settings.xclient && txs.iter().any(|tx| tx.xclient.is_some()))
            && txs.iter().all(|tx| self.refusal(tx).is_none());
        if together {
            let bodies: Vec<_> = txs.iter().map(|tx| canonical(tx.body)).collect();
            if bodies.iter().all(|b| b.len() <= BODY_CHUNK) {
                return self.together(txs, &bodies).await;
            }
        }
        let mut outcomes = Vec::with_capacity(txs.len());
        for tx in txs {
            match self.send(tx).await {
                Ok(o) => outcomes.push(o),
                Err(e) => {
                    return Sent {
                        written: outcomes.len(),
                        outcomes,
                        broke: Some(e),
                    };
                }
            }
        }
        Sent {
            written: outcomes.len(),
            outcomes,
            broke: None,
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
