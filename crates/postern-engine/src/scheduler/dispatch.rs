//! Matching ready mail with connections. A domain with work *offers*
//! itself: it joins the ring of every host down to its first usable
//! preference level, and the usable hosts *dispatch*: an idle connection
//! takes the next batch of the ring's next domain, and a host with a free
//! slot opens a connection for a domain whose mail is not yet covered.
//!
//! Every step costs the size of one routing table or one ring turn; no
//! step looks at every domain or every host. A domain leaves a ring
//! lazily, when the ring reaches it and it has no mail, is capped, or a
//! better host of its table is free again.

use std::time::Instant;

use smallvec::SmallVec;

use super::cluster::Slot;
use super::control::Pace;
use super::timers::Timer;
use super::{Action, Conn, Core, Opening};
use crate::ids::ConnId;
use crate::ids::DomainId;
use crate::ids::HostId;
use crate::message::Batch;
use crate::messages::AnswerTo;
use crate::mx_host::{Idle, Reach};

impl Core {
    /// The domain may have work: it joins the rings of its hosts down to
    /// the first usable level, and those hosts (and any probe due at a
    /// better level) dispatch.
    pub(super) fn offer(&mut self, d: DomainId) {
        self.offer_all(std::slice::from_ref(&d));
    }

    /// [`Core::offer`] for several domains: each joins its rings first,
    /// then the hosts dispatch, so that a host sees all of its new mail
    /// at once (and a connection may take several domains' batches for
    /// one write).
    pub(super) fn offer_all(&mut self, domains: &[DomainId]) {
        let now = Instant::now();
        let (mut enlist, mut to_dispatch) = std::mem::take(&mut self.scratch);
        for d in domains {
            self.enlist_levels(*d, now, &mut enlist, &mut to_dispatch);
        }
        // Rounds over the hosts, so that equal hosts open in turn.
        loop {
            let opened = self.next_conn;
            for h in &to_dispatch {
                self.dispatch(*h, now);
            }
            if self.next_conn == opened {
                break;
            }
        }
        to_dispatch.clear();
        self.scratch = (enlist, to_dispatch);
    }

    /// The domain, if it has work, joins the rings of its hosts down to
    /// the first usable level; the usable ones (and a probe) are added to
    /// `to_dispatch`.
    fn enlist_levels(
        &mut self,
        d: DomainId,
        now: Instant,
        enlist: &mut Vec<HostId>,
        to_dispatch: &mut Vec<HostId>,
    ) {
        self.read_back(d);
        let Some(dom) = self.domain(d) else {
            return;
        };
        if !dom.has_work() || self.draining {
            return;
        }
        if dom.table.stale(now) {
            self.request_table(d);
        }
        let Some(dom) = self.domain(d) else {
            return;
        };
        let first = dom.first_usable_level(&self.hosts);
        for (level, h) in &dom.levels {
            if first.is_some_and(|f| *level > f) {
                break;
            }
            enlist.push(*h);
            if !to_dispatch.contains(h)
                && self
                    .host(*h)
                    .is_some_and(|x| x.usable() || x.reach == Reach::Probing)
            {
                to_dispatch.push(*h);
            }
        }
        for h in enlist.drain(..) {
            self.enlist(d, h);
        }
    }

    fn enlist(&mut self, d: DomainId, h: HostId) {
        let Some(dom) = self.domains.get_mut(d.0 as usize) else {
            return;
        };
        if dom.enlisted.contains(&h) {
            return;
        }
        dom.enlisted.push(h);
        if let Some(host) = self.hosts.get_mut(h.0 as usize) {
            host.ring.push_back(d);
        }
    }

    /// The domain leaves the host's ring (the caller took it out).
    pub(super) fn delist(&mut self, d: DomainId, h: HostId) {
        if let Some(dom) = self.domain_mut(d) {
            dom.enlisted.retain(|x| *x != h);
        }
    }

