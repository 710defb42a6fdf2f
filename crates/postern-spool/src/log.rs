//! Segment files: reading them back at start, appending with one fsync
//! per batch, rolling to a new segment, reading one record back, and
//! deleting a segment. Also the reserve file, the space kept back so that
//! outcomes can still be recorded when the disk fills up.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::live::{Live, Loc};
use crate::record::{Found, scan};

/// A segment's file name: its number, zero-padded so names sort in order.
fn name(number: u32) -> String {
    format!("{number:010}.spool")
}

fn number(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".spool")?.parse().ok()
}

/// The file kept back for a full disk.
const RESERVE: &str = "reserve";

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What reading the log back found.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    /// Damage found, a line for the log each.
    pub(crate) damage: Vec<String>,
    /// Damaged stretches skipped (torn tails not counted).
    pub(crate) damaged: u64,
}

/// The open log: its directory, the segment being appended to.
#[derive(Debug)]
pub(crate) struct Log {
    dir: PathBuf,
    current: File,
    number: u32,
    size: u64,
    segment_size: u64,
    /// The reserve file is in place.
    reserve: bool,
}

/// Reads one segment into `live`; returns where its last intact record
/// ends, and the file's length.
fn recover_segment(
    path: &Path,
    n: u32,
    live: &mut Live,
    found: &mut Recovery,
    newest: bool,
) -> io::Result<(u64, u64)> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    live.open_segment(n);
    live.grew(n, bytes.len() as u64);
    let mut end = 0usize;
    let mut damaged = Vec::new();
    for (at, f) in scan(&bytes) {
        match f {
            Found::Record(record, len) => {
                let loc = Loc {
                    segment: n,
                    offset: at as u64,
                    len: u32::try_from(len).unwrap_or(u32::MAX),
                };
                live.apply(&record, loc);
                end = at + len;
            }
            Found::Damaged(len) => damaged.push((at, len)),
        }
    }
    for (at, len) in damaged {
        if newest && at >= end {
            found.damage.push(format!(
                "{}: {len} bytes after offset {at} are not a whole record (a write cut short); cut off, everything before kept",
                path.display()
            ));
        } else {
            found.damaged += 1;
            found.damage.push(format!(
                "{}: {len} damaged bytes at offset {at} skipped; every intact record around them kept",
                path.display()
            ));
        }
    }
    Ok((end as u64, bytes.len() as u64))
}

impl Log {
    /// Reads every segment into `live`, cuts a torn tail off the newest,
    /// and opens it for appending.
    pub(crate) fn open(
        dir: &Path,
        segment_size: u64,
        live: &mut Live,
    ) -> io::Result<(Log, Recovery)> {
        fs::create_dir_all(dir)?;
        let mut numbers = Vec::new();
        for e in fs::read_dir(dir)? {
            let path = e?.path();
            if path.extension().is_some_and(|x| x == "seg") {
                return Err(io::Error::other(format!(
                    "{} is a segment of an earlier spool format; deliver it with the Postern that wrote it, or move it away",
                    path.display()
                )));
            }
            numbers.extend(number(&path));
        }
        numbers.sort_unstable();
        let mut found = Recovery::default();
        let last = numbers.last().copied();
        for &n in &numbers {
            let path = dir.join(name(n));
            let newest = Some(n) == last;
            let (end, len) = recover_segment(&path, n, live, &mut found, newest)?;
            if newest && len > end {
                OpenOptions::new().write(true).open(&path)?.set_len(end)?;
                if let Some(s) = live.segments.get_mut(&n) {
                    s.size = end;
                }
            }
        }
        let number = last.unwrap_or(1);
        let path = dir.join(name(number));
        let mut current = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = current.seek(SeekFrom::End(0))?;
        current.sync_all()?;
        live.open_segment(number);
        sync_dir(dir)?;
        Ok((
            Log {
                dir: dir.to_path_buf(),
                current,
                number,
                size,
                segment_size,
                reserve: dir.join(RESERVE).exists(),
            },
            found,
        ))
    }

    /// The segment being appended to, and its size so far.
    pub(crate) fn position(&self) -> (u32, u64) {
        (self.number, self.size)
    }

    /// Appends `bytes` and makes them durable. On failure nothing of them
    /// stays in the file.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
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
                // Cutting back frees what was written; if even that fails
                // the half-written tail is a torn tail at the next start.
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

    /// Deletes a segment for good.
    pub(crate) fn remove(&self, segment: u32) -> io::Result<()> {
        fs::remove_file(self.dir.join(name(segment)))?;
        sync_dir(&self.dir)
    }

    /// The spool's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the reserve file is in place.
    pub(crate) fn reserve_present(&self) -> bool {
        self.reserve
    }

    /// Writes the reserve file of `size` bytes (real blocks, not a sparse
    /// file). A failure leaves no partial file.
    pub(crate) fn make_reserve(&mut self, size: u64) -> io::Result<()> {
        let path = self.dir.join(RESERVE);
        let tmp = self.dir.join("reserve.tmp");
        let result = (|| {
            let mut f = File::create(&tmp)?;
            let block = vec![0u8; 64 * 1024];
            let mut left = size;
            while left > 0 {
                let n = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
                f.write_all(block.get(..n).unwrap_or_default())?;
                left -= n as u64;
            }
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            sync_dir(&self.dir)
        })();
        match result {
            Ok(()) => self.reserve = true,
            // Nothing half-made stays behind.
            Err(_) => {
                let _ = fs::remove_file(&tmp);
            }
        }
        result
    }

    /// Frees the reserve's space.
    pub(crate) fn release_reserve(&mut self) -> io::Result<()> {
        fs::remove_file(self.dir.join(RESERVE))?;
        self.reserve = false;
        sync_dir(&self.dir)
    }
}

/// Reads the record at `loc` back: its framed bytes.
pub(crate) fn read(dir: &Path, loc: Loc) -> io::Result<Vec<u8>> {
    let file = File::open(dir.join(name(loc.segment)))?;
    let mut bytes = vec![0u8; loc.len as usize];
    file.read_exact_at(&mut bytes, loc.offset)?;
    Ok(bytes)
}
