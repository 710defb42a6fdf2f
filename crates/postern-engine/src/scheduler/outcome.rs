//! What connections report: a session opened, a transaction's outcomes
//! (with the request for the next batch), and how a connection ended.

use std::time::{Duration, Instant};

use postern_conf::ReplyClass;
use postern_smtp::Reply;
use postern_smtp::client::Outcome;
use smallvec::SmallVec;

use super::Core;
use super::timers::Timer;
use crate::class::{Action, Context, Verdict};
use crate::ids::ConnId;
use crate::ids::DomainId;
use crate::ids::HostId;
use crate::message::{Batch, HostInfo};
use crate::messages::{AnswerTo, Behind, Blame, End, Finished, WantWork};
use crate::mx_host::MxHost;

impl Core {
    fn host_info(&self, h: HostId) -> Option<HostInfo> {
        self.host(h).map(|x| HostInfo {
            name: x.name().to_owned(),
            addr: x.key.addr,
            tls_problem: None,
        })
    }

    /// The session is open: the host is up, the domain it was opened for
    /// has no failures in a row, and the host may open more.
    pub(crate) fn connected(&mut self, conn: ConnId) {
        let now = Instant::now();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let h = c.host;
        // It counts as opening for its domain until it asks for work, so
        // that no second connection is opened for the same mail.
        if let Some(d) = c.opening.as_ref().map(|o| o.domain)
            && let Some(dom) = self.domain_mut(d)
        {
            dom.consecutive_failures = 0;
        }
        if let Some(host) = self.host_mut(h) {
            host.connected();
        }
        self.dispatch(h, now);
    }

    /// A connection's outcomes and its request for the next batch: the
    /// answer is an [`super::Action::Answer`] now, or later when the
    /// connection waits in its host's pool.
    pub(crate) fn want_work(&mut self, want: WantWork) {
        let WantWork {
            id: conn,
            finished,
            closing,
            room,
            answer,
        } = want;
        let now = Instant::now();
        let Some(c) = self.conns.get_mut(&conn) else {
            let _ = answer.send(Vec::new());
            return;
        };
        let h = c.host;
        c.opening = None;
        // A closing connection still counts for its domain until it is
        // gone, so that no other opens for the same mail meanwhile.
        let carried: SmallVec<[DomainId; 2]> = c.carrying.iter().map(|(d, _)| *d).collect();
        if !closing {
            c.carrying.clear();
        }
        for f in finished {
            self.finished(h, conn, f, now);
        }
        self.next_for(conn, h, closing, now, (answer, room));
        if !closing {
            self.offer_all(&carried);
        }
    }

    fn next_for(
        &mut self,
        conn: ConnId,
        h: HostId,
        closing: bool,
        now: Instant,
        (to, room): (AnswerTo, usize),
    ) {
        let over_cap = self
            .host(h)
            .is_none_or(|x| x.limit_now().is_some_and(|l| x.open.get() > l));
        if closing || self.draining || over_cap || self.over_share(h) {
            return self.answer(conn, to, Vec::new());
        }
        if let Some(batch) = self.next_batch(h, now) {
            let batches = self.fill(h, batch, room, now);
            return self.hand(conn, batches, to);
        }
        if !self.starved.is_empty() {
            return self.answer(conn, to, Vec::new());
        }
        self.park(conn, h, now, (to, room));
    }

    /// Batches returned because their connection was gone when the
    /// answer came: back to the heads of their domains' queues.
    pub(crate) fn returned(&mut self, batches: Vec<Batch>) {
        let mut domains: SmallVec<[DomainId; 2]> = SmallVec::new();
        for b in &batches {
            if !domains.contains(&b.queue) {
                domains.push(b.queue);
            }
        }
        self.back_all(batches);
        self.offer_all(&domains);
    }

    /// The class of a reply to mail of `batch` and what to do about it.
    pub(super) fn judge(&self, batch: &Batch, reply: &Reply, host: Option<&HostInfo>) -> Verdict {
        let cx = Context {
            binding: &batch.message.binding,
            domain: &batch.message.domain,
            host: host.map(|h| h.name.as_str()),
        };
        self.classifier.judge(reply, &cx)
    }

