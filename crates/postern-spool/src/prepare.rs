//! Segments made ahead (`Spool_Zero_Fill`): a thread of its own writes
//! the next segment file full of zeros and makes it durable before the
//! log needs it. A commit into such a file overwrites blocks that are
//! already allocated and written, so its fdatasync flushes data only: the
//! file's size does not change and the filesystem has no metadata to
//! journal (a database's write-ahead log is zero-filled for the same
//! reason). `docs/adr/0012-zero-filled-segments.md` has the figures.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::free_space;

/// The file a segment is made in, until the log renames it into place.
/// One left by a crash is deleted at start.
pub(crate) const NEXT: &str = "next.prepared";

/// Zeros written per call.
const CHUNK: usize = 1 << 20;

/// Zeros made durable at a time, so that a large segment's write-back
/// never holds the log's own fsync up for long.
const SYNC_EVERY: u64 = 8 << 20;

/// The thread that makes segments, and whether one is on its way.
#[derive(Debug)]
pub(crate) struct Preparer {
    requests: Option<Sender<u64>>,
    made: Receiver<io::Result<File>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Asked for and not taken yet: the thread may be writing [`NEXT`].
    outstanding: bool,
}

impl Preparer {
    /// Deletes a segment left half made, and starts the thread, which
    /// leaves `reserve` bytes and a segment more free beside the spool.
    pub(crate) fn start(dir: &Path, reserve: u64) -> io::Result<Self> {
        match fs::remove_file(dir.join(NEXT)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let (requests, asked) = crossbeam_channel::bounded::<u64>(1);
        let (done, made) = crossbeam_channel::bounded(1);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("postern-spool-zero".into())
            .spawn({
                let dir = dir.to_path_buf();
                let stop = stop.clone();
                move || {
                    for size in asked {
                        if done.send(make(&dir, size, reserve, &stop)).is_err() {
                            return;
                        }
                    }
                }
            })?;
        Ok(Self {
            requests: Some(requests),
            made,
            stop,
            thread: Some(thread),
            outstanding: false,
        })
    }

    /// Asks for a segment of `size` bytes; false when one is already on
    /// its way (or made and not taken).
    pub(crate) fn ask(&mut self, size: u64) -> bool {
        if self.outstanding {
            return false;
        }
        self.outstanding = self
            .requests
            .as_ref()
            .is_some_and(|r| r.try_send(size).is_ok());
        self.outstanding
    }

    /// The segment made, if it is ready: a durable file of zeros at
    /// [`NEXT`]. A failed one (no room, an I/O error) counts as taken, so
    /// that a later segment may ask again.
    pub(crate) fn take(&mut self) -> Option<File> {
        let made = self.made.try_recv().ok()?;
        self.outstanding = false;
        made.ok()
    }
}

impl Drop for Preparer {
    /// Stops the thread between two writes and waits for it, so that no
    /// thread of a closed spool still writes in its directory.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes [`NEXT`] full of zeros and makes it durable. Only while what
/// is left to write, another segment and `reserve` are free (checked
/// before every chunk, as commits take space meanwhile), so that making
/// ahead never takes the disk's last room from commits nor the reserve's
/// place; nothing half made stays behind.
fn make(dir: &Path, size: u64, reserve: u64, stop: &AtomicBool) -> io::Result<File> {
    write_zeros(&dir.join(NEXT), size, |file, written| {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("the spool is closing"));
        }
        let needed = (size - written)
            .saturating_add(size)
            .saturating_add(reserve);
        if free_space(dir) < needed {
            return Err(io::ErrorKind::StorageFull.into());
        }
        if written > 0 && written % SYNC_EVERY == 0 {
            file.sync_data()?;
        }
        Ok(())
    })
}

/// Writes a new file at `path` of `size` zeros (real blocks, not a sparse
/// file) and makes it durable; `before` runs before each chunk with the
/// bytes written so far, and its error ends the writing. A failure leaves
/// no file behind.
pub(crate) fn write_zeros(
    path: &Path,
    size: u64,
    mut before: impl FnMut(&File, u64) -> io::Result<()>,
) -> io::Result<File> {
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let zeros = vec![0u8; CHUNK];
        let mut written = 0u64;
        while written < size {
            before(&file, written)?;
            let n = usize::try_from(size - written).map_or(CHUNK, |left| left.min(CHUNK));
            file.write_all(zeros.get(..n).unwrap_or_default())?;
            written += n as u64;
        }
        file.sync_all()?;
        Ok(file)
    })();
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}
