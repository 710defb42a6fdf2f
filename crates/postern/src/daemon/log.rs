//! The JSON-lines delivery log (`Log_File`): one object per line and per
//! event, written by its own thread so that no event loop waits on it.
//! Each event kind is a serde-derived record; a line is the time and the
//! event name, then the record's fields (absent ones left out).

use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::thread::JoinHandle;
use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender};
use postern_conf::LogTarget;
use postern_smtp::EnhancedStatus;
use serde::Serialize;

use super::scanning::ScanRecord;

use super::time::push_rfc3339;

/// Sends lines to the log thread.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryLog {
    tx: Sender<Vec<u8>>,
}

/// A spool id as the log writes it: lower-case hex.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hex(pub(crate) u64);

impl Hex {
    /// The digits, written into `buf`: lower-case, without leading zeros.
    /// Ids are written for every message, so without `fmt`'s machinery
    /// or an allocation.
    fn digits(self, buf: &mut [u8; 16]) -> &str {
        let n = (u64::BITS - self.0.leading_zeros()).div_ceil(4).max(1) as usize;
        for (i, b) in buf.iter_mut().take(n).enumerate() {
            let nibble = (self.0 >> (4 * (n - 1 - i))) & 0xf;
            *b = char::from_digit(nibble as u32, 16).map_or(b'0', |c| c as u8);
        }
        std::str::from_utf8(buf.get(..n).unwrap_or_default()).unwrap_or_default()
    }

    /// Appends the digits.
    pub(crate) fn push_to(self, out: &mut String) {
        out.push_str(self.digits(&mut [0; 16]));
    }
}

impl Serialize for Hex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.digits(&mut [0; 16]))
    }
}

/// An enhanced status code as the log writes it: `class.subject.detail`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Status(pub(crate) EnhancedStatus);

impl Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = Vec::with_capacity(12);
        self.0.write_to(&mut text);
        s.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

/// A message accepted and stored.
#[derive(Debug, Serialize)]
pub(crate) struct Reception<'a> {
    pub(crate) queue_id: Hex,
    pub(crate) message_id: &'a str,
    pub(crate) binding: &'a str,
    pub(crate) sender: &'a str,
    pub(crate) recipients: usize,
    pub(crate) size: usize,
    pub(crate) ip: IpAddr,
    pub(crate) tls: bool,
    /// `smtp` or `http`.
    pub(crate) protocol: &'static str,
    /// The DKIM signature made at reception: d= and s=.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dkim_domain: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dkim_selector: Option<&'a str>,
    /// What the content filters said and did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) scan: Option<&'a ScanRecord>,
}

/// A scanned message that was not stored: refused, tempfailed or
/// discarded by a filter or by its spam level's action.
#[derive(Debug, Serialize)]
pub(crate) struct ScanRefusal<'a> {
    pub(crate) message_id: &'a str,
    pub(crate) sender: &'a str,
    pub(crate) recipients: usize,
    pub(crate) ip: IpAddr,
    pub(crate) scan: &'a ScanRecord,
    /// The reply the client got (`250` for a discarded message).
    pub(crate) reply: String,
}

/// One recipient's outcome of one attempt: `delivery`,
/// `transient_failure`, `permanent_failure` or `expiry`.
#[derive(Debug, Serialize)]
pub(crate) struct Attempt<'a> {
    pub(crate) queue_id: Hex,
    pub(crate) message_id: &'a str,
    pub(crate) binding: &'a str,
    pub(crate) domain: &'a str,
    pub(crate) sender: &'a str,
    pub(crate) rcpt: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) host: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) port: Option<u16>,
    pub(crate) code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) enhanced_code: Option<Status>,
    pub(crate) reply: String,
    /// The reply's class (`postern_replies_total{class}`).
    pub(crate) class: &'static str,
    pub(crate) attempt: u32,
    /// The destination's MTA-STS mode (`enforce` or `testing`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mta_sts: Option<&'static str>,
    /// Its policy id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mta_sts_id: Option<&'a str>,
    /// `testing` mode: the host is one the policy does not name, so
    /// `enforce` would not have used it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) mta_sts_unnamed: bool,
    /// `testing` mode: why the session's TLS would have failed `enforce`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mta_sts_tls: Option<&'a str>,
}

/// A bounce stored and queued, or lost.
#[derive(Debug, Serialize)]
pub(crate) struct BounceQueued<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) queue_id: Option<Hex>,
    pub(crate) binding: &'a str,
    pub(crate) rcpt: &'a str,
    pub(crate) original_entry: Hex,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reply: Option<String>,
}

