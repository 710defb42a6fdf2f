//! Segment files: reading them back at start, appending with one fsync
//! per batch, rolling to a new segment (a spare or a zero-filled one when
//! there is one), reading one record back, and retiring a reclaimed
//! segment (kept as a spare for a later segment to overwrite, or
//! deleted). Also the reserve file, the space kept back so that outcomes
//! can still be recorded when the disk fills up.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::Options;
use crate::key::{Key, Owner};
use crate::live::{Live, Loc};
use crate::prepare::{NEXT, Preparer, write_zeros};
use crate::record::{Found, begins_old, count_format_3, looks_own, scan, under_another_key};

/// A segment's file name: its number, zero-padded so names sort in order.
fn name(number: u32) -> String {
    format!("{number:010}.spool")
}

/// A spare's file name: the number it had as a segment.
fn spare_name(number: u32) -> String {
    format!("{number:010}.spare")
}

/// The number in a segment's or a spare's file name, if `path` is one of
/// kind `ext`.
fn number(path: &Path, ext: &str) -> Option<u32> {
    if path.extension()? != ext {
        return None;
    }
    path.file_stem()?.to_str()?.parse().ok()
}

/// The file kept back for a full disk.
const RESERVE: &str = "reserve";

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Cuts a spare down to `size`: a segment overwrites all of it before it
/// is full, so that no older segment ends in records of an earlier use.
/// A spare not cut is cut when taken.
fn fit(path: &Path, size: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    if file.metadata()?.len() > size {
        file.set_len(size)?;
    }
    Ok(())
}

/// What reading the log back found.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    /// Damage found, a line for the log each.
    pub(crate) damage: Vec<String>,
    /// Damaged stretches skipped (torn tails not counted).
    pub(crate) damaged: u64,
    /// Segments that begin with an intact record of format 3 under
    /// another key, and, for a spool without a key, intact records of
    /// format 3 in damaged stretches: written under a key that is not this
    /// one.
    pub(crate) foreign: u64,
}

/// The open log: its directory, the segment being appended to.
#[derive(Debug)]
pub(crate) struct Log {
    dir: PathBuf,
    current: File,
    number: u32,
    /// Bytes written to the current segment: where the next batch goes.
    size: u64,
    /// The current segment's room was written before (zeros made ahead,
    /// or a spare's earlier records): batches overwrite it.
    preallocated: bool,
    segment_size: u64,
    /// Makes zero-filled segments, unless `Spool_Zero_Fill` is off.
    preparer: Option<Preparer>,
    /// The segment during which the next one was asked for.
    asked_in: Option<u32>,
    /// Spares, by the number they had as segments.
    spares: Vec<u32>,
    /// Spares kept at most (`Spool_Spare_Segments`).
    max_spares: usize,
    /// The key of every record, and the segments of format 2 (never
    /// reused: their records carry no segment number).
    key: Key,
    /// The reserve file is in place.
    reserve: bool,
}

/// How the next segment starts.
enum Next {
    /// A spare, by its number.
    Spare(u32),
    /// The zero-filled file made ahead.
    Zeroed(File),
    /// An empty file.
    Empty,
}

/// What reading one segment back found.
struct Segment {
    /// Where its last intact record ends.
    end: u64,
    /// The file's length.
    len: u64,
    /// Everything after `end` was written before and is unused: zeros made
    /// ahead, or records of a spare's earlier use.
    room: bool,
}