    /// Gives the host's idle connections work, then opens connections for
    /// mail that no connection covers.
    pub(super) fn dispatch(&mut self, h: HostId, now: Instant) {
        if self.draining {
            return;
        }
        while self.host(h).is_some_and(|x| !x.idle.is_empty()) {
            let Some(batch) = self.next_batch(h, now) else {
                break;
            };
            let Some(idle) = self.host_mut(h).and_then(|x| x.idle.pop_front()) else {
                self.back(batch);
                break;
            };
            let batches = self.fill(h, batch, idle.room, now);
            self.hand(idle.conn, batches, idle.reply);
        }
        loop {
            let Some(host) = self.host(h) else {
                return;
            };
            if !host.may_open(now) || !self.within_share(h) {
                if let Some(until) = host.paused_until().filter(|t| *t > now) {
                    self.retry_host(h, until);
                }
                return;
            }
            let Some(d) = self.next_opener(h) else {
                return;
            };
            // Only a host with mail that calls for a connection may take
            // another host's idle one.
            if self.total.get() >= self.server_limit {
                self.starve(h);
                return;
            }
            let Slot::Free(lease) = self.cluster_slot(h) else {
                return;
            };
            if self.paced(d, Pace::Connections, now) {
                self.open(h, d, lease);
            } else {
                // It waits for its throttle; `next_opener` put it last.
                if let Some(host) = self.host_mut(h) {
                    host.ring.pop_back();
                }
                self.delist(d, h);
            }
        }
    }

    /// The next batch the host may carry, from the next domain in its ring.
    pub(super) fn next_batch(&mut self, h: HostId, now: Instant) -> Option<Batch> {
        // The host's adaptive rate first: without a token, nothing goes
        // until the next one.
        if let Err(at) = self.host_mut(h)?.adaptive.take(now) {
            self.retry_host(h, at);
            return None;
        }
        let found = self.next_domain_batch(h, now);
        if found.is_none()
            && let Some(host) = self.host_mut(h)
        {
            host.adaptive.refund();
        }
        found
    }

    fn next_domain_batch(&mut self, h: HostId, now: Instant) -> Option<Batch> {
        let turns = self.host(h)?.ring.len();
        for _ in 0..turns {
            let d = self.host_mut(h)?.ring.pop_front()?;
            let fits = self.domain(d).is_some_and(|dom| {
                dom.has_work()
                    && dom.carrying.get() < dom.limits.max_connections
                    && dom.permits(h, &self.hosts)
            });
            if !fits || !self.paced(d, Pace::Messages, now) {
                self.delist(d, h);
                continue;
            }
            self.host_mut(h)?.ring.push_back(d);
            let batch = self.domain_mut(d)?.active.pop_front()?;
            self.read_back(d);
            return Some(batch);
        }
        None
    }

    /// Up to `room` batches for one write: after `first`, the next ones
    /// the host would hand out anyway (its ring's next domains, each
    /// within its limits and throttle, at the host's rate).
    pub(super) fn fill(
        &mut self,
        h: HostId,
        first: Batch,
        room: usize,
        now: Instant,
    ) -> Vec<Batch> {
        let mut batches = Vec::with_capacity(room.min(8));
        batches.push(first);
        while batches.len() < room {
            let Some(batch) = self.next_batch(h, now) else {
                break;
            };
            batches.push(batch);
        }
        batches
    }

    /// Sets the host's one retry timer for `at`, unless an earlier one is
    /// set: every reason to look at the host again (a pause, a rate token,
    /// local resources) shares it, so that timers cannot pile up.
    pub(super) fn retry_host(&mut self, h: HostId, at: Instant) {
        let Some(host) = self.host_mut(h) else {
            return;
        };
        if host.retry_at.is_some_and(|t| t <= at) {
            return;
        }
        host.retry_at = Some(at);
        self.timers.at(at, Timer::HostRetry(h));
    }

