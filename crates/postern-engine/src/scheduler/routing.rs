//! Routing tables: built on the control loop's resolver when a queue has
//! mail and no table, or its table's TTL has passed.

use std::time::Instant;

use actix::prelude::*;
use postern_dns::{RouteError, RouteTable};
use postern_smtp::{EnhancedStatus, Reply};

use super::Scheduler;
use crate::choice::HostState;
use crate::message::Batch;
use crate::queue::{QueueKey, Table};

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

impl Scheduler {
    pub(super) fn resolve(&mut self, key: &QueueKey, ctx: &mut Context<Self>) {
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        let previous = match std::mem::replace(&mut queue.table, Table::None) {
            Table::Ready(t) => Some(t),
            Table::None | Table::Resolving(_) => None,
        };
        queue.table = Table::Resolving(previous);
        let dns = self.dns.clone();
        let config = self.config.clone();
        let k = key.clone();
        let lookup = async move { dns.route_table(&config, &k.binding, &k.domain).await };
        let key = key.clone();
        ctx.spawn(
            lookup
                .into_actor(self)
                .map(move |result, act, ctx| act.table_ready(&key, result, ctx)),
        );
    }

    pub(super) fn table_ready(
        &mut self,
        key: &QueueKey,
        result: Result<RouteTable, RouteError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        let previous = match std::mem::replace(&mut queue.table, Table::None) {
            Table::Resolving(p) => p,
            Table::Ready(t) => Some(t),
            Table::None => None,
        };
        match result {
            Ok(table) => {
                for (_, e) in table.entries() {
                    let host = self
                        .hosts
                        .entry(e.addr)
                        .or_insert_with(|| HostState::new(e.name.clone(), e.host_limit));
                    host.limit = e.host_limit;
                }
                queue.table = Table::Ready(table);
            }
            Err(e) => {
                if let Some(mut table) = previous {
                    // Keep routing by the last table; ask again in a while.
                    table.refresh_at = Some(Instant::now() + queue.limits.host_failure_retry);
                    queue.table = Table::Ready(table);
                } else if e.is_permanent() {
                    let reply = route_reply(&e);
                    let batches: Vec<Batch> = queue.active.drain(..).collect();
                    for batch in &batches {
                        let failed = self.fail(key, batch, &batch.recipients, &reply, None);
                        self.settle(key, batch, failed);
                    }
                } else {
                    self.delay_active(key, &route_reply(&e), ctx);
                }
            }
        }
        if let Some(queue) = self.queues.get_mut(key) {
            queue.refresh_levels();
        }
        self.pump(key, ctx);
    }
}
