//! How mail moves: a message arrives, the queue's routing table is built,
//! connections are opened on the best free hosts and given work, outcomes
//! come back, and failures move hosts down and mail to the delayed queue.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix::prelude::*;
use postern_dns::{RouteError, RouteTable};
use postern_smtp::client::Outcome;
use postern_smtp::{EnhancedStatus, Reply};
use tokio::sync::oneshot;

use super::{ConnInfo, Scheduler, Submit};
use crate::choice::{HostState, better_is_free, choose};
use crate::connection::{ConnId, Connected, Connection, Done, End, Ended, WantWork};
use crate::message::{Batch, HostInfo, Report};
use crate::outbound;
use crate::queue::{Limits, Queue, QueueKey, Table, Waiter};

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
    fn queue(&mut self, key: &QueueKey) -> &mut Queue {
        let config = &self.config;
        self.queues
            .entry(key.clone())
            .or_insert_with(|| Queue::new(Limits::of(config, key)))
    }

    fn report(
        &self,
        key: &QueueKey,
        batch: &Batch,
        recipient: &str,
        outcome: Outcome,
        host: Option<HostInfo>,
    ) {
        let _ = self.reports.send(Report {
            id: batch.message.id,
            binding: key.binding.clone(),
            domain: key.domain.clone(),
            recipient: recipient.to_owned(),
            outcome,
            host,
            attempt: batch.attempts + 1,
        });
    }

    /// Does what can be done for the queue now: build its routing table,
    /// hand ready mail to idle connections, open connections.
    pub(super) fn pump(&mut self, key: &QueueKey, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let Some(queue) = self.queues.get(key) else {
            return;
        };
        if queue.active.is_empty() {
            return;
        }
        let stale = match &queue.table {
            Table::None => true,
            Table::Resolving(_) => false,
            Table::Ready(t) => t.refresh_at.is_some_and(|at| now >= at),
        };
        if stale {
            self.resolve(key, ctx);
        }
        self.feed_waiters(key, now);
        self.open_connections(key, ctx, now);
    }

    /// True when a connection at `level` must carry nothing more: a better
    /// host is reachable and has a free slot.
    fn outranked(&self, key: &QueueKey, level: u32, now: Instant) -> bool {
        let Some(queue) = self.queues.get(key) else {
            return false;
        };
        let levels = queue.table.levels();
        better_is_free(
            levels.iter().map(|(l, a)| (*l, &a[..])),
            &self.hosts,
            level,
            now,
        )
    }

    fn feed_waiters(&mut self, key: &QueueKey, now: Instant) {
        loop {
            let Some(queue) = self.queues.get_mut(key) else {
                return;
            };
            if queue.active.is_empty() {
                return;
            }
            let Some(waiter) = queue.waiters.pop_front() else {
                return;
            };
            let Some(level) = self.conns.get(&waiter.conn).map(|c| c.level) else {
                continue;
            };
            if self.outranked(key, level, now) {
                let _ = waiter.reply.send(None);
                continue;
            }
            self.give(key, waiter);
        }
    }

    /// Hands the next ready batch to a waiting connection.
    fn give(&mut self, key: &QueueKey, waiter: Waiter) {
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        let Some(batch) = queue.active.pop_front() else {
            queue.waiters.push_front(waiter);
            return;
        };
        match waiter.reply.send(Some(batch)) {
            Ok(()) => {
                queue.busy += 1;
                if let Some(c) = self.conns.get_mut(&waiter.conn) {
                    c.busy = true;
                }
            }
            Err(Some(batch)) => queue.active.push_front(batch),
            Err(None) => {}
        }
    }

    fn open_connections(&mut self, key: &QueueKey, ctx: &mut Context<Self>, now: Instant) {
        loop {
            let Some(queue) = self.queues.get(key) else {
                return;
            };
            if queue.active.is_empty() || queue.connections >= queue.wanted_connections() {
                return;
            }
            if self.total >= self.server_limit {
                self.starved.insert(key.clone());
                self.reclaim_idle(key, None);
                return;
            }
            let levels = queue.table.levels();
            if levels.is_empty() {
                return;
            }
            match choose(levels.iter().map(|(l, a)| (*l, &a[..])), &self.hosts, now) {
                Some((level, addr)) => {
                    if !self.open(key, level, addr, ctx) {
                        return;
                    }
                }
                None => {
                    self.no_usable_host(key, &levels, ctx, now);
                    return;
                }
            }
        }
    }

    /// Every host is unreachable or full. Full: wait for a slot. All
    /// unreachable and nothing open: the ready mail waits in the delayed
    /// queue until the first host may be tried again.
    fn no_usable_host(
        &mut self,
        key: &QueueKey,
        levels: &[(u32, Vec<SocketAddr>)],
        ctx: &mut Context<Self>,
        now: Instant,
    ) {
        let addrs = levels.iter().flat_map(|(_, a)| a.iter());
        let back_at = addrs
            .clone()
            .map(|a| self.hosts.get(a).and_then(|h| h.down_until))
            .collect::<Option<Vec<Instant>>>()
            .and_then(|times| times.into_iter().filter(|t| *t > now).min());
        let open = self.queues.get(key).map_or(0, |q| q.connections);
        match back_at {
            Some(at) if open == 0 => {
                let reply = self
                    .queues
                    .get(key)
                    .and_then(|q| q.last_failure.clone())
                    .unwrap_or_else(|| Reply::with_status(421, (4, 4, 0), "no reachable host"));
                self.delay_active(key, Some(at), &reply, ctx);
            }
            _ => {
                self.starved.insert(key.clone());
                let now = Instant::now();
                let full = levels
                    .iter()
                    .flat_map(|(_, a)| a.iter())
                    .find(|a| self.hosts.get(*a).is_some_and(|h| h.reachable(now)))
                    .copied();
                if let Some(addr) = full {
                    self.reclaim_idle(key, Some(addr));
                }
            }
        }
    }

    /// Closes one idle connection of another queue (to `host`, if given)
    /// so that a starved queue gets its slot: an idle connection must not
    /// hold a slot that ready mail needs.
    fn reclaim_idle(&mut self, starving: &QueueKey, host: Option<SocketAddr>) {
        let conns = &self.conns;
        for (key, queue) in &mut self.queues {
            if key == starving {
                continue;
            }
            let found = queue.waiters.iter().position(|w| {
                conns
                    .get(&w.conn)
                    .is_some_and(|c| host.is_none_or(|h| c.host == h))
            });
            if let Some(waiter) = found.and_then(|i| queue.waiters.remove(i)) {
                let _ = waiter.reply.send(None);
                return;
            }
        }
    }

    /// Starts a connection to `addr`; false when its settings cannot be
    /// built (the queue's mail is then delayed).
    fn open(
        &mut self,
        key: &QueueKey,
        level: u32,
        addr: SocketAddr,
        ctx: &mut Context<Self>,
    ) -> bool {
        let Some(queue) = self.queues.get(key) else {
            return false;
        };
        let Some(entry) = queue.table.current().and_then(|t| {
            t.entries()
                .find(|(_, e)| e.addr == addr)
                .map(|(_, e)| e.clone())
        }) else {
            return false;
        };
        let max_deliveries = queue.limits.max_deliveries;
        let settings = match self.config.effective(&key.binding, &key.domain) {
            Some(eff) => {
                outbound::client_settings(&self.config, &eff, &entry, &self.hostname, &mut self.tls)
            }
            None => Err(format!("binding {:?} is not configured", key.binding)),
        };
        let settings = match settings {
            Ok(s) => s,
            Err(why) => {
                let reply = Reply::with_status(451, (4, 3, 5), format!("cannot deliver: {why}"));
                self.delay_active(key, None, &reply, ctx);
                return false;
            }
        };
        let id = self.next_conn;
        self.next_conn += 1;
        let event_loop = (0..self.loops.len())
            .min_by_key(|i| self.loop_open.get(*i).copied().unwrap_or(usize::MAX))
            .unwrap_or(0);
        let Some(arbiter) = self.loops.get(event_loop) else {
            return false;
        };
        if let Some(h) = self.hosts.get_mut(&addr) {
            h.connections += 1;
        }
        if let Some(q) = self.queues.get_mut(key) {
            q.connections += 1;
        }
        self.total += 1;
        if let Some(n) = self.loop_open.get_mut(event_loop) {
            *n += 1;
        }
        if let Some(n) = self.loop_opened.get_mut(event_loop) {
            *n += 1;
        }
        self.conns.insert(
            id,
            ConnInfo {
                queue: key.clone(),
                host: addr,
                name: entry.name.clone(),
                level,
                event_loop,
                busy: false,
            },
        );
        let scheduler = ctx.address();
        Connection::start_in_arbiter(arbiter, move |_| Connection {
            id,
            addr,
            settings,
            scheduler,
            max_deliveries,
        });
        true
    }

    fn resolve(&mut self, key: &QueueKey, ctx: &mut Context<Self>) {
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

    fn table_ready(
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
                        for r in &batch.recipients {
                            self.report(key, batch, r, Outcome::Permanent(reply.clone()), None);
                        }
                    }
                } else {
                    self.delay_active(key, None, &route_reply(&e), ctx);
                }
            }
        }
        self.pump(key, ctx);
    }

    /// Moves the ready mail to the delayed queue, reporting `reply` as a
    /// transient outcome: until `at`, or each batch by its backoff.
    fn delay_active(
        &mut self,
        key: &QueueKey,
        at: Option<Instant>,
        reply: &Reply,
        ctx: &mut Context<Self>,
    ) {
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        let batches: Vec<Batch> = queue.active.drain(..).collect();
        for batch in batches {
            for r in &batch.recipients {
                self.report(key, &batch, r, Outcome::Transient(reply.clone()), None);
            }
            self.delay(key, batch, at, ctx);
        }
    }

    /// Puts a batch whose attempt failed in the delayed queue.
    fn delay(
        &mut self,
        key: &QueueKey,
        mut batch: Batch,
        at: Option<Instant>,
        ctx: &mut Context<Self>,
    ) {
        batch.attempts += 1;
        self.sequence += 1;
        let sequence = self.sequence;
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        let at = at.unwrap_or_else(|| Instant::now() + queue.limits.backoff(batch.attempts));
        queue.delayed.insert((at, sequence), batch);
        self.schedule_wake(key, ctx);
    }

    /// Keeps one timer per queue, set for its earliest delayed batch.
    fn schedule_wake(&mut self, key: &QueueKey, ctx: &mut Context<Self>) {
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        let Some(&(first, _)) = queue.delayed.keys().next() else {
            return;
        };
        if let Some((at, handle)) = queue.wake.take() {
            if at <= first {
                queue.wake = Some((at, handle));
                return;
            }
            ctx.cancel_future(handle);
        }
        let k = key.clone();
        let wait = first.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(wait, move |act, ctx| act.wake(&k, ctx));
        if let Some(queue) = self.queues.get_mut(key) {
            queue.wake = Some((first, handle));
        }
    }

    fn wake(&mut self, key: &QueueKey, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        queue.wake = None;
        let later = queue
            .delayed
            .split_off(&(now + Duration::from_millis(1), 0));
        let due = std::mem::replace(&mut queue.delayed, later);
        queue.active.extend(due.into_values());
        self.schedule_wake(key, ctx);
        self.pump(key, ctx);
    }

    fn pump_waiting(&mut self, ctx: &mut Context<Self>) {
        let keys: Vec<QueueKey> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.active.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.pump(&key, ctx);
        }
    }

    /// A connection to `addr` failed: the host is skipped for
    /// `Host_Failure_Retry`, and after `MX_Failures_To_Delay` failures in a
    /// row the queue's ready mail waits.
    fn host_failed(
        &mut self,
        key: &QueueKey,
        addr: SocketAddr,
        reply: Reply,
        ctx: &mut Context<Self>,
    ) {
        let now = Instant::now();
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        let retry = queue.limits.host_failure_retry;
        let threshold = queue.limits.failures_to_delay;
        queue.consecutive_failures += 1;
        let give_up = queue.consecutive_failures >= queue.limits.failures_to_delay;
        queue.last_failure = Some(reply.clone());
        if let Some(h) = self.hosts.get_mut(&addr) {
            h.down_until = Some(now + retry);
            h.consecutive_failures += 1;
            h.last_failure = Some(now);
        }
        ctx.run_later(retry, |act, ctx| act.pump_waiting(ctx));
        if give_up {
            if let Some(queue) = self.queues.get_mut(key) {
                queue.consecutive_failures = 0;
            }
            let why = Reply::with_status(
                421,
                (4, 4, 0),
                format!("{threshold} connection failures in a row; last: {reply}"),
            );
            self.delay_active(key, Some(now + retry), &why, ctx);
        }
    }

    fn release(&mut self, id: ConnId) -> Option<ConnInfo> {
        let info = self.conns.remove(&id)?;
        if let Some(h) = self.hosts.get_mut(&info.host) {
            h.connections = h.connections.saturating_sub(1);
        }
        if let Some(q) = self.queues.get_mut(&info.queue) {
            q.connections = q.connections.saturating_sub(1);
            if info.busy {
                q.busy = q.busy.saturating_sub(1);
            }
            q.waiters.retain(|w| w.conn != id);
        }
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.loop_open.get_mut(info.event_loop) {
            *n = n.saturating_sub(1);
        }
        Some(info)
    }

    fn expire_waiter(&mut self, key: &QueueKey, id: ConnId) {
        if let Some(queue) = self.queues.get_mut(key)
            && let Some(i) = queue.waiters.iter().position(|w| w.conn == id)
            && let Some(w) = queue.waiters.remove(i)
        {
            let _ = w.reply.send(None);
        }
    }
}