    /// The verdict on a reply refusing a session opened for `d` to `h`.
    fn judge_for(&self, d: DomainId, reply: &Reply, h: HostId) -> Verdict {
        let key = self.domain(d).map(|dom| &dom.key);
        let cx = Context {
            binding: key.map_or("", |k| &*k.binding),
            domain: key.map_or("", |k| &*k.domain),
            host: self.host(h).map(MxHost::name),
        };
        self.classifier.judge(reply, &cx)
    }

    /// Sorts a transaction's outcomes: delivered and permanent ones are
    /// reported, transient ones retried, and recipients whose reply asks
    /// to slow down or to hold the queue go back without an attempt.
    fn finished(&mut self, h: HostId, conn: ConnId, f: Finished, now: Instant) {
        let host = self.host_info(h).map(|mut x| {
            x.tls_problem = f.tls_problem;
            x
        });
        let batch = f.batch;
        let d = batch.queue;
        let mut failed = Vec::new();
        let mut later: Vec<(Reply, Vec<String>)> = Vec::new();
        let mut back = Vec::new();
        let mut hold = None;
        for (recipient, outcome) in batch.recipients.iter().zip(f.outcomes) {
            let verdict = self.judge(&batch, outcome.reply(), host.as_ref());
            match (outcome, verdict.action) {
                (outcome @ Outcome::Delivered(_), _) => {
                    if let Some(x) = self.host_mut(h) {
                        x.success(now);
                    }
                    let class = ReplyClass::Delivered;
                    self.report(&batch, recipient, outcome, host.clone(), class, None);
                }
                (
                    Outcome::Transient(reply) | Outcome::Permanent(reply),
                    Action::Backoff | Action::Suspend(_),
                ) => {
                    back.push(recipient.clone());
                    hold = Some((reply, verdict));
                }
                (Outcome::Permanent(reply), _) | (Outcome::Transient(reply), Action::Bounce) => {
                    let r = std::slice::from_ref(recipient);
                    failed.extend(self.fail(&batch, r, &reply, host.as_ref()));
                }
                (Outcome::Transient(reply), Action::Default) => {
                    match later.iter_mut().find(|(r, _)| *r == reply) {
                        Some((_, list)) => list.push(recipient.clone()),
                        None => later.push((reply, vec![recipient.clone()])),
                    }
                }
            }
        }
        // Parts failed with different replies, or put back unattempted,
        // wait in one round again later.
        let alone = batch.alone && later.len() == 1 && hold.is_none();
        for (reply, recipients) in later {
            let part = Batch {
                recipients,
                alone,
                ..batch.clone()
            };
            failed.extend(self.transient(part, &reply, host.clone(), None));
        }
        if let Some((reply, verdict)) = hold {
            let part = Batch {
                recipients: back,
                alone: false,
                ..batch.clone()
            };
            // Still in its attempt round: it was not attempted.
            self.enter(&part);
            self.requeue(part, now);
            self.held(d, h, conn, &reply, verdict, now);
        }
        self.settle(&batch, failed);
    }

    /// A reply asked the host to slow down, or the domain's queue to wait.
    fn held(
        &mut self,
        d: DomainId,
        h: HostId,
        conn: ConnId,
        reply: &Reply,
        v: Verdict,
        now: Instant,
    ) {
        match v.action {
            Action::Backoff => self.slow_down(h, conn, v.class, reply),
            Action::Suspend(duration) => self.hold_domain(d, duration, now),
            Action::Default | Action::Bounce => {}
        }
    }

