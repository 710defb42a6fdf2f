//! Connections: opening them on the best free hosts, handing them work,
//! and letting them go.

use std::net::SocketAddr;
use std::time::Instant;

use actix::prelude::*;
use postern_smtp::Reply;
use tokio::sync::oneshot;

use super::control::Pace;
use super::timers::Timer;
use super::{ConnInfo, Scheduler, Submit};
use crate::choice::{better_is_free, choose};
use crate::connection::{ConnId, Connected, Connection, WantWork};
use crate::message::Batch;
use crate::outbound;
use crate::queue::{Limits, Queue, QueueKey, Table, Waiter};

impl Scheduler {
    pub(super) fn queue(&mut self, key: &QueueKey) -> &mut Queue {
        let config = &self.config;
        self.queues
            .entry(key.clone())
            .or_insert_with(|| Queue::new(Limits::of(config, key)))
    }

    /// Does what can be done for the queue now: build its routing table,
    /// hand ready mail to idle connections, open connections.
    pub(super) fn pump(&mut self, key: &QueueKey, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let Some(queue) = self.queues.get(key) else {
            return;
        };
        if queue.active.is_empty() || queue.suspended || self.draining {
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
        self.feed_waiters(key, now, ctx);
        self.open_connections(key, ctx, now);
    }

    /// True when a connection at `level` must carry nothing more: a better
    /// host is reachable and has a free slot.
    pub(super) fn outranked(&self, key: &QueueKey, level: u32, now: Instant) -> bool {
        let Some(queue) = self.queues.get(key) else {
            return false;
        };
        better_is_free(
            queue.levels.iter().map(|(l, a)| (*l, &a[..])),
            &self.hosts,
            level,
            now,
        )
    }

    pub(super) fn feed_waiters(&mut self, key: &QueueKey, now: Instant, ctx: &mut Context<Self>) {
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
            if !self.give(key, waiter, ctx) {
                return;
            }
        }
    }

    /// Hands the next ready batch to a waiting connection; false when the
    /// message throttle says wait (the connection keeps waiting).
    pub(super) fn give(&mut self, key: &QueueKey, waiter: Waiter, ctx: &mut Context<Self>) -> bool {
        let has_mail = self.queues.get(key).is_some_and(|q| !q.active.is_empty());
        if has_mail && !self.paced(key, Pace::Messages, ctx) {
            if let Some(queue) = self.queues.get_mut(key) {
                queue.waiters.push_front(waiter);
            }
            return false;
        }
        let Some(queue) = self.queues.get_mut(key) else {
            return false;
        };
        let Some(batch) = queue.active.pop_front() else {
            queue.waiters.push_front(waiter);
            return false;
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
        true
    }

    pub(super) fn open_connections(
        &mut self,
        key: &QueueKey,
        ctx: &mut Context<Self>,
        now: Instant,
    ) {
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
            if queue.levels.is_empty() || !self.paced(key, Pace::Connections, ctx) {
                return;
            }
            let choice = self
                .queues
                .get(key)
                .and_then(|q| choose(q.levels.iter().map(|(l, a)| (*l, &a[..])), &self.hosts, now));
            match choice {
                Some((level, addr)) => {
                    if !self.open(key, level, addr, ctx) {
                        return;
                    }
                }
                None => {
                    self.no_usable_host(key, ctx, now);
                    return;
                }
            }
        }
    }

    /// Every host is unreachable or full. Full: wait for a slot. All
    /// unreachable and nothing open: the ready mail has failed this attempt
    /// for now, and waits for its retry in the delayed queue.
    pub(super) fn no_usable_host(&mut self, key: &QueueKey, ctx: &mut Context<Self>, now: Instant) {
        let Some(queue) = self.queues.get(key) else {
            return;
        };
        let mut addrs = queue.levels.iter().flat_map(|(_, a)| a.iter());
        let all_down = addrs
            .clone()
            .all(|a| self.hosts.get(a).is_some_and(|h| !h.reachable(now)));
        let full = addrs
            .find(|a| self.hosts.get(*a).is_some_and(|h| h.reachable(now)))
            .copied();
        let open = queue.connections;
        if all_down && open == 0 {
            let reply = self
                .queues
                .get(key)
                .and_then(|q| q.last_failure.clone())
                .unwrap_or_else(|| Reply::with_status(421, (4, 4, 0), "no reachable host"));
            self.delay_active(key, &reply, ctx);
        } else {
            self.starved.insert(key.clone());
            if let Some(addr) = full {
                self.reclaim_idle(key, Some(addr));
            }
        }
    }

    /// Closes one idle connection of another queue (to `host`, if given)
    /// so that a starved queue gets its slot: an idle connection must not
    /// hold a slot that ready mail needs.
    pub(super) fn reclaim_idle(&mut self, starving: &QueueKey, host: Option<SocketAddr>) {
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
    pub(super) fn open(
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
                self.delay_active(key, &reply, ctx);
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

    pub(super) fn release(&mut self, id: ConnId) -> Option<ConnInfo> {
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

    /// Lets go of the connections that waited `Idle_Timeout` for work.
    /// Waiters queue up in arrival order, so one timer per queue, set for
    /// the oldest, is enough (a timer per waiter costs the actor a poll of
    /// each on every wake-up).
    pub(super) fn expire_idle(&mut self, key: &QueueKey, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        queue.idle_timer = false;
        let idle = queue.limits.idle;
        while queue.waiters.front().is_some_and(|w| now >= w.since + idle) {
            if let Some(w) = queue.waiters.pop_front() {
                let _ = w.reply.send(None);
            }
        }
        self.arm_idle(key, ctx);
    }

    /// Sets the queue's idle timer for its oldest waiter, if not set.
    fn arm_idle(&mut self, key: &QueueKey, ctx: &mut Context<Self>) {
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        let Some(oldest) = queue.waiters.front().map(|w| w.since) else {
            return;
        };
        if queue.idle_timer {
            return;
        }
        queue.idle_timer = true;
        let when = oldest + queue.limits.idle;
        self.at(when, Timer::Idle(key.clone()), ctx);
    }
}

impl Handler<Submit> for Scheduler {
    type Result = ();

    fn handle(&mut self, Submit(message): Submit, ctx: &mut Context<Self>) {
        let key = QueueKey {
            binding: message.binding.clone(),
            domain: message.domain.clone(),
        };
        let size = self.queue(&key).limits.batch_size;
        for batch in Batch::split(message, size) {
            self.enter(&key, &batch);
            self.queue(&key).active.push_back(batch);
        }
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
        let suspended = self.draining || self.queues.get(&key).is_none_or(|q| q.suspended);
        if suspended || self.outranked(&key, info.level, now) {
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
            since: now,
        };
        match self.queues.get_mut(&key) {
            Some(q) if q.active.is_empty() => {
                q.waiters.push_back(waiter);
                self.arm_idle(&key, ctx);
            }
            Some(_) => {
                self.give(&key, waiter, ctx);
            }
            None => return Box::pin(async { None }),
        }
        Box::pin(async move { answer.await.ok().flatten() })
    }
}
