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

/// Builds `bin` of `package` for this test's profile (a no-op when it is
/// up to date) and returns its path.
fn build(package: &str, bin: &str) -> PathBuf {
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
        .args(["build", "--quiet", "-p", package, "--bin", bin, "--profile"])
        .arg(profile)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(workspace_root())
        .status()
        .expect("cargo can be started");
    assert!(status.success(), "building {bin} failed");
    profile_dir.join(bin)
}

/// The path of a freshly built `postern` binary of this test's profile.
pub fn postern_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build("postern", "postern"))
}

/// The path of a freshly built `postern-bench` (the load harness).
pub fn bench_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build("postern-benches", "postern-bench"))
}

/// Runs `postern ARGS` in the workspace root and waits for it.
pub fn postern(args: &[&str]) -> Output {
    Command::new(postern_bin())
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("the postern binary can be started")
}

/// A `postern run` process for a test. It is killed by its PID when
/// dropped, unless it already exited.
#[derive(Debug)]
pub struct Daemon {
    child: std::process::Child,
    /// What it printed on stderr so far (its start and stop lines).
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Daemon {
    /// Starts `postern run --config FILE` and waits until it listens on
    /// `addr`.
    pub fn start(config: &Path, addr: std::net::SocketAddr) -> Daemon {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(postern_bin())
            .args(["run", "--config"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("postern starts");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "postern exited with {status}: {}",
                    stderr.lock().map(|s| s.clone()).unwrap_or_default()
                );
            }
            assert!(
                std::time::Instant::now() < until,
                "postern did not listen on {addr}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Daemon { child, stderr }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit; returns its exit code.
    pub fn terminate(mut self) -> Option<i32> {
        postern_testkit::process::terminate(&mut self.child).and_then(|s| s.code())
    }

    /// SIGKILL: the process dies wherever it is.
    pub fn kill_9(mut self) {
        postern_testkit::process::kill(&mut self.child);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        postern_testkit::process::kill(&mut self.child);
    }
}
