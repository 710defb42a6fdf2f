//! One scan: a milter session over TCP for one message, from option
//! negotiation to the verdict after the end of the body.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::message::Message;
use crate::verdict::{Decision, Verdict};
use crate::wire::{CHUNK, Command, MAX_PACKET, Response, VERSION, actions, protocol};

/// The most body a filter may send back in place of the message's.
const MAX_CHANGES: usize = 64 << 20;

/// What the filter is told about the message.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// The client's address and port.
    pub client: SocketAddr,
    /// The client's host name, if known.
    pub client_name: Option<&'a str>,
    /// Its HELO/EHLO name.
    pub helo: &'a str,
    /// The envelope sender (empty for `<>`).
    pub sender: &'a str,
    /// The recipients.
    pub recipients: &'a [String],
    /// This server's name (macro `j`).
    pub hostname: &'a str,
    /// An id for the message (macro `i`).
    pub queue_id: &'a str,
}

/// Why a scan did not give a verdict.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// Connecting, reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The filter did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The filter answered something the protocol does not allow here.
    #[error("{0}")]
    Protocol(String),
}

impl From<crate::wire::WireError> for ScanError {
    fn from(e: crate::wire::WireError) -> Self {
        ScanError::Protocol(e.0)
    }
}

/// The steps the filter asked to leave out (`SMFIP_NO*`) or not to
/// answer (`SMFIP_NR_*`).
#[derive(Debug, Clone, Copy)]
struct Steps(u32);

impl Steps {
    fn skip(self, flag: u32) -> bool {
        self.0 & flag != 0
    }
}

/// A session with one filter.
struct Session {
    stream: TcpStream,
    timeout: Duration,
    out: Vec<u8>,
    steps: Steps,
}

/// How a step ended: go on, or the verdict is known.
enum Step {
    Next,
    Skip,
    Done(Decision),
}

impl Session {
    async fn send(&mut self, command: &Command<'_>) -> Result<(), ScanError> {
        self.out.clear();
        command.encode(&mut self.out);
        let deadline = self.timeout;
        tokio::time::timeout(deadline, self.stream.write_all(&self.out))
            .await
            .map_err(|_| ScanError::Timeout(deadline))??;
        Ok(())
    }

    /// The next reply; `Progress` makes it wait another timeout.
    async fn read(&mut self) -> Result<Response, ScanError> {
        loop {
            let deadline = self.timeout;
            let packet = tokio::time::timeout(deadline, read_packet(&mut self.stream))
                .await
                .map_err(|_| ScanError::Timeout(deadline))??;
            match Response::parse(&packet)? {
                Response::Progress => {}
                other => return Ok(other),
            }
        }
    }

    /// Sends a step (unless left out) and reads its answer (unless not
    /// wanted).
    async fn step(
        &mut self,
        command: &Command<'_>,
        left_out: u32,
        unanswered: u32,
    ) -> Result<Step, ScanError> {
        if self.steps.skip(left_out) {
            return Ok(Step::Next);
        }
        self.send(command).await?;
        if self.steps.skip(unanswered) {
            return Ok(Step::Next);
        }
        let reply = self.read().await?;
        if let Some(decision) = Decision::of(&reply) {
            return Ok(Step::Done(decision));
        }
        match reply {
            Response::Continue => Ok(Step::Next),
            Response::Skip => Ok(Step::Skip),
            other => Err(ScanError::Protocol(format!(
                "unexpected reply {other:?} before the end of the body"
            ))),
        }
    }

    /// Macros for the next command (`D`).
    async fn macros(&mut self, stage: u8, pairs: &[(&str, &str)]) -> Result<(), ScanError> {
        self.send(&Command::Macros { stage, pairs }).await
    }
}

async fn read_packet(stream: &mut TcpStream) -> Result<Vec<u8>, ScanError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len == 0 || len > MAX_PACKET {
        return Err(ScanError::Protocol(format!("a packet of {len} bytes")));
    }
    let mut packet = vec![0; len];
    stream.read_exact(&mut packet).await?;
    Ok(packet)
}

fn bracketed(addr: &str) -> String {
    format!("<{addr}>")
}

