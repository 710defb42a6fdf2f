//! Routing tables: built on the control loop's resolver when a domain has
//! mail and no table, or its table's TTL has passed, with at most
//! [`MAX_LOOKUPS`] builds in flight. Each entry of a table becomes an MX
//! host, shared with every other domain whose table names the same source,
//! address and profile.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use postern_dns::{RouteEntry, RouteError, RouteTable};
use postern_smtp::{EnhancedStatus, Reply};

use super::{Action, Core, MAX_LOOKUPS, Scheduler};
use crate::domain::{Levels, Route, Table};
use crate::ids::DomainId;
use crate::ids::HostId;
use crate::message::Batch;
use crate::mx_host::{HostKey, MxHost, Profile, Source};
use crate::outbound;

/// The reply for a routing failure, from its status.
fn route_reply(e: &RouteError) -> Reply {
    let (code, status) = e.status();
    let mut parts = status.split('.').map(|p| p.parse::<u8>().unwrap_or(0));
    let status = EnhancedStatus::new(
        parts.next().unwrap_or(4),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    Reply::new(code, Some(status), e.to_string())
}

impl Core {
    /// A table build is wanted: it starts when a lookup slot is free.
    pub(super) fn request_table(&mut self, d: DomainId) {
        let Some(dom) = self.domain_mut(d) else {
            return;
        };
        let previous = match std::mem::replace(&mut dom.table, Table::None) {
            Table::Ready(t) => Some(t),
            Table::None | Table::Resolving(_) => None,
        };
        dom.table = Table::Resolving(previous);
        if self.lookups < MAX_LOOKUPS {
            self.lookups += 1;
            self.actions.push(Action::Resolve(d));
        } else {
            self.lookup_queue.push_back(d);
        }
    }

    /// A build finished: the next waiting one starts, and the table (or
    /// the failure) takes effect.
    pub(crate) fn table_ready(&mut self, d: DomainId, result: Result<RouteTable, RouteError>) {
        self.lookups = self.lookups.saturating_sub(1);
        if let Some(next) = self.lookup_queue.pop_front() {
            self.lookups += 1;
            self.actions.push(Action::Resolve(next));
        }
        let Some(dom) = self.domain_mut(d) else {
            return;
        };
        let previous = match std::mem::replace(&mut dom.table, Table::None) {
            Table::Resolving(p) => p,
            Table::Ready(t) => Some(t),
            Table::None => None,
        };
        match result {
            Ok(table) => self.install(d, table),
            Err(e) => {
                if let (Some(mut route), false) = (previous, e.is_policy()) {
                    // Keep routing by the last table; ask again in a while.
                    route.refresh_at = Some(Instant::now() + dom.limits.host_failure_retry);
                    dom.table = Table::Ready(route);
                } else if e.is_permanent() {
                    let reply = route_reply(&e);
                    let batches: Vec<Batch> = dom.active.take_all();
                    for batch in &batches {
                        let failed = self.fail(batch, &batch.recipients, &reply, None);
                        self.settle(batch, failed);
                    }
                } else {
                    self.delay_active(d, &route_reply(&e));
                }
            }
        }
        self.offer(d);
    }

    /// Takes a table: its entries become hosts, its levels the domain's.
    fn install(&mut self, d: DomainId, table: RouteTable) {
        let mut levels = Levels::new();
        let mut problem = None;
        for (level, entry) in table.entries() {
            match self.host_for(d, entry) {
                Ok(h) => levels.push((level, h)),
                Err(why) => problem = Some(why),
            }
        }
        let Some(dom) = self.domain_mut(d) else {
            return;
        };
        dom.table = Table::Ready(Route {
            refresh_at: table.refresh_at,
            mta_sts: table.mta_sts,
        });
        dom.levels = levels;
        if let (true, Some(why)) = (dom.levels.is_empty(), problem) {
            let reply = Reply::with_status(451, (4, 3, 5), format!("cannot deliver: {why}"));
            self.delay_active(d, &reply);
        }
    }

    /// The MX host for a table entry of the domain, made on first use.
    fn host_for(&mut self, d: DomainId, entry: &RouteEntry) -> Result<HostId, String> {
        let dom = self.domains.get(d.0 as usize).ok_or("no such domain")?;
        let binding = &dom.key.binding;
        let eff = self
            .config
            .effective(binding, &dom.key.domain)
            .ok_or_else(|| format!("binding {binding:?} is not configured"))?;
        let settings =
            outbound::client_settings(&self.config, &eff, entry, &self.hostname, &mut self.tls)?;
        let binding = binding.clone();
        let key = HostKey {
            source: Source::of(&binding, &settings),
            addr: entry.addr,
            profile: Profile::of(&settings),
        };
        let limit = entry
            .host_limit
            .map(|l| usize::try_from(l).unwrap_or(usize::MAX));
        if let Some(h) = self.host_ids.get(&key).copied() {
            if let (Some(host), Some(l)) = (self.host_mut(h), limit) {
                // Bindings sharing a source keep the stricter limit.
                host.limit = Some(host.limit.map_or(l, |x| x.min(l)));
                host.adaptive.set_max(host.limit);
            }
            return Ok(h);
        }
        let limits = &self
            .domains
            .get(d.0 as usize)
            .ok_or("no such domain")?
            .limits;
        let mut host = MxHost::new(
            key.clone(),
            Arc::new(settings),
            limit,
            limits.adaptive,
            &binding,
        );
        host.max_deliveries = limits.max_deliveries;
        host.per_write = limits.per_write;
        host.idle_timeout = limits.idle;
        host.failure_retry = limits.host_failure_retry;
        let h = HostId(u32::try_from(self.hosts.len()).unwrap_or(u32::MAX));
        self.peers.entry(key.peer()).or_default().push(h);
        self.host_ids.insert(key, h);
        self.hosts.push(host);
        Ok(h)
    }
}

/// A table build finished.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TableBuilt(DomainId, Result<RouteTable, RouteError>);

impl Scheduler {
    /// Runs a table build on the control loop's resolver, as a task of
    /// its own: actix polls every future an actor holds on each of its
    /// wake-ups, so lookups stay off the scheduler.
    pub(super) fn resolve(&mut self, d: DomainId, ctx: &mut Context<Self>) {
        let Some(dom) = self.core.domain(d) else {
            return;
        };
        let key = dom.key.clone();
        let dns = self.dns.clone();
        let config = self.core.config.clone();
        let scheduler = ctx.address();
        actix::spawn(async move {
            let result = dns.route_table(&config, &key.binding, &key.domain).await;
            scheduler.do_send(TableBuilt(d, result));
        });
    }
}

impl Handler<TableBuilt> for Scheduler {
    type Result = ();

    fn handle(&mut self, TableBuilt(d, result): TableBuilt, ctx: &mut Context<Self>) {
        self.core.table_ready(d, result);
        self.sync(ctx);
    }
}