    /// The host asked to slow down, on connection `conn` (whose record is
    /// gone if it ended: it counts as open all the same).
    fn slow_down(&mut self, h: HostId, conn: ConnId, class: ReplyClass, reply: &Reply) {
        let next = self.next_conn;
        let gone = usize::from(!self.conns.contains_key(&conn));
        let Some(host) = self.host_mut(h) else {
            return;
        };
        let open = host.open.get() + gone;
        let slowed = host.signal(class, reply, (conn, open, next));
        if let Some(until) = host.paused_until() {
            self.retry_host(h, until);
        }
        if slowed && self.cluster.is_some() {
            self.actions
                .push(super::Action::Signal(h, class, reply.to_string()));
        }
        let kind = class.as_str();
        metrics::counter!(postern_metrics::ADAPTIVE_ADJUSTMENTS, "reason" => kind).increment(1);
    }

    /// A rule holds the domain's queue for `duration`.
    fn hold_domain(&mut self, d: DomainId, duration: Duration, now: Instant) {
        let Some(dom) = self.domain_mut(d) else {
            return;
        };
        let until = now + duration;
        dom.held_until = Some(until);
        self.timers.at(until, Timer::Release(d));
    }

    /// A batch goes back to the head of its queue without an attempt
    /// counted, unless its message has expired meanwhile.
    fn requeue(&mut self, batch: Batch, now: Instant) {
        if self.expires(&batch) > now {
            self.back(batch);
            return;
        }
        let (last, host) = batch.last_failure();
        let expiration = self
            .domain(batch.queue)
            .map_or(Duration::ZERO, |x| x.limits.expiration);
        let failed = self.fail(
            &batch,
            &batch.recipients,
            &super::retry::expired(expiration, &last),
            host.as_ref(),
        );
        self.settle(&batch, failed);
    }

    /// A connection is gone: its slots come back with its record; then
    /// what its end means for the host, the batch and the domain.
    pub(crate) fn ended(&mut self, conn: ConnId, end: End, behind: Vec<Behind>) {
        let now = Instant::now();
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        let h = c.host;
        let opened_for = c.opening.as_ref().map(|o| o.domain);
        let mut owners: SmallVec<[DomainId; 2]> = c.carrying.iter().map(|(d, _)| *d).collect();
        if owners.is_empty() {
            owners.extend(opened_for);
        }
        drop(c);
        self.forget_idle(h, conn);
        if !matches!(end, End::Closed) {
            metrics::counter!(postern_metrics::CONNECTION_FAILURES).increment(1);
        }
        // Batches behind the one the session ended on: those the server
        // may have read whole wait for their retry, unless it closed the
        // session before them (421) or had closed it while idle; the
        // others go back first, so that the ended one stays ahead of them.
        let arrived = match &end {
            End::Broken { reply, .. } => Some(reply.clone()),
            End::Rejected { reply, .. } if reply.code != 421 => Some(reply.clone()),
            _ => None,
        };
        self.behind(h, arrived.as_ref(), behind);
        match end {
            End::Closed => {}
            End::Refused {
                reply,
                blame,
                answered,
            } => {
                let verdict = opened_for
                    .filter(|_| answered)
                    .map(|d| self.judge_for(d, &reply, h));
                match verdict.map(|v| (v, v.action)) {
                    Some((v, Action::Backoff)) => self.slow_down(h, conn, v.class, &reply),
                    Some((_, Action::Suspend(duration))) => {
                        if let Some(d) = opened_for {
                            self.hold_domain(d, duration, now);
                        }
                    }
                    _ => self.host_failed(h, blame, &reply, opened_for, now),
                }
            }
            End::Starved => {
                // This machine is out of descriptors or ports: look again
                // in a second, without blaming the host.
                self.retry_host(h, now + Duration::from_secs(1));
            }
            End::Rejected { batch, reply } => {
                let verdict = self.judge(&batch, &reply, self.host_info(h).as_ref());
                match verdict.action {
                    Action::Backoff | Action::Suspend(_) => {
                        let d = batch.queue;
                        self.requeue(batch, now);
                        self.held(d, h, conn, &reply, verdict, now);
                    }
                    Action::Bounce => {
                        let host = self.host_info(h);
                        let failed = self.fail(&batch, &batch.recipients, &reply, host.as_ref());
                        self.settle(&batch, failed);
                    }
                    Action::Default => self.retry(batch, &reply, h, Some(now)),
                }
            }
            End::Stale(batch) => self.back(batch),
            End::Broken {
                batch,
                reply,
                after_dot,
                host_down,
            } => {
                // Before the final dot another connection may take it at
                // once; after it, the message may have arrived, so it
                // waits for its retry like any transient failure.
                self.retry(batch, &reply, h, (!after_dot).then_some(now));
                if host_down {
                    self.host_failed(h, Blame::Address, &reply, None, now);
                }
            }
            End::Lost(batches) => {
                self.panic_on = None;
                let reply = Reply::with_status(
                    451,
                    (4, 4, 2),
                    "delivery interrupted: the connection ended unexpectedly",
                );
                for b in batches {
                    self.retry(b, &reply, h, None);
                }
            }
        }
        self.dispatch(h, now);
        self.offer_all(&owners);
        self.feed_starved(now);
    }

