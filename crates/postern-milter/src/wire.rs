//! The milter protocol on the wire (libmilter's `mfdef.h`, protocol
//! version 6): every packet is a 4-byte big-endian length, a command or
//! reply letter, and its data. [`Command::encode`] writes what the MTA
//! sends; [`Response::parse`] reads what the filter answers and never
//! panics on any bytes (fuzzed: `fuzz/fuzz_targets/milter_reply.rs`).

use std::net::IpAddr;

/// The protocol version offered.
pub const VERSION: u32 = 6;

/// The largest packet accepted from a filter (a replaced body arrives in
/// chunks of at most 64 KiB; libmilter's own limit is 512 MiB).
pub const MAX_PACKET: usize = 1 << 20;

/// The largest body chunk sent (libmilter's `MILTER_CHUNK_SIZE`).
pub const CHUNK: usize = 65_535;

/// Actions the filter may take (`SMFIF_*`).
pub mod actions {
    /// Add headers.
    pub const ADD_HEADERS: u32 = 0x01;
    /// Replace the body.
    pub const CHANGE_BODY: u32 = 0x02;
    /// Change or delete headers.
    pub const CHANGE_HEADERS: u32 = 0x10;
    /// Quarantine the message.
    pub const QUARANTINE: u32 = 0x20;
}

/// Protocol steps the MTA can leave out or not wait for (`SMFIP_*`).
pub mod protocol {
    /// No `CONNECT`.
    pub const NO_CONNECT: u32 = 0x01;
    /// No `HELO`.
    pub const NO_HELO: u32 = 0x02;
    /// No `MAIL`.
    pub const NO_MAIL: u32 = 0x04;
    /// No `RCPT`.
    pub const NO_RCPT: u32 = 0x08;
    /// No body chunks.
    pub const NO_BODY: u32 = 0x10;
    /// No headers.
    pub const NO_HEADERS: u32 = 0x20;
    /// No end of headers.
    pub const NO_EOH: u32 = 0x40;
    /// No reply to each header.
    pub const NR_HEADER: u32 = 0x80;
    /// No `UNKNOWN` (never sent anyway).
    pub const NO_UNKNOWN: u32 = 0x100;
    /// No `DATA`.
    pub const NO_DATA: u32 = 0x200;
    /// The filter may answer a body chunk with `SKIP`.
    pub const SKIP: u32 = 0x400;
    /// No reply to `CONNECT`.
    pub const NR_CONNECT: u32 = 0x1000;
    /// No reply to `HELO`.
    pub const NR_HELO: u32 = 0x2000;
    /// No reply to `MAIL`.
    pub const NR_MAIL: u32 = 0x4000;
    /// No reply to `RCPT`.
    pub const NR_RCPT: u32 = 0x8000;
    /// No reply to `DATA`.
    pub const NR_DATA: u32 = 0x10000;
    /// No reply to `UNKNOWN`.
    pub const NR_UNKNOWN: u32 = 0x20000;
    /// No reply to end of headers.
    pub const NR_EOH: u32 = 0x40000;
    /// No reply to a body chunk.
    pub const NR_BODY: u32 = 0x80000;

    /// Every step this MTA can leave out or not wait for.
    pub const OFFERED: u32 = NO_CONNECT
        | NO_HELO
        | NO_MAIL
        | NO_RCPT
        | NO_BODY
        | NO_HEADERS
        | NO_EOH
        | NR_HEADER
        | NO_UNKNOWN
        | NO_DATA
        | SKIP
        | NR_CONNECT
        | NR_HELO
        | NR_MAIL
        | NR_RCPT
        | NR_DATA
        | NR_UNKNOWN
        | NR_EOH
        | NR_BODY;
}

