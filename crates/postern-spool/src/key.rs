//! The spool's key: a random number written into every record of format
//! 3 beside its segment number, and kept in `spool.key`. A reused
//! segment keeps its earlier records after the new ones, and a scan that
//! looks for the next intact record after damage reads their bytes,
//! message bodies included. A sender could put whole frames into a body;
//! without the key, which never leaves the spool's directory, such a frame
//! is never taken for one of the spool's own records.
//!
//! The file also says up to which segment records of format 2 (without
//! segment number or key) may be read: the segments of a spool written by
//! an earlier Postern, which are never reused.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use crate::log::sync_dir;

/// The key's file in the spool's directory.
const FILE: &str = "spool.key";

/// The key and the segments of format 2.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    pub(crate) key: u64,
    /// Segments up to this number may hold records of format 2; 0 when
    /// none do.
    pub(crate) format_2_up_to: u32,
}

/// Never printed: the key is what keeps a sender's frames out.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("format_2_up_to", &self.format_2_up_to)
            .finish_non_exhaustive()
    }
}

/// Whose records a reader takes.
#[derive(Clone, Copy)]
pub(crate) struct Owner {
    pub(crate) segment: u32,
    pub(crate) key: u64,
    /// Records of format 2 are the segment's own too.
    pub(crate) format_2: bool,
}

impl Key {
    /// The reader of segment `segment`'s records.
    pub(crate) fn owner(&self, segment: u32) -> Owner {
        Owner {
            segment,
            key: self.key,
            format_2: segment <= self.format_2_up_to,
        }
    }

    /// Reads the spool's key. `Ok(None)` when there is none yet.
    pub(crate) fn load(dir: &Path) -> io::Result<Option<Key>> {
        let path = dir.join(FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        };
        let key = field("key").and_then(|k| u64::from_str_radix(k, 16).ok());
        let up_to = field("format-2-up-to").and_then(|n| n.parse().ok());
        match (text.lines().next(), key, up_to) {
            (Some("postern spool key"), Some(key), Some(format_2_up_to)) => Ok(Some(Key {
                key,
                format_2_up_to,
            })),
            _ => Err(io::Error::other(format!(
                "{}: not a spool key (expected the lines `postern spool key`, `key <16 hex digits>`, `format-2-up-to <segment>`)",
                path.display()
            ))),
        }
    }

    /// A new random key, for a spool whose segments up to `format_2_up_to`
    /// were written in format 2.
    pub(crate) fn new(format_2_up_to: u32) -> io::Result<Key> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(io::Error::other)?;
        Ok(Key {
            key: u64::from_le_bytes(bytes),
            format_2_up_to,
        })
    }

    /// Writes the key durably: a file of its own first, renamed into place.
    pub(crate) fn save(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join("spool.key.tmp");
        let mut file = File::create(&tmp)?;
        write!(
            file,
            "postern spool key\nkey {:016x}\nformat-2-up-to {}\n",
            self.key, self.format_2_up_to
        )?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(FILE))?;
        sync_dir(dir)
    }
}
