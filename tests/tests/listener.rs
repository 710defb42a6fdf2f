//! The SMTP listener against abusive clients, on the real daemon: 3,000
//! idle connections, clients trickling a byte at a time, a client over
//! its session limit, the descriptor limit reached, and idle sessions at
//! shutdown.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Setup, codes, inject, wait_until};
use postern_testkit::dns::DnsServer;
use postern_testkit::sink::Sink;
use serde_json::json;

/// A connection from `source` (a 127.0.0.x address) to `to`.
fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&from.into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(socket.into())
}

fn greeting(tcp: &TcpStream) -> String {
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = String::new();
    let _ = BufReader::new(tcp).read_line(&mut line);
    line
}

/// The daemon's resident memory (kB) and CPU seconds so far.
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    (rss, ticks / 100.0)
}

fn raise_own_descriptor_limit() {
    let nofile = rustix::process::Resource::Nofile;
    let mut limit = rustix::process::getrlimit(nofile);
    limit.current = limit.maximum;
    rustix::process::setrlimit(nofile, limit).unwrap();
}

fn world(extra: &str) -> (DnsServer, Sink, Setup) {
    let sink = Sink::builder().start().unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let setup = Setup::new(&dns, &format!("Gateway = \"{}\"\n{extra}", sink.addr()));
    (dns, sink, setup)
}

#[test]
fn three_thousand_idle_connections_leave_room_for_a_real_client() {
    raise_own_descriptor_limit();
    let (_dns, sink, setup) = world("ESMTP_Listener { Max_Sessions_Per_Client = 5000 }");
    let daemon = setup.start();
    let (rss_before, _) = usage(daemon.pid());
    let idle: Vec<TcpStream> = (0..3000)
        .map(|_| connect_from("127.0.0.3", setup.listen).unwrap())
        .collect();
    // Every one of them was greeted: they are sessions, not a backlog.
    assert!(greeting(idle.last().unwrap()).starts_with("220"));
    let started = Instant::now();
    let results =
        inject(json!({"port": setup.listen.port(), "count": 5, "rcpts": ["r@dest.test"]}));
    assert_eq!(codes(&results), [250; 5]);
    assert!(sink.wait_for(5, Duration::from_secs(30)));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a real client waited {:?}",
        started.elapsed()
    );
    let (rss_after, _) = usage(daemon.pid());
    let per_session = (rss_after.saturating_sub(rss_before)) * 1024 / 3000;
    assert!(
        per_session < 64 * 1024,
        "{per_session} bytes of memory per idle session"
    );
    drop(idle);
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn trickling_clients_are_closed_by_the_command_deadline_and_a_client_limit_holds() {
    let (_dns, _sink, setup) =
        world("ESMTP_Listener { Inbound_Command_Timeout = 3 Max_Sessions_Per_Client = 250 }");
    let daemon = setup.start();
    let mut tricklers: Vec<TcpStream> = (0..200)
        .map(|_| {
            let tcp = connect_from("127.0.0.4", setup.listen).unwrap();
            assert!(greeting(&tcp).starts_with("220"));
            tcp
        })
        .collect();
    // One byte every 500 ms: the idle timeout would restart with every
    // byte; the command deadline does not.
    let started = Instant::now();
    let mut closed = 0;
    'outer: for round in 0..40 {
        for t in &mut tricklers {
            if t.write_all(&[b"NOOP NOOP NOOP NOOP NOOP\r\n"[round % 24]])
                .is_err()
            {
                closed += 1;
            }
        }
        if closed > 0 && round > 12 {
            break 'outer;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Each got 421 4.4.2 and was closed within the deadline (3 s) plus slack.
    let mut answered = 0;
    for t in &tricklers {
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut text = String::new();
        let _ = BufReader::new(t).read_to_string(&mut text);
        if text.contains("421 4.4.2") {
            answered += 1;
        }
    }
    assert_eq!(
        answered,
        200,
        "closed by the deadline after {:?}",
        started.elapsed()
    );
    // Beyond 250 sessions from one address: 421 at once.
    let many: Vec<TcpStream> = (0..250)
        .map(|_| connect_from("127.0.0.5", setup.listen).unwrap())
        .collect();
    wait_until(Duration::from_secs(10), "250 sessions", || {
        greeting(many.last().unwrap()).starts_with("220")
    });
    let extra = connect_from("127.0.0.5", setup.listen).unwrap();
    assert!(
        greeting(&extra).starts_with("421 4.7.0"),
        "a session over the limit"
    );
    // Another address is not affected.
    let other = connect_from("127.0.0.6", setup.listen).unwrap();
    assert!(greeting(&other).starts_with("220"));
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn at_the_descriptor_limit_the_daemon_waits_instead_of_spinning_and_recovers() {
    let (_dns, sink, setup) = world("");
    // The daemon under a limit of 256 descriptors (soft and hard).
    let mut child = Command::new("prlimit")
        .arg("--nofile=256:256")
        .arg(postern_e2e::postern_bin())
        .args(["run", "--config"])
        .arg(setup.config())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "the daemon to listen", || {
        TcpStream::connect(setup.listen).is_ok()
    });
    let pid = child.id();
    // More connections than it has descriptors for.
    let flood: Vec<TcpStream> = (0..400)
        .filter_map(|_| connect_from("127.0.0.7", setup.listen).ok())
        .collect();
    assert!(flood.len() > 300);
    std::thread::sleep(Duration::from_secs(1));
    let (_, cpu_before) = usage(pid);
    std::thread::sleep(Duration::from_secs(4));
    let (_, cpu_after) = usage(pid);
    assert!(
        cpu_after - cpu_before < 1.0,
        "{:.2} CPU seconds in 4 s at the descriptor limit",
        cpu_after - cpu_before
    );
    // The flood goes away: the daemon takes mail again.
    drop(flood);
    wait_until(Duration::from_secs(30), "mail taken again", || {
        let r = inject(json!({"port": setup.listen.port(), "count": 1, "rcpts": ["r@dest.test"]}));
        codes(&r) == [250]
    });
    assert!(sink.wait_for(1, Duration::from_secs(30)));
    postern_testkit::process::terminate(&mut child);
}

#[test]
fn idle_sessions_do_not_hold_up_shutdown() {
    let (_dns, _sink, setup) = world("");
    let daemon = setup.start();
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| {
            let tcp = connect_from("127.0.0.8", setup.listen).unwrap();
            assert!(greeting(&tcp).starts_with("220"));
            tcp
        })
        .collect();
    let started = Instant::now();
    assert_eq!(daemon.terminate(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?} with idle sessions",
        started.elapsed()
    );
    let mut rest = String::new();
    let _ = BufReader::new(&idle[0]).read_to_string(&mut rest);
    assert!(rest.starts_with("421 4.3.2"), "{rest:?}");
}