impl Handler<Submit> for Scheduler {
    type Result = ();

    fn handle(&mut self, Submit(message): Submit, ctx: &mut Context<Self>) {
        let key = QueueKey {
            binding: message.binding.clone(),
            domain: message.domain.clone(),
        };
        let queue = self.queue(&key);
        let batches = Batch::split(message, queue.limits.batch_size);
        queue.active.extend(batches);
        self.pump(&key, ctx);
    }
}

impl Handler<Connected> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: Connected, _: &mut Context<Self>) {
        let Some(info) = self.conns.get(&msg.id) else {
            return;
        };
        if let Some(h) = self.hosts.get_mut(&info.host) {
            h.consecutive_failures = 0;
        }
        if let Some(q) = self.queues.get_mut(&info.queue) {
            q.consecutive_failures = 0;
        }
    }
}

impl Handler<WantWork> for Scheduler {
    type Result = ResponseFuture<Option<Batch>>;

    fn handle(&mut self, msg: WantWork, ctx: &mut Context<Self>) -> Self::Result {
        let now = Instant::now();
        let Some(info) = self.conns.get(&msg.id) else {
            return Box::pin(async { None });
        };
        let key = info.queue.clone();
        if self.outranked(&key, info.level, now) {
            return Box::pin(async { None });
        }
        let idle_queue = self.queues.get(&key).is_none_or(|q| q.active.is_empty());
        if idle_queue && self.starved.iter().any(|k| *k != key) {
            // Nothing to carry here while another queue waits for a slot.
            return Box::pin(async { None });
        }
        let (reply, answer) = oneshot::channel();
        let waiter = Waiter {
            conn: msg.id,
            reply,
        };
        let idle = match self.queues.get_mut(&key) {
            Some(q) if q.active.is_empty() => {
                q.waiters.push_back(waiter);
                Some(q.limits.idle)
            }
            Some(_) => {
                self.give(&key, waiter);
                None
            }
            None => return Box::pin(async { None }),
        };
        if let Some(idle) = idle {
            let id = msg.id;
            ctx.run_later(idle, move |act, _| act.expire_waiter(&key, id));
        }
        Box::pin(async move { answer.await.ok().flatten() })
    }
}

