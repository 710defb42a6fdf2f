//! The milter protocol, MTA side: Postern asks content filters (rspamd's
//! proxy in milter mode, clamav-milter, any libmilter filter) about a
//! message before it answers the client, and carries out their verdict.
//!
//! Written here rather than taken from a crate: `miltr-client` 0.1, the
//! one pure-Rust client, does not know the `accept` and `progress` replies
//! that rspamd and clamav-milter send, and treats every answer but
//! `continue` as an error. The protocol is small; its reply parser is
//! fuzzed (`fuzz/fuzz_targets/milter_reply.rs`).
//!
//! - [`wire`]: packets (`Command::encode`, `Response::parse`).
//! - [`Message`]: header fields kept as written, and the body.
//! - [`scan`]: one session over TCP for one message.
//! - [`Verdict`]: the decision, the header and body changes, the score.
#![warn(missing_docs)]

mod message;
mod session;
mod verdict;
pub mod wire;

pub use message::{Field, Message};
pub use session::{Envelope, ScanError, scan};
pub use verdict::{Decision, Verdict, header_score};
