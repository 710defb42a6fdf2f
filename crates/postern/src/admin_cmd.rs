//! `postern summary`, `domain`, `queue`, `hosts`, `cluster`, `flush`, `suspend`, `resume`:
//! the console, talking to a running daemon's admin API on
//! `Metrics_Listen`.
// serde_json's `value["key"]` never panics: a missing key reads as Null.
#![allow(clippy::indexing_slicing)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use postern_conf::{Directive, Value};
use serde_json::Value as Json;

use crate::config_cmd::{finish, load};
use crate::table;

/// What to ask the daemon.
#[derive(Debug, Clone)]
pub(crate) enum Ask {
    Summary,
    Domain {
        domain: String,
        binding: String,
    },
    Queues {
        limit: usize,
    },
    Hosts,
    Cluster,
    Act {
        action: &'static str,
        domain: String,
        binding: String,
    },
}

const UNREACHABLE: u8 = 1;

/// `GET` or `POST` `path` (with the bearer token, if any); the status
/// and the body.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> io::Result<(u16, String)> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    tcp.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs one console command against the daemon of `file`.
pub(crate) fn run(file: &Path, ask: &Ask, as_json: bool) -> ExitCode {
    let config = match load(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(Value::SocketAddr(addr)) = config
        .global
        .value_or_default(Directive::MetricsListen)
        .cloned()
    else {
        eprintln!("postern: {}: Metrics_Listen is not set", file.display());
        return ExitCode::from(UNREACHABLE);
    };
    let (method, path) = match ask {
        Ask::Summary => ("GET", "/api/summary".to_owned()),
        Ask::Domain { domain, binding } => (
            "GET",
            format!(
                "/api/domain?domain={}&binding={}",
                encode(domain),
                encode(binding)
            ),
        ),
        Ask::Queues { limit } => ("GET", format!("/api/queues?limit={limit}")),
        Ask::Hosts => ("GET", "/api/hosts".to_owned()),
        Ask::Cluster => ("GET", "/api/cluster".to_owned()),
        Ask::Act {
            action,
            domain,
            binding,
        } => (
            "POST",
            format!(
                "/api/{action}?domain={}&binding={}",
                encode(domain),
                encode(binding)
            ),
        ),
    };
    let token = match crate::daemon::admin_token(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("postern: {e}");
            return ExitCode::from(UNREACHABLE);
        }
    };
    let (status, body) = match request(addr, method, &path, token.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "postern: cannot reach the admin API at {addr}: {e} (is `postern run` running with this configuration?)"
            );
            return ExitCode::from(UNREACHABLE);
        }
    };
    let json: Json = serde_json::from_str(&body).unwrap_or(Json::Null);
    if !(200..300).contains(&status) {
        let why = json["error"].as_str().unwrap_or(&body);
        eprintln!("postern: {why}");
        return ExitCode::from(UNREACHABLE);
    }
    let mut out = io::stdout().lock();
    finish(if as_json {
        serde_json::to_writer_pretty(&mut out, &json)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        print(&mut out, ask, &json)
    })
}

fn cell(v: &Json) -> String {
    match v {
        Json::Null => "-".into(),
        Json::String(s) => s.clone(),
        Json::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Json::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() != 0.0)
            .map_or_else(|| n.to_string(), |f| format!("{f:.2}")),
        other => other.to_string(),
    }
}

/// One row per item of `items`, one cell per key; `last_change` reads as
/// "class: reply".
fn rows(items: &Json, keys: &[&str]) -> Vec<Vec<String>> {
    let show = |item: &Json, key: &str| match (key, &item[key]) {
        ("last_change", Json::Object(c)) => format!(
            "{}: {}",
            c.get("class").map_or_else(String::new, cell),
            c.get("reply").map_or_else(String::new, cell)
        ),
        (_, v) => cell(v),
    };
    items
        .as_array()
        .map(|list| {
            list.iter()
                .map(|item| keys.iter().map(|k| show(item, k)).collect())
                .collect()
        })
        .unwrap_or_default()
}