/// Reads one segment into `live`. Nothing in the file changes.
fn recover_segment(
    path: &Path,
    owner: Owner,
    live: &mut Live,
    found: &mut Recovery,
    newest: bool,
    keyless: bool,
) -> io::Result<Segment> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let n = owner.segment;
    live.open_segment(n);
    if under_another_key(&bytes, owner) {
        found.foreign += 1;
    }
    let mut end = 0usize;
    // Stretches between intact records: where, how long, and whether they
    // hold records of the file's earlier use.
    let mut gaps: Vec<(usize, usize, bool)> = Vec::new();
    for (at, f) in scan(&bytes, owner) {
        let (len, old) = match f {
            Found::Record(record, len) => {
                let loc = Loc {
                    segment: n,
                    offset: at as u64,
                    len: u32::try_from(len).unwrap_or(u32::MAX),
                };
                live.apply(&record, loc);
                end = at + len;
                continue;
            }
            Found::Old(len) => (len, true),
            Found::Damaged(len) => {
                // Where a spool of format 2 holds none (not inside its
                // records' bodies): a key lost, its first record damaged.
                if keyless {
                    found.foreign += count_format_3(bytes.get(at..at + len).unwrap_or_default());
                }
                (len, false)
            }
        };
        match gaps.last_mut() {
            Some(gap) if gap.0 + gap.1 == at => {
                gap.1 += len;
                gap.2 |= old;
            }
            _ => gaps.push((at, len, old)),
        }
    }
    // Written before this segment's records: zeros made ahead, or a
    // spare's earlier records and the pieces of them that new ones cut.
    let written_before = |&(at, len, old): &(usize, usize, bool)| {
        old || bytes
            .get(at..at + len)
            .is_some_and(|b| b.iter().all(|&b| b == 0))
    };
    // Only the newest segment has room not yet used: an older one was
    // full before the next began. What begins like one of the segment's
    // frames where the last record ends is a write cut short (or the last
    // record damaged); anything else there is as it was before (zeros, or
    // a spare's earlier records and the piece of one that the new ones
    // cut).
    let room = newest
        && gaps.last().is_some_and(|g| {
            let tail = bytes.get(g.0..).unwrap_or_default();
            g.0 >= end && (begins_old(tail, owner) || !looks_own(tail, owner))
        });
    for gap in gaps {
        let (at, len, _) = gap;
        if room && at >= end {
            continue;
        }
        if newest && at >= end {
            found.damage.push(format!(
                "{}: {len} bytes after offset {at} begin like a record but are not a whole one (a write cut short, or the last record damaged); cut off, everything before kept",
                path.display()
            ));
        } else if newest && written_before(&gap) {
            // Batches are made durable one after another, so only the
            // last one, never acknowledged, can have reached the disk
            // in part: a page of it still as it was, a later one written.
            found.damage.push(format!(
                "{}: {len} bytes at offset {at} are as they were before the last write (zeros, or records of the file's earlier use): part of it did not reach the disk before a crash; the intact records after them kept",
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
    // Unused room is not the segment's size: reclaiming weighs live bytes
    // against what was written.
    let len = bytes.len() as u64;
    let end = end as u64;
    live.grew(n, if room { end } else { len });
    Ok(Segment { end, len, room })
}

impl Log {
    /// Reads every segment into `live`, cuts a torn tail off the newest,
    /// and opens it for appending (over its room, if it has any). Spares
    /// past `Spool_Spare_Segments`, and any not older than the newest
    /// segment, are deleted.
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
        let mut spares = Vec::new();
        for e in fs::read_dir(dir)? {
            let path = e?.path();
            if path.extension().is_some_and(|x| x == "seg") {
                return Err(io::Error::other(format!(
                    "{} is a segment of an earlier spool format; deliver it with the Postern that wrote it, or move it away",
                    path.display()
                )));
            }
            numbers.extend(number(&path, "spool"));
            spares.extend(number(&path, "spare"));
        }
        numbers.sort_unstable();
        let mut found = Recovery::default();
        let last = numbers.last().copied();
        // A spool without a key was written by an earlier Postern, in
        // format 2, up to its newest segment (which new records follow).
        let (key, made) = match Key::load(dir)? {
            Some(key) => (key, false),
            None => (Key::new(last.unwrap_or(0))?, true),
        };
        let mut newest = None;
        for &n in &numbers {
            let path = dir.join(name(n));
            let is_newest = Some(n) == last;
            let segment = recover_segment(&path, key.owner(n), live, &mut found, is_newest, made)?;
            if is_newest {
                newest = Some((n, path, segment));
            }
        }
        // Nothing was changed yet: a spool read with the wrong key, or
        // without the one it was written with, stays as it was, for the
        // key to be put back.
        if found.foreign > 0 {
            return Err(io::Error::other(format!(
                "{}: the spool's records were written under another key than {}; put the spool's own spool.key back (or move the spool away)",
                dir.display(),
                if made {
                    "none (spool.key is missing)"
                } else {
                    "the one in spool.key"
                }
            )));
        }
        if made {
            key.save(dir)?;
        }
        let (number, size, preallocated) = match newest {
            None => (1, 0, false),
            Some((n, path, segment)) => {
                // A spool of format 2 goes on in a segment of its own:
                // in its segments any frame of format 2 is read, and a
                // new record's body may hold one.
                let upgraded = n <= key.format_2_up_to;
                let room = segment.room && !upgraded;
                let keep = if room {
                    segment.end.max(options.segment_size)
                } else {
                    segment.end
                };
                if segment.len > keep {
                    OpenOptions::new().write(true).open(&path)?.set_len(keep)?;
                    if let Some(s) = live.segments.get_mut(&n) {
                        s.size = segment.end;
                    }
                }
                if upgraded {
                    (n + 1, 0, false)
                } else {
                    (n, segment.end, room)
                }
            }
        };
        // A spare's records must be older than any segment it becomes,
        // and under the key (spares are not read: with a new key they go).
        spares.sort_unstable();
        let mut kept = Vec::new();
        for k in spares {
            let path = dir.join(spare_name(k));
            if !made
                && kept.len() < options.spares
                && last.is_some_and(|l| k < l)
                && fit(&path, options.segment_size).is_ok()
            {
                kept.push(k);
            } else {
                fs::remove_file(&path)?;
            }
        }
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
                preallocated,
                segment_size: options.segment_size,
                preparer,
                asked_in: None,
                spares: kept,
                max_spares: options.spares,
                key,
                reserve: dir.join(RESERVE).exists(),
            },
            found,
        ))
    }

    /// The segment being appended to, and its size so far.
    pub(crate) fn position(&self) -> (u32, u64) {
        (self.number, self.size)
    }

    /// The spool's key.
    pub(crate) fn key(&self) -> Key {
        self.key
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
                self.preallocated = false;
                Err(e)
            }
        }
    }

    /// Asks for the next segment to be zero-filled once the current one
    /// is a sixteenth full, unless a spare is there to take (an idle spool
    /// makes none); starts a new segment when the current one is full, or
    /// as soon as a spare or a zero-filled one is there if the current one
    /// has no room written before.
    pub(crate) fn roll_if_full(&mut self, live: &mut Live) -> io::Result<()> {
        let full = self.size >= self.segment_size;
        if let Some(preparer) = self.preparer.as_mut()
            && self.spares.is_empty()
            && self.size >= self.segment_size / 16
            && self.asked_in != Some(self.number)
            && preparer.ask(self.segment_size)
        {
            self.asked_in = Some(self.number);
        }
        if self.preallocated && !full {
            return Ok(());
        }
        let next = match self.spares.pop() {
            Some(k) => Next::Spare(k),
            None => match self.preparer.as_mut().and_then(Preparer::take) {
                Some(file) => Next::Zeroed(file),
                None if full => Next::Empty,
                None => return Ok(()),
            },
        };
        self.roll(next, live)
    }

    /// Starts segment `number + 1` as `next` says.
    fn roll(&mut self, next: Next, live: &mut Live) -> io::Result<()> {
        let number = self.number + 1;
        let path = self.dir.join(name(number));
        let (current, start) = match next {
            // Taken off the list whatever happens: a spare that cannot be
            // renamed is not tried again.
            Next::Spare(k) => {
                fs::rename(self.dir.join(spare_name(k)), &path)?;
                (OpenOptions::new().write(true).open(&path)?, "reused")
            }
            Next::Zeroed(file) => {
                fs::rename(self.dir.join(NEXT), &path)?;
                (file, "zero_filled")
            }
            Next::Empty => (
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)?,
                "empty",
            ),
        };
        // A file already there as an empty one is what an earlier roll left
        // when it failed after its rename: nothing of this segment was
        // written to it, and it is zeros or a spare's earlier records.
        let len = current.metadata()?.len();
        let start = if start == "empty" && len > 0 {
            "reused"
        } else {
            start
        };
        if len > self.segment_size {
            current.set_len(self.segment_size)?;
        }
        sync_dir(&self.dir)?;
        self.current = current;
        self.number = number;
        self.size = 0;
        self.preallocated = start != "empty";
        live.open_segment(number);
        metrics::counter!(postern_metrics::SPOOL_SEGMENTS_STARTED, "start" => start).increment(1);
        Ok(())
    }

    /// Takes a reclaimed segment out of the log for good: kept as a spare
    /// for a later segment to overwrite when `keep` says there is room for
    /// it (and fewer than `Spool_Spare_Segments` are kept, and it holds no
    /// records of format 2), deleted otherwise.
    /// A segment already gone is what an earlier call left when its
    /// directory sync failed: only the sync is done again.
    pub(crate) fn retire(&mut self, segment: u32, keep: bool) -> io::Result<()> {
        let path = self.dir.join(name(segment));
        let gone = |r: io::Result<()>| match r {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            r => r.map(|()| true),
        };
        if keep && self.spares.len() < self.max_spares && segment > self.key.format_2_up_to {
            let spare = self.dir.join(spare_name(segment));
            if gone(fs::rename(&path, &spare))? {
                self.spares.push(segment);
                // Cut later, when taken, if not now.
                let _ = fit(&spare, self.segment_size);
            }
        } else {
            gone(fs::remove_file(&path))?;
        }
        sync_dir(&self.dir)
    }

    /// Deletes every spare: the disk is short of space.
    pub(crate) fn drop_spares(&mut self) -> io::Result<()> {
        if self.spares.is_empty() {
            return Ok(());
        }
        while let Some(&k) = self.spares.last() {
            if let Err(e) = fs::remove_file(self.dir.join(spare_name(k)))
                && e.kind() != io::ErrorKind::NotFound
            {
                return Err(e);
            }
            self.spares.pop();
        }
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
