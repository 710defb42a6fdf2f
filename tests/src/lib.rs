//! Support for end-to-end tests that run the real `postern` binary.
//!
//! [`postern_bin`] builds the binary (a no-op when it is up to date) once
//! per test process and returns its path, so that a test never runs a stale
//! binary left by an earlier build.
// A failure here is a failure of the test that called it: panicking with a
// clear message is the right way to report it.
#![allow(clippy::panic, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root (the repository's top directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits inside the workspace")
        .to_path_buf()
}

/// The path of a freshly built `postern` binary of this test's profile.
pub fn postern_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test knows its own path");
        // target/<profile>/deps/<test binary>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binaries live in target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target/<profile> has a parent");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "postern",
                "--bin",
                "postern",
                "--profile",
            ])
            .arg(profile)
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(workspace_root())
            .status()
            .expect("cargo can be started");
        assert!(status.success(), "building the postern binary failed");
        profile_dir.join("postern")
    })
}

/// Runs `postern ARGS` in the workspace root and waits for it.
pub fn postern(args: &[&str]) -> Output {
    Command::new(postern_bin())
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("the postern binary can be started")
}
