//! Every idle connection in the order it went idle, for the server-wide
//! limit: when a host needs a slot and none is left, the oldest idle
//! connection of another host gives its own up.
//!
//! Connections go idle in time order, so the order is a queue. An entry
//! is left behind when its connection stops waiting (it is handed a
//! batch, times out, or ends); it is live only while the connection's
//! record still says it waits since that time. Left entries are dropped
//! when the front or a search reaches them, or all at once when they
//! outnumber the connections, so that each costs O(1) over its life,
//! whatever the number of hosts.

use std::collections::VecDeque;
use std::time::Instant;

use super::Conn;
use crate::ids::{ConnId, HostId, IdMap};

/// Idle connections, oldest first, with entries left behind.
#[derive(Debug, Default)]
pub(super) struct IdleOrder {
    entries: VecDeque<(Instant, ConnId, HostId)>,
}

/// True while the connection still waits since `since`.
fn live(conns: &IdMap<ConnId, Conn>, conn: ConnId, since: Instant) -> bool {
    conns
        .get(&conn)
        .is_some_and(|c| c.idle_since == Some(since))
}

impl IdleOrder {
    /// The connection went idle at `since` (its record says so).
    pub(super) fn push(
        &mut self,
        since: Instant,
        conn: ConnId,
        host: HostId,
        conns: &IdMap<ConnId, Conn>,
    ) {
        self.entries.push_back((since, conn, host));
        self.drop_front(conns);
        if self.entries.len() > 2 * conns.len() + 16 {
            self.entries.retain(|(s, c, _)| live(conns, *c, *s));
        }
    }

    /// Drops the entries left behind at the front.
    fn drop_front(&mut self, conns: &IdMap<ConnId, Conn>) {
        while let Some((s, c, _)) = self.entries.front()
            && !live(conns, *c, *s)
        {
            self.entries.pop_front();
        }
    }

    /// The oldest idle connection of a host other than `h`, taken out.
    /// Entries left behind on the way are dropped, so that no call pays
    /// for them again; `h`'s own stay, in order.
    pub(super) fn take_oldest_elsewhere(
        &mut self,
        h: HostId,
        conns: &IdMap<ConnId, Conn>,
    ) -> Option<(ConnId, HostId)> {
        let mut own = Vec::new();
        let mut found = None;
        while let Some((s, c, host)) = self.entries.pop_front() {
            if !live(conns, c, s) {
                continue;
            }
            if host != h {
                found = Some((c, host));
                break;
            }
            own.push((s, c, host));
        }
        for entry in own.into_iter().rev() {
            self.entries.push_front(entry);
        }
        found
    }

    /// Forgets every entry (shutdown).
    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }

    /// Entries held, left ones included.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::lease::Gauge;

    fn conn(host: HostId) -> Conn {
        let g = Gauge::default();
        Conn {
            host,
            _slot: g.lease(),
            _server: g.lease(),
            _on_loop: g.lease(),
            event_loop: 0,
            _cluster: None,
            opening: None,
            carrying: smallvec::SmallVec::new(),
            idle_since: None,
        }
    }

    /// Marks the connection idle since `at`, as `Core::park` does.
    fn park(order: &mut IdleOrder, conns: &mut IdMap<ConnId, Conn>, id: ConnId, at: Instant) {
        let Some(c) = conns.get_mut(&id) else {
            panic!("no connection {id}");
        };
        c.idle_since = Some(at);
        let host = c.host;
        order.push(at, id, host, conns);
    }

    #[test]
    fn the_oldest_waiting_connection_of_another_host_is_taken() {
        let t0 = Instant::now();
        let mut conns: IdMap<ConnId, Conn> = [
            (1, conn(HostId(0))),
            (2, conn(HostId(1))),
            (3, conn(HostId(2))),
        ]
        .into_iter()
        .collect();
        let mut order = IdleOrder::default();
        park(&mut order, &mut conns, 1, t0);
        park(&mut order, &mut conns, 2, t0 + Duration::from_millis(1));
        park(&mut order, &mut conns, 3, t0 + Duration::from_millis(2));
        // Connection 2 was handed a batch: its entry is left behind.
        if let Some(c) = conns.get_mut(&2) {
            c.idle_since = None;
        }
        // Host 0 needs a slot: not its own connection 1, not the busy 2.
        assert_eq!(
            order.take_oldest_elsewhere(HostId(0), &conns),
            Some((3, HostId(2)))
        );
        // Host 2 needs one: connection 1 is the oldest of another host.
        assert_eq!(
            order.take_oldest_elsewhere(HostId(2), &conns),
            Some((1, HostId(0)))
        );
        assert_eq!(order.take_oldest_elsewhere(HostId(2), &conns), None);
    }

    #[test]
    fn entries_left_behind_never_outnumber_the_connections_twice_over() {
        let t0 = Instant::now();
        let mut conns: IdMap<ConnId, Conn> = (0..4).map(|i| (i, conn(HostId(0)))).collect();
        let mut order = IdleOrder::default();
        // Connection 0 waits all along; the others go idle and busy again
        // ten thousand times behind it.
        park(&mut order, &mut conns, 0, t0);
        for n in 1..10_000u32 {
            let id = 1 + u64::from(n % 3);
            park(
                &mut order,
                &mut conns,
                id,
                t0 + Duration::from_micros(u64::from(n)),
            );
            assert!(
                order.len() <= 2 * conns.len() + 17,
                "{} entries",
                order.len()
            );
        }
        assert_eq!(
            order.take_oldest_elsewhere(HostId(1), &conns),
            Some((0, HostId(0)))
        );
    }

    #[test]
    fn a_search_drops_the_entries_it_passes_and_keeps_the_hosts_own() {
        let t0 = Instant::now();
        let mut conns: IdMap<ConnId, Conn> = [(1, conn(HostId(0))), (2, conn(HostId(1)))]
            .into_iter()
            .collect();
        let mut order = IdleOrder::default();
        // Host 0's connection waits first; host 1's goes idle again and
        // again behind it, then is handed a batch.
        park(&mut order, &mut conns, 1, t0);
        for n in 1..=10u64 {
            park(&mut order, &mut conns, 2, t0 + Duration::from_micros(n));
        }
        if let Some(c) = conns.get_mut(&2) {
            c.idle_since = None;
        }
        assert_eq!(order.len(), 11);
        // Host 0 finds nobody else waiting; the search dropped what it
        // passed, and host 0's own connection is still there, first.
        assert_eq!(order.take_oldest_elsewhere(HostId(0), &conns), None);
        assert_eq!(order.len(), 1);
        assert_eq!(
            order.take_oldest_elsewhere(HostId(1), &conns),
            Some((1, HostId(0)))
        );
    }
}