impl Handler<Done> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: Done, ctx: &mut Context<Self>) {
        let Some(info) = self.conns.get_mut(&msg.id) else {
            return;
        };
        info.busy = false;
        let key = info.queue.clone();
        let host = Some(HostInfo {
            name: info.name.clone(),
            addr: info.host,
        });
        if let Some(q) = self.queues.get_mut(&key) {
            q.busy = q.busy.saturating_sub(1);
        }
        let batch = msg.batch;
        let mut retry = Vec::new();
        for (recipient, outcome) in batch.recipients.iter().zip(msg.outcomes) {
            if matches!(outcome, Outcome::Transient(_)) {
                retry.push(recipient.clone());
            }
            self.report(&key, &batch, recipient, outcome, host.clone());
        }
        if !retry.is_empty() {
            let again = Batch {
                message: batch.message.clone(),
                recipients: retry,
                attempts: batch.attempts,
            };
            self.delay(&key, again, None, ctx);
        }
        self.pump(&key, ctx);
    }
}

impl Handler<Ended> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: Ended, ctx: &mut Context<Self>) {
        let Some(info) = self.release(msg.id) else {
            return;
        };
        let key = info.queue.clone();
        match msg.end {
            End::Closed => {}
            End::Failed(reply) => self.host_failed(&key, info.host, reply, ctx),
            End::Broken(mut batch, reply) => {
                let host = Some(HostInfo {
                    name: info.name.clone(),
                    addr: info.host,
                });
                for r in &batch.recipients {
                    self.report(
                        &key,
                        &batch,
                        r,
                        Outcome::Transient(reply.clone()),
                        host.clone(),
                    );
                }
                batch.attempts += 1;
                if let Some(q) = self.queues.get_mut(&key) {
                    q.active.push_front(batch);
                }
                self.host_failed(&key, info.host, reply, ctx);
            }
        }
        self.pump(&key, ctx);
        for key in std::mem::take(&mut self.starved) {
            self.pump(&key, ctx);
        }
    }
}