/// What the MTA sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `O`: version, allowed actions, steps that may be left out.
    OptNeg {
        /// Protocol version.
        version: u32,
        /// `SMFIF_*` the filter may use.
        actions: u32,
        /// `SMFIP_*` the MTA can do.
        protocol: u32,
    },
    /// `D`: macros for the next command.
    Macros {
        /// The command they go with.
        stage: u8,
        /// Name and value pairs.
        pairs: &'a [(&'a str, &'a str)],
    },
    /// `C`: the client's host name and address.
    Connect {
        /// Its name (or `[address]`).
        name: &'a str,
        /// Its address and port.
        addr: IpAddr,
        /// Its port.
        port: u16,
    },
    /// `H`: the client's HELO.
    Helo(&'a str),
    /// `M`: `<sender>`, then ESMTP arguments.
    Mail(&'a [&'a str]),
    /// `R`: `<recipient>`.
    Rcpt(&'a str),
    /// `T`: the body follows.
    Data,
    /// `L`: one header.
    Header {
        /// Its name.
        name: &'a str,
        /// Its value (without the leading space).
        value: &'a str,
    },
    /// `N`: end of headers.
    EndOfHeaders,
    /// `B`: a body chunk (at most [`CHUNK`] bytes).
    Body(&'a [u8]),
    /// `E`: end of body: the filter gives its verdict.
    EndOfBody,
    /// `Q`: the session is over.
    Quit,
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend(s.bytes().filter(|b| *b != 0));
    out.push(0);
}

impl Command<'_> {
    /// The packet: length, letter, data.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            Command::OptNeg {
                version,
                actions,
                protocol,
            } => {
                out.push(b'O');
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&actions.to_be_bytes());
                out.extend_from_slice(&protocol.to_be_bytes());
            }
            Command::Macros { stage, pairs } => {
                out.push(b'D');
                out.push(*stage);
                for (name, value) in *pairs {
                    cstr(out, name);
                    cstr(out, value);
                }
            }
            Command::Connect { name, addr, port } => {
                out.push(b'C');
                cstr(out, name);
                out.push(if addr.is_ipv4() { b'4' } else { b'6' });
                out.extend_from_slice(&port.to_be_bytes());
                cstr(out, &addr.to_string());
            }
            Command::Helo(helo) => {
                out.push(b'H');
                cstr(out, helo);
            }
            Command::Mail(args) => {
                out.push(b'M');
                for a in *args {
                    cstr(out, a);
                }
            }
            Command::Rcpt(rcpt) => {
                out.push(b'R');
                cstr(out, rcpt);
            }
            Command::Data => out.push(b'T'),
            Command::Header { name, value } => {
                out.push(b'L');
                cstr(out, name);
                cstr(out, value);
            }
            Command::EndOfHeaders => out.push(b'N'),
            Command::Body(chunk) => {
                out.push(b'B');
                out.extend_from_slice(chunk);
            }
            Command::EndOfBody => out.push(b'E'),
            Command::Quit => out.push(b'Q'),
        }
        let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
        if let Some(head) = out.get_mut(start..start + 4) {
            head.copy_from_slice(&len.to_be_bytes());
        }
    }
}

/// What a filter answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `O`: the filter's version, actions and protocol steps.
    OptNeg {
        /// Its version.
        version: u32,
        /// The actions it will use.
        actions: u32,
        /// The steps it wants left out or not answered.
        protocol: u32,
    },
    /// `c`: go on.
    Continue,
    /// `a`: accept the message; no more steps.
    Accept,
    /// `r`: reject.
    Reject,
    /// `t`: fail for now.
    Tempfail,
    /// `d`: accept and drop.
    Discard,
    /// `y`: reject or tempfail with this SMTP reply text.
    ReplyCode(String),
    /// `s`: send no more body chunks.
    Skip,
    /// `p`: still working; wait on.
    Progress,
    /// `h`: add a header at the end.
    AddHeader {
        /// Its name.
        name: String,
        /// Its value.
        value: String,
    },
    /// `i`: insert a header at an index (0: first).
    InsertHeader {
        /// Where.
        index: u32,
        /// Its name.
        name: String,
        /// Its value.
        value: String,
    },
    /// `m`: change the `index`th (from 1) header of that name; an empty
    /// value deletes it.
    ChangeHeader {
        /// Which occurrence.
        index: u32,
        /// Its name.
        name: String,
        /// The new value.
        value: String,
    },
    /// `b`: a chunk of the body that replaces the message's.
    ReplaceBody(Vec<u8>),
    /// `q`: quarantine, with a reason.
    Quarantine(String),
    /// Anything this MTA did not allow (recipient or sender changes,
    /// symbol lists, connection failure): named by its letter.
    Other(u8),
}

/// A packet that is not a valid reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad milter reply: {0}")]
pub struct WireError(pub String);

fn bad(what: impl Into<String>) -> WireError {
    WireError(what.into())
}

