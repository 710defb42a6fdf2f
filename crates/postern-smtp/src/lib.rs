//! SMTP and LMTP for Postern: the wire format, the client session that
//! delivers, and the server session that accepts injected mail.
//!
//! # What comes from smtp-proto, and what is ours
//!
//! smtp-proto (Stalwart Labs) parses the server side's commands: all of
//! MAIL and RCPT's parameters, addresses with quoted local parts, UTF-8,
//! line limits, and the DATA end-of-message scan with dot-unstuffing. It
//! also parses the client side's replies, incrementally, with multi-line
//! replies and enhanced status codes. These are the hard parsers, widely
//! deployed and fuzzed, so Postern uses them as they are.
//!
//! Ours, each for a reason:
//! - [`Reply`]: smtp-proto's reply joins the lines of a multi-line reply
//!   and keeps its status as bytes. Delivery logs, bounces and the engine
//!   want lines, a typed [`EnhancedStatus`] and a [`Class`].
//! - [`Capabilities`]: smtp-proto's EHLO parser wants the whole raw reply,
//!   and the session already has it as a [`Reply`]. Reading keywords from
//!   its lines takes a few lines of code.
//! - [`command`]: smtp-proto has no writer for client commands. Ours also
//!   refuses any argument with a line break, so no command can be injected.
//! - [`DotStuffer`]: smtp-proto unstuffs but does not stuff. Ours stuffs
//!   while streaming and fixes bare LF and CR.
//! - The sessions themselves ([`client`], [`server`]): policies,
//!   deadlines, TLS and outcomes are Postern's own.
//!
//! Nothing here panics on input: the fuzz targets `smtp_command` and
//! `smtp_reply` (in `fuzz/`) and the property tests check that.
#![warn(missing_docs)]

mod body;
mod caps;
pub mod client;
pub mod command;
mod error;
mod reply;
pub mod server;
mod stream;
pub mod tls;
pub mod xclient;

pub use body::{BodyReader, DotStuffer, canonical, dot_stuff};
pub use caps::Capabilities;
pub use error::CodecError;
pub use reply::{Class, EnhancedStatus, Reply, ReplyParser};
