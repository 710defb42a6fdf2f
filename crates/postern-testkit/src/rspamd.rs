//! A real rspamd (Debian's package) on a loopback port: its proxy worker
//! in milter mode, scanning by itself (`self_scan`), with Debian's rules
//! and a test configuration beside them. Ended by its PID when dropped
//! (SIGTERM, so that the main process ends its workers).
//!
//! The test configuration: `reject` at 15, `add_header` at 6, no
//! greylisting; the milter adds `X-Spamd-Result` (the score) also for
//! mail from loopback; its DNS is a test server with an empty zone, so
//! that every lookup answers NXDOMAIN at once; host name checks (`hfilter`) are off; and the symbol `POSTERN_TEST_MEDIUM` (score 11) fires on a
//! subject containing [`MEDIUM_SUBJECT`], so that a test can send a
//! message of a known level.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::dns::DnsServer;

/// A subject containing this scores 11 (between `add_header` and `reject`).
pub const MEDIUM_SUBJECT: &str = "postern medium test";

/// GTUBE: rspamd rejects a message containing it.
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// A running (or stopped) rspamd.
#[derive(Debug)]
pub struct RspamdServer {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// rspamd's DNS: an empty zone, so that every lookup (SPF, DMARC,
    /// block lists) answers NXDOMAIN at once.
    dns: DnsServer,
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

fn config(dir: &Path, addr: SocketAddr, dns: SocketAddr, quarantine: bool) -> std::io::Result<()> {
    write(
        &dir.join("rspamd.conf"),
        &format!(
            r#".include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    dns {{ nameserver = ["{dns}"]; timeout = 1s; retransmits = 1; }}
    local_addrs = [];
}}
logging {{ type = "file"; filename = "$LOGDIR/rspamd.log"; level = "warning"; }}
worker "rspamd_proxy" {{
    bind_socket = "{addr}";
    milter = yes;
    upstream "local" {{ default = yes; self_scan = yes; }}
    timeout = 30s;
    count = 1;
    spam_header = "X-Spam";
    reject_message = "Spam message rejected";
    quarantine_on_reject = {quarantine};
}}
"#
        ),
    )?;
    write(
        &dir.join("local/local.d/milter_headers.conf"),
        "use = [\"x-spamd-result\"];\nskip_local = false;\nskip_authenticated = false;\n",
    )?;
    // Host name checks would score every loopback test client.
    write(
        &dir.join("local/local.d/hfilter.conf"),
        "enabled = false;\n",
    )?;
    write(
        &dir.join("local/local.d/actions.conf"),
        "reject = 15;\nadd_header = 6;\ngreylist = null;\nrewrite_subject = null;\n",
    )?;
    write(
        &dir.join("local/rspamd.local.lua"),
        &format!(
            r#"rspamd_config:register_symbol({{
  name = 'POSTERN_TEST_MEDIUM',
  score = 11.0,
  callback = function(task)
    local subject = task:get_subject()
    return subject ~= nil and subject:find('{MEDIUM_SUBJECT}', 1, true) ~= nil
  end,
}})
"#
        ),
    )?;
    for sub in ["db", "run"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    Ok(())
}

impl RspamdServer {
    /// Starts rspamd on a free port of 127.0.0.1 and waits (up to 90 s:
    /// it compiles its rules first) until the milter port accepts.
    pub fn start() -> std::io::Result<RspamdServer> {
        Self::start_with(false)
    }

    /// The same, but asking the MTA to quarantine what it would reject
    /// (`quarantine_on_reject`).
    pub fn start_quarantining() -> std::io::Result<RspamdServer> {
        Self::start_with(true)
    }

    fn start_with(quarantine: bool) -> std::io::Result<RspamdServer> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = RspamdServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: tempfile::tempdir()?,
            child: None,
            dns: DnsServer::builder().start()?,
        };
        config(
            server.dir.path(),
            server.addr,
            server.dns.addr(),
            quarantine,
        )?;
        server.restart()?;
        Ok(server)
    }

    /// The milter address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Ends rspamd (SIGTERM to the main process, which ends its workers).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::process::terminate(&mut child);
        }
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until && TcpStream::connect(self.addr).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts rspamd again and waits for its milter port.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        let dir = self.dir.path();
        let var = |name: &str, sub: &str| format!("--var={name}={}", dir.join(sub).display());
        let mut command = Command::new("rspamd");
        command.arg("-f").arg("-i");
        if rustix::process::getuid().is_root() {
            command.args(["-u", "root", "-g", "root"]);
        }
        let child = command
            .arg("-c")
            .arg(dir.join("rspamd.conf"))
            .arg(var("LOCAL_CONFDIR", "local"))
            .arg(var("DBDIR", "db"))
            .arg(var("RUNDIR", "run"))
            .arg(var("LOGDIR", ""))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| std::io::Error::other(format!("rspamd: {e} (apt install rspamd)")))?;
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(90);
        while Instant::now() < until {
            if TcpStream::connect(self.addr).is_ok() {
                return Ok(());
            }
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(std::io::Error::other(format!(
                        "rspamd exited ({status}); see {}",
                        dir.join("rspamd.log").display()
                    )));
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(std::io::Error::other("rspamd did not open its milter port"))
    }
}

impl Drop for RspamdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
