//! A small tmpfs for tests of a full disk, mounted at a temporary
//! directory and unmounted when dropped. Mounting needs root (CI runs as
//! root); without it [`Tmpfs::mount`] says why the test is skipped.

use std::path::Path;
use std::process::Command;

/// A mounted tmpfs.
#[derive(Debug)]
pub struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, as `2m`); `None`, with
    /// a skip message on standard error, when mounting is not allowed.
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "skipped: mounting a tmpfs needs root (CI runs as root); run as root to test a full disk"
            );
            return None;
        }
        Some(Tmpfs(dir))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // A failed unmount leaves a small tmpfs behind; nothing to do here.
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}