/// Reads NUL-terminated strings.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn u32(&mut self) -> Result<u32, WireError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("a number is cut short"))?;
        self.0 = rest;
        Ok(u32::from_be_bytes(*head))
    }

    fn string(&mut self) -> Result<String, WireError> {
        let end = self
            .0
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| bad("a string without its NUL"))?;
        let (text, rest) = self.0.split_at(end);
        self.0 = rest.get(1..).unwrap_or_default();
        Ok(String::from_utf8_lossy(text).into_owned())
    }
}

impl Response {
    /// One packet's letter and data (the length already taken off).
    pub fn parse(packet: &[u8]) -> Result<Response, WireError> {
        let (&letter, data) = packet.split_first().ok_or_else(|| bad("an empty packet"))?;
        let mut f = Fields(data);
        Ok(match letter {
            b'O' => Response::OptNeg {
                version: f.u32()?,
                actions: f.u32()?,
                protocol: f.u32()?,
            },
            b'c' => Response::Continue,
            b'a' => Response::Accept,
            b'r' => Response::Reject,
            b't' => Response::Tempfail,
            b'd' => Response::Discard,
            b's' => Response::Skip,
            b'p' => Response::Progress,
            b'y' => Response::ReplyCode(f.string()?),
            b'h' => Response::AddHeader {
                name: f.string()?,
                value: f.string()?,
            },
            b'i' => Response::InsertHeader {
                index: f.u32()?,
                name: f.string()?,
                value: f.string()?,
            },
            b'm' => Response::ChangeHeader {
                index: f.u32()?,
                name: f.string()?,
                value: f.string()?,
            },
            b'b' => Response::ReplaceBody(data.to_vec()),
            b'q' => Response::Quarantine(f.string()?),
            b'+' | b'-' | b'2' | b'e' | b'l' | b'f' | b'4' => Response::Other(letter),
            other => return Err(bad(format!("unknown reply letter {:?}", char::from(other)))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(letter: u8, data: &[u8]) -> Vec<u8> {
        let mut p = vec![letter];
        p.extend_from_slice(data);
        p
    }

    #[test]
    fn commands_are_framed_with_their_length() {
        let mut out = Vec::new();
        Command::Header {
            name: "Subject",
            value: "hi",
        }
        .encode(&mut out);
        assert_eq!(out, b"\0\0\0\x0cLSubject\0hi\0");
        out.clear();
        Command::Connect {
            name: "[127.0.0.1]",
            addr: "127.0.0.1".parse().unwrap(),
            port: 25,
        }
        .encode(&mut out);
        assert_eq!(&out[4..], b"C[127.0.0.1]\x004\0\x19127.0.0.1\0");
        assert_eq!(
            usize::try_from(u32::from_be_bytes(out[..4].try_into().unwrap())).unwrap(),
            out.len() - 4
        );
    }

    #[test]
    fn replies_parse() {
        assert_eq!(Response::parse(b"c"), Ok(Response::Continue));
        assert_eq!(
            Response::parse(&packet(b'y', b"554 5.7.1 Spam message rejected\0")),
            Ok(Response::ReplyCode(
                "554 5.7.1 Spam message rejected".into()
            ))
        );
        assert_eq!(
            Response::parse(&packet(b'h', b"X-Spam\0Yes\0")),
            Ok(Response::AddHeader {
                name: "X-Spam".into(),
                value: "Yes".into()
            })
        );
        assert_eq!(
            Response::parse(&packet(b'm', b"\0\0\0\x01Subject\0[SPAM] hi\0")),
            Ok(Response::ChangeHeader {
                index: 1,
                name: "Subject".into(),
                value: "[SPAM] hi".into()
            })
        );
        let mut optneg = vec![b'O'];
        for n in [6u32, 0x31, 0x1ff] {
            optneg.extend_from_slice(&n.to_be_bytes());
        }
        assert_eq!(
            Response::parse(&optneg),
            Ok(Response::OptNeg {
                version: 6,
                actions: 0x31,
                protocol: 0x1ff
            })
        );
    }

    #[test]
    fn bad_replies_are_errors() {
        assert!(Response::parse(b"").is_err());
        assert!(Response::parse(b"Z").is_err());
        assert!(Response::parse(b"h\0").is_err());
        assert!(Response::parse(b"m\0\0").is_err());
        assert!(Response::parse(b"O\0\0\0\x06").is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = Response::parse(&bytes);
        }
    }
}