    /// The next domain of the ring whose ready mail calls for a new
    /// connection (any with mail, for the probe of a new or returning host).
    fn next_opener(&mut self, h: HostId) -> Option<DomainId> {
        let host = self.host(h)?;
        let probe = matches!(host.reach, Reach::New | Reach::Probing);
        let turns = host.ring.len();
        for _ in 0..turns {
            let d = self.host_mut(h)?.ring.pop_front()?;
            let Some(dom) = self.domain(d) else {
                continue;
            };
            if !dom.has_work() || !dom.permits(h, &self.hosts) {
                self.delist(d, h);
                continue;
            }
            let wants = dom.below_limit()
                && (probe || (dom.wants_connection() && dom.fair(h, &self.hosts)));
            self.host_mut(h)?.ring.push_back(d);
            if wants {
                return Some(d);
            }
        }
        None
    }

    /// Starts a connection to the host, on behalf of the domain, on the
    /// least loaded delivery loop.
    fn open(&mut self, h: HostId, d: DomainId, lease: Option<postern_cluster::Lease>) {
        let event_loop = (0..self.loop_open.len())
            .min_by_key(|i| self.loop_open.get(*i).map_or(usize::MAX, |g| g.get()))
            .unwrap_or(0);
        let (Some(host), Some(dom), Some(on_loop)) = (
            self.hosts.get(h.0 as usize),
            self.domains.get(d.0 as usize),
            self.loop_open.get(event_loop),
        ) else {
            return;
        };
        let conn = Conn {
            host: h,
            _slot: host.open.lease(),
            _server: self.total.lease(),
            _on_loop: on_loop.lease(),
            event_loop,
            _cluster: lease,
            opening: Some(Opening {
                domain: d,
                _host: host.opening.lease(),
                _domain: dom.opening.lease(),
            }),
            carrying: SmallVec::new(),
            idle_since: None,
        };
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(id, conn);
        if let Some(n) = self.loop_opened.get_mut(event_loop) {
            *n += 1;
        }
        self.actions.push(Action::Open {
            conn: id,
            host: h,
            event_loop,
        });
    }

    /// Gives batches to a connection, which now carries mail of their
    /// domains (counted once each) and no longer waits; they go back to
    /// their domains if the connection is gone (then, or when the answer
    /// reaches it).
    pub(super) fn hand(&mut self, conn: ConnId, batches: Vec<Batch>, to: AnswerTo) {
        if to.is_closed() {
            return self.back_all(batches);
        }
        let mut carrying = SmallVec::new();
        for b in &batches {
            let d = b.queue;
            if carrying.iter().all(|(x, _)| *x != d)
                && let Some(dom) = self.domain(d)
            {
                carrying.push((d, dom.carrying.lease()));
            }
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return self.back_all(batches);
        };
        c.carrying = carrying;
        c.idle_since = None;
        let event_loop = c.event_loop;
        self.actions.push(Action::Answer {
            conn,
            event_loop,
            to,
            batches,
        });
    }

    /// Answers a connection's request for work through its delivery
    /// loop's relay, with the other answers of this turn for that loop.
    pub(super) fn answer(&mut self, conn: ConnId, to: AnswerTo, batches: Vec<Batch>) {
        let Some(event_loop) = self.conns.get(&conn).map(|c| c.event_loop) else {
            let _ = to.send(batches);
            return;
        };
        self.actions.push(Action::Answer {
            conn,
            event_loop,
            to,
            batches,
        });
    }