fn writer(target: &LogTarget) -> io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        LogTarget::Stdout => Box::new(io::stdout()),
        LogTarget::File(path) => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            Box::new(OpenOptions::new().create(true).append(true).open(path)?)
        }
    })
}

/// How long the writer rests after each write, gathering lines: one write
/// per few milliseconds under load, and no wake-up of this thread (a
/// syscall on the sending side) per line.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

fn run(rx: &Receiver<Vec<u8>>, out: Box<dyn Write + Send>) {
    let mut out = BufWriter::new(out);
    // Lines that cannot be written are lost (the spool, not this log, is
    // the record of what happened); the daemon goes on delivering and
    // says so, at most once a minute.
    let mut lost = 0u64;
    let mut said: Option<std::time::Instant> = None;
    while let Ok(line) = rx.recv() {
        let mut result = out.write_all(&line);
        while let Ok(line) = rx.try_recv() {
            result = result.and(out.write_all(&line));
        }
        if let Err(e) = result.and(out.flush()) {
            lost += 1;
            if said.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(60)) {
                tracing::error!(error = %e, batches_lost = lost, "delivery log: cannot write");
                said = Some(std::time::Instant::now());
            }
        }
        std::thread::sleep(GATHER);
    }
    if let Err(e) = out.flush() {
        tracing::error!(error = %e, "delivery log: cannot write its last lines");
    }
}

impl DeliveryLog {
    /// Opens the target and starts the writer thread, which ends (after
    /// writing everything) when every sender is dropped.
    pub(crate) fn open(target: &LogTarget) -> io::Result<(DeliveryLog, JoinHandle<()>)> {
        let out = writer(target)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("postern-log".into())
            .spawn(move || run(&rx, out))?;
        Ok((DeliveryLog { tx }, thread))
    }

    /// Writes `event` with the record's fields, stamped with the time.
    pub(crate) fn write(&self, event: &str, record: &impl Serialize) {
        let mut line = Vec::with_capacity(384);
        line.extend_from_slice(b"{\"time\":\"");
        push_rfc3339(SystemTime::now(), &mut line);
        line.extend_from_slice(b"\",\"event\":\"");
        line.extend_from_slice(event.as_bytes());
        line.push(b'"');
        // The record's object follows, its `{` made a `,` (or dropped with
        // its `}` when it has no field).
        let fields = line.len();
        if let Err(e) = serde_json::to_writer(&mut line, record) {
            tracing::error!(event, error = %e, "delivery log: a record did not serialize");
            return;
        }
        if line.len() == fields + 2 {
            line.truncate(fields);
            line.push(b'}');
        } else if let Some(brace) = line.get_mut(fields) {
            *brace = b',';
        }
        line.push(b'\n');
        // The writer thread ends only after every sender is dropped.
        if self.tx.send(line).is_err() {
            tracing::error!(event, "delivery log: the writer has stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Empty {}

    #[test]
    fn ids_and_status_codes_are_written_as_fmt_would() {
        for id in [0, 9, 0xab, 0x1000, u64::MAX] {
            let mut text = String::from("id ");
            Hex(id).push_to(&mut text);
            assert_eq!(text, format!("id {id:x}"));
            assert_eq!(
                serde_json::to_string(&Hex(id)).expect("serialize"),
                format!("\"{id:x}\"")
            );
        }
        let status = EnhancedStatus::new(5, 7, 26);
        assert_eq!(
            serde_json::to_string(&Status(status)).expect("serialize"),
            format!("\"{status}\"")
        );
    }

    #[test]
    fn a_line_is_the_time_the_event_and_the_records_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log").join("delivery.jsonl");
        let (log, thread) = DeliveryLog::open(&LogTarget::File(path.clone())).expect("open");
        let record = BounceQueued {
            queue_id: None,
            binding: "b\"1",
            rcpt: "r@x.test",
            original_entry: Hex(0xab),
            reply: None,
        };
        log.write("bounce", &record);
        log.write("empty", &Empty {});
        drop(log);
        thread.join().expect("join");
        let text = fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "bounce");
        assert_eq!(lines[0]["binding"], "b\"1");
        assert_eq!(lines[0]["original_entry"], "ab");
        assert!(lines[0].get("queue_id").is_none());
        let time = lines[0]["time"].as_str().expect("time");
        assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
        assert_eq!(lines[1].as_object().map(|o| o.len()), Some(2));
        assert_eq!(lines[1]["event"], "empty");
    }
}
