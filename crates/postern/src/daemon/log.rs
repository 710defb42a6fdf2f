//! The JSON-lines delivery log (`Log_File`): one object per line and per
//! event, written by its own thread so that no event loop waits on it.

use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::thread::JoinHandle;
use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender};
use postern_conf::LogTarget;
use serde_json::{Map, Value};

use super::time::rfc3339;

/// Sends events to the log thread.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryLog {
    tx: Sender<String>,
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

fn run(rx: &Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = BufWriter::new(out);
    while let Ok(line) = rx.recv() {
        let _ = writeln!(out, "{line}");
        while let Ok(line) = rx.try_recv() {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
    let _ = out.flush();
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

    /// Writes `event` with `fields`, stamped with the time. Fields that
    /// are `null` are left out.
    pub(crate) fn event(&self, event: &str, fields: Value) {
        let mut line = Map::new();
        line.insert("time".into(), Value::String(rfc3339(SystemTime::now())));
        line.insert("event".into(), Value::String(event.to_owned()));
        if let Value::Object(map) = fields {
            line.extend(map.into_iter().filter(|(_, v)| !v.is_null()));
        }
        let _ = self.tx.send(Value::Object(line).to_string());
    }
}
