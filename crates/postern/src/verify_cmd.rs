//! `postern verify-gateway URL`: connect to a route's first host with the
//! route's settings, run greeting, EHLO, STARTTLS and AUTH, then QUIT, and
//! print every step with its reply.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr;

use postern_conf::RouteItem;
use postern_dns::Dns;
use postern_engine::outbound::{TlsCache, client_settings};
use postern_smtp::client::{Session, Step};

use crate::config_cmd::{finish, load, queue};
use crate::{routes_cmd, table};

/// Exit status when a step failed.
const FAILED: u8 = 1;
/// Exit status for a URL that is not a route.
const BAD_URL: u8 = 2;

/// `postern verify-gateway URL [--domain D] [--binding B] [--config FILE]`.
pub(crate) fn verify(file: &Path, binding: &str, url: &str, domain: Option<&str>) -> ExitCode {
    let config = match load(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let item = match RouteItem::from_str(url) {
        Ok(RouteItem::Host(host)) => RouteItem::Host(host),
        Ok(RouteItem::Mx) => {
            eprintln!("postern: verify-gateway needs a host, not __mx__");
            return ExitCode::from(BAD_URL);
        }
        Err(e) => {
            eprintln!("postern: {url}: {e}");
            return ExitCode::from(BAD_URL);
        }
    };
    let host = match &item {
        RouteItem::Host(h) => h.target.host.to_string(),
        RouteItem::Mx => String::new(),
    };
    let domain = domain.unwrap_or(&host);
    let eff = match queue(file, &config, binding, domain) {
        Ok(eff) => eff,
        Err(code) => return code,
    };
    let Some(runtime) = routes_cmd::runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let table = async {
            let dns = Dns::from_config(&config)?;
            dns.item_table(&config, binding, domain, &item).await
        };
        let table = match table.await {
            Ok(t) => t,
            Err(e) => {
                eprintln!("postern: no route: {e}");
                return ExitCode::from(FAILED);
            }
        };
        let Some((_, entry)) = table.entries().next() else {
            eprintln!("postern: no route: {url} has no address");
            return ExitCode::from(FAILED);
        };
        let mut tls = TlsCache::default();
        let settings = match client_settings(&config, &eff, entry, &config.hostname(), &mut tls) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("postern: {e}");
                return ExitCode::from(FAILED);
            }
        };
        let (session, mut steps) = Session::connect_traced(entry.addr, &settings).await;
        let result = match session {
            Ok(session) => {
                let quit = session.quit().await;
                let ok = quit.is_ok();
                steps.push(Step {
                    what: "QUIT".into(),
                    outcome: quit
                        .as_ref()
                        .map_or_else(ToString::to_string, ToString::to_string),
                    ok,
                });
                quit.map(|_| ())
            }
            Err(e) => Err(e),
        };
        let mut out = io::stdout().lock();
        let header = format!(
            "verifying {url}: {} at {} ({:?})\n",
            entry.name, entry.addr, settings.protocol
        );
        let printed = out
            .write_all(header.as_bytes())
            .and_then(|()| print_steps(&mut out, &steps));
        let verdict = match &result {
            Ok(()) => writeln!(out, "all steps passed"),
            Err(e) => writeln!(out, "failed: {e}"),
        };
        let code = finish(printed.and(verdict));
        if result.is_err() {
            ExitCode::from(FAILED)
        } else {
            code
        }
    })
}

fn print_steps(out: &mut impl Write, steps: &[Step]) -> io::Result<()> {
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            let result = if s.ok { "ok" } else { "FAILED" };
            vec![result.to_owned(), s.what.clone(), s.outcome.clone()]
        })
        .collect();
    table::write(out, &["RESULT", "STEP", "REPLY"], &rows)
}
