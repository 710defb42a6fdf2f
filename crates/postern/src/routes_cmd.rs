//! `postern routes DOMAIN`: the routing table the engine would use for one
//! queue, resolved now with the configuration's resolver.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use postern_conf::{DeliveryMethod, Directive, Effective, Scheme};
use postern_dns::{Dns, RouteEntry, RouteTable};
use serde_json::{Value as Json, json};

use crate::config_cmd::{finish, load, queue};
use crate::table;

/// Exit status when the queue has no route now.
const NO_ROUTE: u8 = 1;

/// `postern routes DOMAIN --binding B --config FILE [--json]`.
pub(crate) fn routes(file: &Path, binding: &str, domain: &str, as_json: bool) -> ExitCode {
    let config = match load(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let eff = match queue(file, &config, binding, domain) {
        Ok(eff) => eff,
        Err(code) => return code,
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        let dns = Dns::from_config(&config)?;
        dns.route_table(&config, binding, domain).await
    });
    let table = match result {
        Ok(t) => t,
        Err(e) => {
            let (code, status) = e.status();
            let outcome = if e.is_permanent() {
                "permanent: its mail would bounce"
            } else {
                "transient: its mail would wait and be retried"
            };
            eprintln!("postern: no route: {e} ({code} {status}, {outcome})");
            return ExitCode::from(NO_ROUTE);
        }
    };
    let view = View::of(&eff, &table);
    let mut out = io::stdout().lock();
    finish(if as_json {
        serde_json::to_writer_pretty(&mut out, &view.json())
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        view.print(&mut out)
    })
}

/// A one-thread runtime for a command's lookups and sessions.
pub(crate) fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| eprintln!("postern: cannot start a runtime: {e}"))
        .ok()
}

/// A table with the queue's settings needed to show it.
struct View<'a> {
    table: &'a RouteTable,
    method: DeliveryMethod,
    queue_limit: Option<u64>,
}

impl<'a> View<'a> {
    fn of(eff: &Effective<'_>, table: &'a RouteTable) -> Self {
        let method = eff.delivery_method();
        Self {
            table,
            method,
            queue_limit: eff.count(Directive::MaxOutboundConnections),
        }
    }

    fn protocol(&self, e: &RouteEntry) -> &'static str {
        match (e.scheme, self.method) {
            (Scheme::Smtps, _) => "SMTPS",
            (Scheme::Lmtp, _) => "LMTP",
            (Scheme::Smtp, DeliveryMethod::Smtp) => "SMTP",
            (Scheme::Smtp, _) => "ESMTP",
        }
    }

    fn tls(e: &RouteEntry) -> String {
        match e.scheme {
            Scheme::Smtps => "implicit".into(),
            Scheme::Smtp | Scheme::Lmtp => e.tls.to_string(),
        }
    }

    fn refresh(&self) -> Option<u64> {
        self.table.ttl().map(|d| d.as_secs())
    }

    fn print(&self, out: &mut impl Write) -> io::Result<()> {
        let t = self.table;
        writeln!(out, "routes for {} (binding {})", t.domain, t.binding)?;
        writeln!(out, "decided by: {}", t.decision)?;
        match self.queue_limit {
            Some(n) => writeln!(
                out,
                "queue limit: {n} connections (Max_Outbound_Connections)"
            )?,
            None => writeln!(out, "queue limit: none")?,
        }
        match self.refresh() {
            Some(s) => writeln!(out, "refresh: in {s} s")?,
            None => writeln!(out, "refresh: never (no DNS names)")?,
        }
        if let Some(sts) = &t.mta_sts {
            writeln!(
                out,
                "MTA-STS: {} (policy {}, max_age {} s, mx {})",
                sts.policy.mode,
                sts.id,
                sts.policy.max_age,
                sts.policy.mx.join(" ")
            )?;
        }
        writeln!(out)?;
        let rows: Vec<Vec<String>> = t
            .entries()
            .map(|(level, e)| {
                vec![
                    level.to_string(),
                    e.name.clone(),
                    e.addr.to_string(),
                    self.protocol(e).to_owned(),
                    Self::tls(e),
                    e.tls_verify.to_string(),
                    e.auth
                        .as_ref()
                        .map_or_else(|| "-".into(), ToString::to_string),
                    e.host_limit.map_or_else(|| "-".into(), |n| n.to_string()),
                    e.via.clone(),
                ]
            })
            .collect();
        table::write(
            out,
            &[
                "LEVEL",
                "HOST",
                "ADDRESS",
                "PROTOCOL",
                "TLS",
                "VERIFY",
                "AUTH",
                "HOST LIMIT",
                "VIA",
            ],
            &rows,
        )?;
        if !t.left_out.is_empty() {
            writeln!(out)?;
            writeln!(out, "left out:")?;
            for l in &t.left_out {
                writeln!(out, "  {}: {}", l.what, l.why)?;
            }
        }
        Ok(())
    }

    fn json(&self) -> Json {
        let t = self.table;
        let levels: Vec<Json> = t
            .levels
            .iter()
            .map(|l| {
                let hosts: Vec<Json> = l
                    .hosts
                    .iter()
                    .map(|e| {
                        json!({
                            "name": e.name,
                            "address": e.addr.ip().to_string(),
                            "port": e.addr.port(),
                            "protocol": self.protocol(e),
                            "tls": Self::tls(e),
                            "tls_verify": e.tls_verify.to_string(),
                            "auth": e.auth.as_ref().map(ToString::to_string),
                            "host_limit": e.host_limit,
                            "via": e.via,
                        })
                    })
                    .collect();
                json!({ "level": l.level, "hosts": hosts })
            })
            .collect();
        let left_out: Vec<Json> = t
            .left_out
            .iter()
            .map(|l| json!({ "what": l.what, "why": l.why }))
            .collect();
        json!({
            "domain": t.domain,
            "binding": t.binding,
            "decided_by": t.decision.to_string(),
            "queue_limit": self.queue_limit,
            "refresh_in_seconds": self.refresh(),
            "mta_sts": t.mta_sts.as_ref().map(|sts| json!({
                "mode": sts.policy.mode.as_str(),
                "id": sts.id,
                "max_age": sts.policy.max_age,
                "mx": sts.policy.mx,
                "unnamed": sts.unnamed,
            })),
            "levels": levels,
            "left_out": left_out,
        })
    }
}
