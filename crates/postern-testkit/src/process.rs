//! Ending the processes a test or a benchmark started, by their PID.

use std::process::{Child, ExitStatus};

/// Sends SIGTERM to `child` and waits for it to exit.
pub fn terminate(child: &mut Child) -> Option<ExitStatus> {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).ok()?)?;
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    child.wait().ok()
}

/// Kills `child` (SIGKILL) unless it has exited, and reaps it.
pub fn kill(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}
