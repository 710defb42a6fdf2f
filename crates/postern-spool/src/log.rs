//! Segment files: reading them back at start, appending with one fsync
//! per batch, rolling to a new segment, and reclaiming old ones.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::live::Live;
use crate::record::Record;

/// A segment's file name: its number, zero-padded so names sort in order.
fn name(number: u32) -> String {
    format!("{number:010}.seg")
}

fn number(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".seg")?.parse().ok()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What reading the log back found wrong (a line for the log each).
#[derive(Debug, Default)]
pub(crate) struct Damage(pub(crate) Vec<String>);

/// The open log: its directory, the segment being appended to.
#[derive(Debug)]
pub(crate) struct Log {
    dir: PathBuf,
    current: File,
    number: u32,
    size: u64,
    segment_size: u64,
}

impl Log {
    /// Reads every segment into `live`, cuts a torn tail off the last one,
    /// and opens it for appending.
    pub(crate) fn open(
        dir: &Path,
        segment_size: u64,
        live: &mut Live,
    ) -> io::Result<(Log, Damage)> {
        fs::create_dir_all(dir)?;
        let mut numbers: Vec<u32> = fs::read_dir(dir)?
            .filter_map(|e| e.ok().and_then(|e| number(&e.path())))
            .collect();
        numbers.sort_unstable();
        let mut damage = Damage::default();
        let last = numbers.last().copied();
        for &n in &numbers {
            let path = dir.join(name(n));
            let mut bytes = Vec::new();
            File::open(&path)?.read_to_end(&mut bytes)?;
            live.open_segment(n);
            let mut at = 0usize;
            while at < bytes.len() {
                let Some((record, len)) = bytes.get(at..).and_then(Record::decode) else {
                    break;
                };
                live.apply(record, n, len as u64);
                at += len;
            }
            live.grew(n, at as u64);
            if at < bytes.len() {
                damage.0.push(format!(
                    "{}: {} bytes after offset {at} are not a whole record (a write cut short); skipped, everything before kept",
                    path.display(),
                    bytes.len() - at
                ));
                if Some(n) == last {
                    OpenOptions::new()
                        .write(true)
                        .open(&path)?
                        .set_len(at as u64)?;
                }
            }
        }
        let number = last.unwrap_or(1);
        let path = dir.join(name(number));
        let mut current = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = current.seek(SeekFrom::End(0))?;
        live.open_segment(number);
        sync_dir(dir)?;
        Ok((
            Log {
                dir: dir.to_path_buf(),
                current,
                number,
                size,
                segment_size,
            },
            damage,
        ))
    }

    /// The segment being appended to.
    pub(crate) fn number(&self) -> u32 {
        self.number
    }

    /// Appends `bytes` and makes them durable. On failure nothing of them
    /// stays in the file.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let result = self
            .current
            .write_all(bytes)
            .and_then(|()| self.current.sync_data());
        match result {
            Ok(()) => {
                self.size += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.current.set_len(self.size);
                let _ = self.current.sync_data();
                Err(e)
            }
        }
    }

    /// Starts a new segment when the current one is full.
    pub(crate) fn roll_if_full(&mut self, live: &mut Live) -> io::Result<()> {
        if self.size < self.segment_size {
            return Ok(());
        }
        let number = self.number + 1;
        let current = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(name(number)))?;
        sync_dir(&self.dir)?;
        self.current = current;
        self.number = number;
        self.size = 0;
        live.open_segment(number);
        Ok(())
    }

    /// Deletes segments nothing lives in any more, oldest first. The
    /// oldest segment, when less than a quarter of it is still needed, has
    /// its live messages copied to the current segment first.
    pub(crate) fn reclaim(&mut self, live: &mut Live) -> io::Result<()> {
        loop {
            let Some((&oldest, usage)) = live.segments.iter().next() else {
                return Ok(());
            };
            if oldest == self.number {
                return Ok(());
            }
            if usage.live_messages > 0 {
                if usage.live_bytes * 4 > usage.size.max(1) {
                    return Ok(());
                }
                let mut bytes = Vec::new();
                let moved: Vec<Record> = live
                    .in_segment(oldest)
                    .into_iter()
                    .map(Record::Message)
                    .collect();
                let mut sizes = Vec::new();
                for r in &moved {
                    let before = bytes.len();
                    r.encode(&mut bytes);
                    sizes.push((bytes.len() - before) as u64);
                }
                self.append(&bytes)?;
                let number = self.number;
                live.grew(number, bytes.len() as u64);
                for (r, size) in moved.into_iter().zip(sizes) {
                    live.apply(r, number, size);
                }
            }
            fs::remove_file(self.dir.join(name(oldest)))?;
            sync_dir(&self.dir)?;
            live.segments.remove(&oldest);
        }
    }
}