    /// A connection with nothing to carry waits in its host's pool.
    pub(super) fn park(&mut self, conn: ConnId, h: HostId, now: Instant, want: (AnswerTo, usize)) {
        let (reply, room) = want;
        let Some(host) = self.host_mut(h) else {
            return self.answer(conn, reply, Vec::new());
        };
        host.idle.push_back(Idle {
            conn,
            since: now,
            reply,
            room,
        });
        let arm = !host.idle_timer;
        host.idle_timer = true;
        let at = now + host.idle_timeout;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.idle_since = Some(now);
        }
        self.idle_order.push(now, conn, h, &self.conns);
        if arm {
            self.timers.at(at, Timer::Idle(h));
        }
    }

    /// An idle connection, out of its host's pool, is told to close.
    pub(super) fn let_go(&mut self, idle: Idle) {
        if let Some(c) = self.conns.get_mut(&idle.conn) {
            c.idle_since = None;
        }
        let _ = idle.reply.send(Vec::new());
    }

    /// Lets go of the host's connections that waited `Idle_Timeout`.
    pub(super) fn expire_idle(&mut self, h: HostId, now: Instant) {
        let Some(host) = self.hosts.get_mut(h.0 as usize) else {
            return;
        };
        let timeout = host.idle_timeout;
        let mut expired = Vec::new();
        while host.idle.front().is_some_and(|i| now >= i.since + timeout) {
            expired.extend(host.idle.pop_front());
        }
        let oldest = host.idle.front().map(|i| i.since);
        host.idle_timer = oldest.is_some();
        if let Some(oldest) = oldest {
            self.timers.at(oldest + timeout, Timer::Idle(h));
        }
        for idle in expired {
            self.let_go(idle);
        }
    }

    /// The server-wide limit stops the host: it waits its turn, and the
    /// oldest idle connection elsewhere gives its slot up.
    fn starve(&mut self, h: HostId) {
        if let Some(host) = self.host_mut(h)
            && !host.starved
        {
            host.starved = true;
            self.starved.push_back(h);
        }
        let Some((conn, owner)) = self.idle_order.take_oldest_elsewhere(h, &self.conns) else {
            return;
        };
        let idle = self.host_mut(owner).and_then(|host| {
            let i = host.idle.iter().position(|i| i.conn == conn)?;
            host.idle.remove(i)
        });
        if let Some(idle) = idle {
            self.let_go(idle);
        }
    }

    /// Gives a few starved hosts a chance at a freed slot.
    pub(super) fn feed_starved(&mut self, now: Instant) {
        for _ in 0..4 {
            if self.total.get() >= self.server_limit {
                return;
            }
            let Some(h) = self.starved.pop_front() else {
                return;
            };
            if let Some(host) = self.host_mut(h) {
                host.starved = false;
            }
            self.dispatch(h, now);
        }
    }

    /// Batches that were not attempted go back to the heads of their
    /// queues, in order.
    pub(super) fn back_all(&mut self, batches: Vec<Batch>) {
        for batch in batches.into_iter().rev() {
            self.back(batch);
        }
    }

    /// A batch that was not attempted goes back to the head of its queue.
    pub(super) fn back(&mut self, batch: Batch) {
        let d = batch.queue;
        if let Some(dom) = self.domain_mut(d) {
            dom.active.push_front(batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;

    use postern_conf::Config;

    use crate::bench::Plane;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([127, 1, 0, i], 25))
    }

    #[test]
    fn at_the_server_limit_a_host_without_mail_to_open_for_closes_nobody() {
        let config = Config::from_text(
            "Hostname = \"t.test\"\nServer_Max_Outbound_Connections = 3\nIdle_Timeout = 3600\n",
            Path::new("t.conf"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut plane = Plane::new(config);
        let body = Plane::body();
        plane.route("x.test", &[addr(1), addr(2)]);
        plane.route("y.test", &[addr(3)]);
        // x's two hosts each get a connection (each one's first goes as a
        // probe), then y's host the third: the limit is reached, and all
        // three wait for work.
        plane.submit(Plane::message(1, "x.test", &body));
        plane.submit(Plane::message(2, "x.test", &body));
        assert_eq!(plane.run(), 2);
        plane.submit(Plane::message(3, "y.test", &body));
        assert_eq!(plane.run(), 1);
        assert_eq!(plane.closed(), 0);
        // One more message for x: an idle connection of its first host
        // takes it. Neither host has mail left that calls for a
        // connection, so neither closes another host's idle one.
        plane.submit(Plane::message(4, "x.test", &body));
        assert_eq!(plane.run(), 1);
        assert_eq!(plane.closed(), 0);
        // Mail for a fourth host does call for a connection: the oldest
        // idle one elsewhere gives its slot up, and the mail goes.
        plane.route("z.test", &[addr(4)]);
        plane.submit(Plane::message(5, "z.test", &body));
        assert_eq!(plane.run(), 0);
        assert_eq!(plane.closed(), 1);
        assert_eq!(plane.run(), 1);
    }
}