    /// The batches that went behind the one a session ended with: those
    /// whose message the server may have read whole (`arrived` is the
    /// reply that ended it) wait for their retry; the others were not
    /// attempted and go back to the head of their queue, in order.
    fn behind(&mut self, h: HostId, arrived: Option<&Reply>, behind: Vec<Behind>) {
        for b in behind.into_iter().rev() {
            match arrived.filter(|_| b.written) {
                Some(reply) => self.retry(b.batch, reply, h, None),
                None => self.back(b.batch),
            }
        }
    }

    /// A batch attempted on host `h` failed for now with `reply`: it is
    /// retried at `at` (on its backoff without one), or fails for good
    /// when it has no attempts or time left.
    fn retry(&mut self, batch: Batch, reply: &Reply, h: HostId, at: Option<Instant>) {
        let failed = self.transient(batch.clone(), reply, self.host_info(h), at);
        self.settle(&batch, failed);
    }

    /// An ended connection leaves its host's pool (its record is gone, so
    /// its place in the idle order is left behind).
    fn forget_idle(&mut self, h: HostId, conn: ConnId) {
        let Some(host) = self.host_mut(h) else {
            return;
        };
        if let Some(i) = host.idle.iter().position(|i| i.conn == conn) {
            host.idle.remove(i);
        }
    }

    /// A session could not be set up. The host (for an address failure,
    /// every profile of the address from this source) is skipped for
    /// `Host_Failure_Retry`, and its domains look at their other hosts at
    /// once. After `MX_Failures_To_Delay` failures in a row for one domain,
    /// its ready mail waits in the delayed queue.
    fn host_failed(
        &mut self,
        h: HostId,
        blame: Blame,
        reply: &Reply,
        opened_for: Option<DomainId>,
        now: Instant,
    ) {
        let hit = match (blame, self.host(h)) {
            (Blame::Address, Some(host)) => self
                .peers
                .get(&host.key.peer())
                .cloned()
                .unwrap_or_else(|| vec![h]),
            _ => vec![h],
        };
        let mut moved = Vec::new();
        for x in hit {
            let Some(host) = self.host_mut(x) else {
                continue;
            };
            tracing::warn!(host = %host.name(), addr = %host.key.addr, %reply, "host skipped after a failure");
            let until = host.failed(now);
            moved.extend(std::mem::take(&mut host.ring).into_iter().map(|d| (d, x)));
            self.timers.at(until, Timer::HostBack(x));
        }
        for (d, x) in &moved {
            self.delist(*d, *x);
        }
        if let Some(d) = opened_for {
            self.domain_failed(d, reply);
        }
        for (d, _) in moved {
            self.offer(d);
        }
    }

    fn domain_failed(&mut self, d: DomainId, reply: &Reply) {
        let Some(dom) = self.domain_mut(d) else {
            return;
        };
        dom.consecutive_failures += 1;
        dom.last_failure = Some(reply.clone());
        let threshold = dom.limits.failures_to_delay;
        if dom.consecutive_failures < threshold {
            return;
        }
        dom.consecutive_failures = 0;
        let why = Reply::with_status(
            421,
            (4, 4, 0),
            format!("{threshold} connection failures in a row; last: {reply}"),
        );
        self.delay_active(d, &why);
    }
}