/// Scans `message` with the filter at `addr`: the whole session, each
/// read and write within `timeout` (a filter's `progress` restarts it).
pub async fn scan(
    addr: SocketAddr,
    timeout: Duration,
    envelope: &Envelope<'_>,
    message: &Message,
) -> Result<Verdict, ScanError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ScanError::Timeout(timeout))??;
    stream.set_nodelay(true)?;
    let mut s = Session {
        stream,
        timeout,
        out: Vec::with_capacity(CHUNK + 5),
        steps: Steps(0),
    };
    s.send(&Command::OptNeg {
        version: VERSION,
        actions: actions::ADD_HEADERS
            | actions::CHANGE_HEADERS
            | actions::CHANGE_BODY
            | actions::QUARANTINE,
        protocol: protocol::OFFERED,
    })
    .await?;
    let Response::OptNeg {
        protocol: wanted, ..
    } = s.read().await?
    else {
        return Err(ScanError::Protocol("no option negotiation".into()));
    };
    s.steps = Steps(wanted & protocol::OFFERED);
    let verdict = run(&mut s, envelope, message).await;
    // The session ends politely whatever happened; a failed QUIT changes
    // nothing.
    let _ = s.send(&Command::Quit).await;
    verdict
}

async fn run(s: &mut Session, e: &Envelope<'_>, message: &Message) -> Result<Verdict, ScanError> {
    use protocol as p;
    // One step; a decision before the end of the body ends the scan.
    macro_rules! step {
        ($command:expr, $left_out:expr, $unanswered:expr) => {
            match s.step(&$command, $left_out, $unanswered).await? {
                Step::Done(d) => return Ok(Verdict::decided(d)),
                next => next,
            }
        };
    }
    let ip: IpAddr = e.client.ip();
    let name = e
        .client_name
        .map_or_else(|| format!("[{ip}]"), str::to_owned);
    let client_addr = ip.to_string();
    let connect_macros = [
        ("j", e.hostname),
        ("{client_addr}", client_addr.as_str()),
        ("{daemon_name}", "postern"),
    ];
    s.macros(b'C', &connect_macros).await?;
    let connect = Command::Connect {
        name: &name,
        addr: ip,
        port: e.client.port(),
    };
    step!(connect, p::NO_CONNECT, p::NR_CONNECT);
    step!(Command::Helo(e.helo), p::NO_HELO, p::NR_HELO);
    s.macros(b'M', &[("i", e.queue_id), ("{mail_addr}", e.sender)])
        .await?;
    let sender = bracketed(e.sender);
    step!(Command::Mail(&[sender.as_str()]), p::NO_MAIL, p::NR_MAIL);
    for rcpt in e.recipients {
        s.macros(b'R', &[("{rcpt_addr}", rcpt.as_str())]).await?;
        step!(Command::Rcpt(&bracketed(rcpt)), p::NO_RCPT, p::NR_RCPT);
    }
    step!(Command::Data, p::NO_DATA, p::NR_DATA);
    for field in &message.fields {
        let value = field.value();
        let header = Command::Header {
            name: &field.name,
            value: &value,
        };
        step!(header, p::NO_HEADERS, p::NR_HEADER);
    }
    step!(Command::EndOfHeaders, p::NO_EOH, p::NR_EOH);
    for chunk in message.body.chunks(CHUNK) {
        if let Step::Skip = step!(Command::Body(chunk), p::NO_BODY, p::NR_BODY) {
            break;
        }
    }
    s.send(&Command::EndOfBody).await?;
    let mut verdict = Verdict::default();
    let mut changed = 0usize;
    loop {
        let reply = s.read().await?;
        if let Response::ReplaceBody(chunk) = &reply {
            changed += chunk.len();
            if changed > MAX_CHANGES {
                return Err(ScanError::Protocol(format!(
                    "a replaced body of more than {MAX_CHANGES} bytes"
                )));
            }
        }
        if let Some(decision) = Decision::of(&reply) {
            return Ok(verdict.with(decision));
        }
        match reply {
            Response::Continue => return Ok(verdict),
            Response::Skip | Response::Progress | Response::OptNeg { .. } => {
                return Err(ScanError::Protocol(
                    "unexpected reply after the end of the body".into(),
                ));
            }
            change => verdict.push(change),
        }
    }
}