fn print(out: &mut impl Write, ask: &Ask, j: &Json) -> io::Result<()> {
    match ask {
        Ask::Summary => {
            let t = &j["totals"];
            let rows: Vec<Vec<String>> = [
                ("uptime", cell(&j["uptime_seconds"]) + " s"),
                ("connections", cell(&j["connections"])),
                (
                    "connections per event loop",
                    cell(&j["connections_per_event_loop"]),
                ),
                ("queues", cell(&j["queues"])),
                ("active", cell(&j["active"])),
                ("delayed", cell(&j["delayed"])),
                ("spooled", cell(&j["spooled"])),
                ("received", cell(&t["received"])),
                ("delivered", cell(&t["delivered"])),
                ("transient failures", cell(&t["transient_failures"])),
                ("permanent failures", cell(&t["permanent_failures"])),
                ("expired", cell(&t["expired"])),
                ("bounces", cell(&t["bounces"])),
                (
                    "received per second",
                    cell(&j["rates_per_second"]["received"]),
                ),
                (
                    "delivered per second",
                    cell(&j["rates_per_second"]["delivered"]),
                ),
                ("spool healthy", cell(&j["spool"]["healthy"])),
                ("spool messages", cell(&j["spool"]["messages"])),
                ("spool disk bytes", cell(&j["spool"]["disk_bytes"])),
                (
                    "outcomes waiting for space",
                    cell(&j["spool"]["outcomes_waiting_for_space"]),
                ),
            ]
            .into_iter()
            .map(|(k, v)| vec![k.to_owned(), v])
            .collect();
            table::write(out, &["WHAT", "VALUE"], &rows)
        }
        Ask::Domain { .. } => {
            writeln!(
                out,
                "{} (binding {})",
                cell(&j["domain"]),
                cell(&j["binding"])
            )?;
            writeln!(
                out,
                "active {}  delayed {}  spooled {}  connections {}/{}  suspended {}  failures in a row {}  next retry in {} s",
                cell(&j["active"]),
                cell(&j["delayed"]),
                cell(&j["spooled"]),
                cell(&j["connections"]),
                cell(&j["limit"]),
                cell(&j["suspended"]),
                cell(&j["consecutive_failures"]),
                cell(&j["next_retry_seconds"]),
            )?;
            writeln!(out)?;
            let rows = rows(
                &j["hosts"],
                &[
                    "level",
                    "name",
                    "address",
                    "port",
                    "connections",
                    "limit",
                    "limit_now",
                    "rate_now",
                    "reachable",
                    "consecutive_failures",
                    "seconds_since_failure",
                    "last_change",
                    "next_probe_seconds",
                ],
            );
            table::write(
                out,
                &[
                    "LEVEL",
                    "HOST",
                    "ADDRESS",
                    "PORT",
                    "CONNECTIONS",
                    "LIMIT",
                    "LIMIT NOW",
                    "RATE NOW",
                    "REACHABLE",
                    "FAILURES",
                    "SINCE FAILURE",
                    "LAST CHANGE",
                    "PROBE IN",
                ],
                &rows,
            )
        }
        Ask::Queues { .. } => {
            let rows = rows(
                &j["queues"],
                &[
                    "binding",
                    "domain",
                    "active",
                    "delayed",
                    "spooled",
                    "connections",
                    "suspended",
                ],
            );
            table::write(
                out,
                &[
                    "BINDING",
                    "DOMAIN",
                    "ACTIVE",
                    "DELAYED",
                    "SPOOLED",
                    "CONNECTIONS",
                    "SUSPENDED",
                ],
                &rows,
            )
        }
        Ask::Hosts => {
            let rows = rows(
                &j["hosts"],
                &[
                    "name",
                    "address",
                    "port",
                    "source",
                    "connections",
                    "limit",
                    "limit_now",
                    "rate_now",
                    "reachable",
                    "last_change",
                ],
            );
            table::write(
                out,
                &[
                    "HOST",
                    "ADDRESS",
                    "PORT",
                    "SOURCE",
                    "CONNECTIONS",
                    "LIMIT",
                    "LIMIT NOW",
                    "RATE NOW",
                    "REACHABLE",
                    "LAST CHANGE",
                ],
                &rows,
            )
        }
        Ask::Cluster => print_cluster(out, j),
        Ask::Act {
            action,
            domain,
            binding,
        } => writeln!(out, "{action}: {domain} (binding {binding}): done"),
    }
}

/// `postern cluster`: Redis's state, the nodes, the leases per host.
fn print_cluster(out: &mut impl Write, j: &Json) -> io::Result<()> {
    let redis = if j["redis_up"].as_bool() == Some(true) {
        "up: limits shared"
    } else {
        "DOWN: this node keeps to its local shares"
    };
    writeln!(
        out,
        "node {}; Redis {redis}",
        j["node"].as_str().unwrap_or("?")
    )?;
    writeln!(out)?;
    let nodes = rows(&j["nodes"], &["name", "leases", "expires_in_ms"]);
    table::write(out, &["NODE", "LEASES", "EXPIRES IN (MS)"], &nodes)?;
    let empty = Vec::new();
    let mut hosts = Vec::new();
    for h in j["hosts"].as_array().unwrap_or(&empty) {
        if let Some(leases) = h["leases"].as_object() {
            for (node, n) in leases {
                hosts.push(vec![cell(&h["host"]), node.clone(), cell(n)]);
            }
        }
    }
    writeln!(out)?;
    table::write(out, &["HOST", "NODE", "LEASES"], &hosts)
}
