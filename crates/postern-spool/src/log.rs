//! Segment files: reading them back at start, appending with one fsync
//! per batch, rolling to a new segment (a zero-filled one when it is
//! ready), reading one record back, and deleting a segment. Also the
//! reserve file, the space kept back so that outcomes can still be
//! recorded when the disk fills up.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::Options;
use crate::live::{Live, Loc};
use crate::prepare::{NEXT, Preparer, write_zeros};
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
    /// Bytes written to the current segment: where the next batch goes.
    size: u64,
    /// The current segment was zero-filled ahead: batches overwrite its
    /// zeros.
    zero_filled: bool,
    segment_size: u64,
    /// Makes zero-filled segments, unless `Spool_Zero_Fill` is off.
    preparer: Option<Preparer>,
    /// The segment during which the next one was asked for.
    asked_in: Option<u32>,
    /// The reserve file is in place.
    reserve: bool,
}

/// What reading one segment back found.
struct Segment {
    /// Where its last intact record ends.
    end: u64,
    /// The file's length.
    len: u64,
    /// Everything after `end` is zeros: room zero-filled ahead, unused.
    zeros_after: bool,
}

/// Reads one segment into `live`.
fn recover_segment(
    path: &Path,
    n: u32,
    live: &mut Live,
    found: &mut Recovery,
    newest: bool,
) -> io::Result<Segment> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    live.open_segment(n);
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
    let zeros = |from: usize, to: usize| {
        bytes
            .get(from..to)
            .is_some_and(|b| !b.is_empty() && b.iter().all(|&b| b == 0))
    };
    // Only the newest segment has room zero-filled ahead and not yet
    // used: an older one was full before the next began.
    let zeros_after = newest && zeros(end, bytes.len());
    for (at, len) in damaged {
        if zeros_after && at >= end {
            continue;
        }
        if newest && at >= end {
            found.damage.push(format!(
                "{}: {len} bytes after offset {at} are not a whole record (a write cut short); cut off, everything before kept",
                path.display()
            ));
        } else if newest && zeros(at, at + len) {
            // Batches are made durable one after another, so only the
            // last one, never acknowledged, can have reached the disk
            // in part: a page of it still zeros, a later one written.
            found.damage.push(format!(
                "{}: {len} bytes of zeros at offset {at}: part of the last write did not reach the disk before a crash; the intact records after them kept",
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
    // Unused zero-filled room is not the segment's size: reclaiming
    // weighs live bytes against what was written.
    let len = bytes.len() as u64;
    let end = end as u64;
    live.grew(n, if zeros_after { end } else { len });
    Ok(Segment {
        end,
        len,
        zeros_after,
    })
}

impl Log {
    /// Reads every segment into `live`, cuts a torn tail off the newest,
    /// and opens it for appending (over its zeros, if it was zero-filled).
    pub(crate) fn open(
        dir: &Path,
        options: &Options,
        live: &mut Live,
    ) -> io::Result<(Log, Recovery)> {
        fs::create_dir_all(dir)?;
        let preparer = if options.zero_fill {
            Some(Preparer::start(dir, options.reserve)?)
        } else {
            None
        };
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
        let mut size = 0;
        let mut zero_filled = false;
        for &n in &numbers {
            let path = dir.join(name(n));
            let newest = Some(n) == last;
            let segment = recover_segment(&path, n, live, &mut found, newest)?;
            if !newest {
                continue;
            }
            size = segment.end;
            zero_filled = segment.zeros_after;
            if segment.len > segment.end && !segment.zeros_after {
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(segment.end)?;
                if let Some(s) = live.segments.get_mut(&n) {
                    s.size = segment.end;
                }
            }
        }
        let number = last.unwrap_or(1);
        let path = dir.join(name(number));
        let current = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        current.sync_all()?;
        live.open_segment(number);
        sync_dir(dir)?;
        Ok((
            Log {
                dir: dir.to_path_buf(),
                current,
                number,
                size,
                zero_filled,
                segment_size: options.segment_size,
                preparer,
                asked_in: None,
                reserve: dir.join(RESERVE).exists(),
            },
            found,
        ))
    }

    /// The segment being appended to, and its size so far.
    pub(crate) fn position(&self) -> (u32, u64) {
        (self.number, self.size)
    }

    /// Writes `bytes` after the last batch and makes them durable. On
    /// failure nothing of them stays in the file.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let result = self
            .current
            .write_all_at(bytes, self.size)
            .and_then(|()| self.current.sync_data());
        match result {
            Ok(()) => {
                self.size += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cutting back frees what was written (and the zeros
                // after it); if even that fails the half-written tail is
                // a torn tail at the next start.
                let _ = self.current.set_len(self.size);
                let _ = self.current.sync_data();
                self.zero_filled = false;
                Err(e)
            }
        }
    }

    /// Asks for the next segment to be zero-filled once the current one
    /// is a sixteenth full (an idle spool makes none); starts a new
    /// segment when the current one is full, or as soon as a zero-filled
    /// one is ready if the current one was not zero-filled.
    pub(crate) fn roll_if_full(&mut self, live: &mut Live) -> io::Result<()> {
        let full = self.size >= self.segment_size;
        let made = match self.preparer.as_mut() {
            Some(preparer) => {
                if self.size >= self.segment_size / 16
                    && self.asked_in != Some(self.number)
                    && preparer.ask(self.segment_size)
                {
                    self.asked_in = Some(self.number);
                }
                if self.zero_filled && !full {
                    return Ok(());
                }
                preparer.take()
            }
            None => None,
        };
        if made.is_none() && !full {
            return Ok(());
        }
        self.roll(made, live)
    }

    /// Starts segment `number + 1`: the zero-filled file `made`, or an
    /// empty one.
    fn roll(&mut self, made: Option<File>, live: &mut Live) -> io::Result<()> {
        let zero_filled = made.is_some();
        let number = self.number + 1;
        let path = self.dir.join(name(number));
        let current = match made {
            Some(file) => {
                fs::rename(self.dir.join(NEXT), &path)?;
                file
            }
            None => OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?,
        };
        // A file already there is what an earlier roll left when its
        // directory sync failed: nothing was written to it, and it is
        // zeros if it was zero-filled.
        let zero_filled = zero_filled || current.metadata()?.len() > 0;
        sync_dir(&self.dir)?;
        self.current = current;
        self.number = number;
        self.size = 0;
        self.zero_filled = zero_filled;
        live.open_segment(number);
        metrics::counter!(
            postern_metrics::SPOOL_SEGMENTS_STARTED,
            "zero_filled" => if zero_filled { "true" } else { "false" }
        )
        .increment(1);
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
        let result = write_zeros(&tmp, size, |_, _| Ok(())).and_then(|_| {
            fs::rename(&tmp, &path)?;
            sync_dir(&self.dir)
        });
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