#[test]
fn envelopes_are_checked_and_a_non_ascii_address_without_smtputf8_bounces_intact() {
    let sink = Sink::builder().no_smtputf8().start().unwrap();
    let dns = DnsServer::builder().start().unwrap();
    let setup = Setup::new(&dns, &format!("Gateway = \"{}\"", sink.addr()));
    let daemon = setup.start();
    // Invalid UTF-8 in the envelope is refused, not replaced.
    let mut tcp = connect_from("127.0.0.1", setup.listen).unwrap();
    assert!(greeting(&tcp).starts_with("220"));
    let mut reader = BufReader::new(tcp.try_clone().unwrap());
    let mut ask = |bytes: &[u8]| {
        tcp.write_all(bytes).unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.clone();
            }
        }
    };
    assert!(ask(b"EHLO c\r\n").starts_with("250"));
    assert!(ask(b"MAIL FROM:<a\xff@x.test>\r\n").starts_with("553 5.1.7"));
    assert!(ask(b"MAIL FROM:<s@example.org>\r\n").starts_with("250"));
    assert!(ask(b"RCPT TO:<b\xfe@y.test>\r\n").starts_with("553 5.1.3"));
    assert!(ask(b"RCPT TO:<m\xc3\xbcller@dest.test>\r\n").starts_with("553 5.6.7"));
    // `relay.test.` and `relay.test`: one queue, one transaction.
    assert!(ask(b"RCPT TO:<a@relay.test.>\r\n").starts_with("250"));
    assert!(ask(b"RCPT TO:<b@relay.test>\r\n").starts_with("250"));
    assert!(ask(b"DATA\r\n").starts_with("354"));
    assert!(ask(b"Subject: dots\r\n\r\nx\r\n.\r\n").starts_with("250"));
    // With SMTPUTF8, a non-ASCII recipient is taken; the next hop does
    // not offer SMTPUTF8, so it fails with 5.6.7 and bounces.
    assert!(ask("MAIL FROM:<s@example.org> SMTPUTF8\r\n".as_bytes()).starts_with("250"));
    assert!(ask("RCPT TO:<m\u{fc}ller@dest.test>\r\n".as_bytes()).starts_with("250"));
    assert!(ask(b"DATA\r\n").starts_with("354"));
    assert!(ask(b"Subject: utf8\r\n\r\nx\r\n.\r\n").starts_with("250"));
    assert!(ask(b"QUIT\r\n").starts_with("221"));
    assert!(sink.wait_for(2, Duration::from_secs(30)));
    let messages = sink.messages();
    let dots = messages
        .iter()
        .find(|m| String::from_utf8_lossy(&m.body).contains("Subject: dots"))
        .unwrap();
    assert_eq!(dots.rcpt_to, ["a@relay.test", "b@relay.test"]);
    let bounce = messages.iter().find(|m| m.mail_from.is_empty()).unwrap();
    let parsed = mail_parser::MessageParser::default()
        .parse(&bounce.body)
        .unwrap();
    let report = parsed
        .parts
        .iter()
        .map(|p| String::from_utf8_lossy(p.contents()).into_owned())
        .find(|t| t.contains("Final-Recipient"))
        .unwrap();
    assert!(
        report.contains("Final-Recipient: utf-8; m\u{fc}ller@dest.test"),
        "{report}"
    );
    assert!(report.contains("Status: 5.6.7"), "{report}");
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn a_client_may_send_with_bdat_unless_chunking_is_off() {
    for chunking in [true, false] {
        let extra = if chunking {
            ""
        } else {
            "ESMTP_Listener { Chunking = false }"
        };
        let (_dns, sink, setup) = world(extra);
        let daemon = setup.start();
        let mut tcp = connect_from("127.0.0.1", setup.listen).unwrap();
        assert!(greeting(&tcp).starts_with("220"));
        let mut reader = BufReader::new(tcp.try_clone().unwrap());
        let mut reply = || {
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let last = line.as_bytes().get(3) != Some(&b'-');
                lines.push(line);
                if last {
                    return lines;
                }
            }
        };
        tcp.write_all(b"EHLO c\r\n").unwrap();
        let ehlo = reply();
        assert_eq!(
            ehlo.iter().any(|l| l.contains("CHUNKING")),
            chunking,
            "{ehlo:?}"
        );
        let body = "Subject: chunked\r\n\r\n.a line that starts with a dot\r\n";
        tcp.write_all(
            format!(
                "MAIL FROM:<s@example.org>\r\nRCPT TO:<a@dest.test>\r\nBDAT {} LAST\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        let replies: Vec<String> = (0..3).map(|_| reply().concat()).collect();
        assert!(replies[0].starts_with("250") && replies[1].starts_with("250"));
        if chunking {
            assert!(replies[2].starts_with("250 2.0.0"), "{replies:?}");
            assert!(sink.wait_for(1, Duration::from_secs(30)));
            let got = &sink.messages()[0];
            // Not dot-stuffed on the way in, nor unstuffed: the line
            // arrives as sent (and leaves with BDAT too).
            assert!(got.chunked);
            assert!(
                String::from_utf8_lossy(&got.body)
                    .ends_with("\r\n\r\n.a line that starts with a dot\r\n"),
                "{:?}",
                String::from_utf8_lossy(&got.body)
            );
        } else {
            assert!(replies[2].starts_with("502 5.5.1"), "{replies:?}");
        }
        tcp.shutdown(std::net::Shutdown::Both).unwrap();
        assert_eq!(daemon.terminate(), Some(0));
    }
}
