//! The world a load run needs: destination domains in the testkit DNS,
//! counting sinks on 127.0.0.x, and the daemon with a generated
//! configuration.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postern_testkit::dns::DnsServer;
use postern_testkit::sink::Sink;

/// The address of sink host `j`.
pub(crate) fn host_ip(j: usize) -> IpAddr {
    let j = u8::try_from(j % 200).unwrap_or(0);
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, 10 + j))
}

/// The destination domain of message `i`.
pub(crate) fn domain(i: usize, domains: usize) -> String {
    format!("d{}.bench", i % domains.max(1))
}

/// `domains` domains whose MX points at one of `hosts` hosts each.
pub(crate) fn dns(domains: usize, hosts: usize) -> io::Result<DnsServer> {
    let mut zone = DnsServer::builder().ttl(3600);
    for j in 0..hosts {
        zone = zone.addr(&format!("mx{j}.bench"), host_ip(j));
    }
    for k in 0..domains {
        zone = zone.mx(
            &domain(k, domains),
            10,
            &format!("mx{}.bench", k % hosts.max(1)),
        );
    }
    zone.start()
}

/// What each sink allows: connections (421 beyond) and messages a second
/// (451 4.7.28 beyond); unlimited when unset.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Allowance {
    pub(crate) connections: Option<usize>,
    pub(crate) rate: Option<u32>,
}

/// `hosts` counting sinks sharing one port: `port`, or any free one when
/// it is 0.
pub(crate) fn sinks(hosts: usize, port: u16, allow: Allowance) -> io::Result<(u16, Vec<Sink>)> {
    let mut last = None;
    let tries = if port == 0 { 20 } else { 1 };
    let wanted = port;
    for _ in 0..tries {
        let mut started = Vec::new();
        let mut port = wanted;
        for j in 0..hosts {
            let mut builder = Sink::builder().drop_bodies().ip(host_ip(j)).port(port);
            if let Some(n) = allow.connections {
                builder = builder.refuse_beyond(n);
            }
            if let Some(r) = allow.rate {
                builder = builder.rate_limit(r);
            }
            match builder.start() {
                Ok(s) => {
                    port = s.addr().port();
                    started.push(s);
                }
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
        }
        if started.len() == hosts {
            return Ok((port, started));
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no common port for the sinks")))
}

/// A free port on loopback.
pub(crate) fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The daemon of a run.
pub(crate) struct Daemon {
    child: Child,
    pub(crate) listen: SocketAddr,
}

/// The configuration for a run.
pub(crate) fn write_config(
    dir: &Path,
    dns: SocketAddr,
    sink_port: u16,
    listen: SocketAddr,
    extra: &[String],
) -> io::Result<PathBuf> {
    let metrics = free_port()?;
    let mut text = format!(
        r#"Hostname = "bench.postern.test"
Spool_Dir = "spool"
Log_File = "delivery.jsonl"
Metrics_Listen = "127.0.0.1:{metrics}"
Remote_SMTP_Port = {sink_port}
Max_Outbound_Connections = 8
Retry_Interval = 60
Resolver {{ Nameservers = ( "{dns}" ) Timeout = 5 }}
ESMTP_Listener {{
  Listen "{listen}" {{ }}
  Relay_Hosts = ( "127.0.0.0/8" )
}}
"#
    );
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    let path = dir.join("postern.conf");
    std::fs::write(&path, text)?;
    Ok(path)
}

impl Daemon {
    /// Starts `binary run --config config` and waits until it listens.
    pub(crate) fn start(binary: &Path, config: &Path, listen: SocketAddr) -> io::Result<Daemon> {
        let mut child = Command::new(binary)
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let until = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(listen).is_err() {
            if child.try_wait()?.is_some() || Instant::now() > until {
                let _ = child.kill();
                return Err(io::Error::other("the daemon did not start listening"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Daemon { child, listen })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait.
    pub(crate) fn stop(mut self) {
        let _ = postern_testkit::process::terminate(&mut self.child);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        postern_testkit::process::kill(&mut self.child);
    }
}

/// CPU seconds (user + system) and peak resident memory of a process.
pub(crate) fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; after the name (field
    // 2) the first field is 3, so they are at indexes 11 and 12 here.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    (cpu, peak_kb * 1024)
}
