//! The scheduler's choice: which host gets the next connection of a
//! queue. A pure function of the routing table and the hosts' state, so
//! that it can be tested and measured alone.
//!
//! The rule: take the best (lowest) preference level that has a host
//! which is reachable and below its connection limit; within it, the host
//! with the fewest connections (the first listed on a tie), so that equal
//! hosts share connections evenly. A worse level is used only while no
//! better host is both reachable and free.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

/// What the scheduler knows of one destination address and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    /// The host name it was resolved from.
    pub name: String,
    /// Connections open or opening to it, over all queues.
    pub connections: usize,
    /// The `Host` stanza's `Max_Outbound_Connections`; `None`: unlimited.
    pub limit: Option<u64>,
    /// Not tried again before this (after a connect or protocol failure).
    pub down_until: Option<Instant>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// When it last failed.
    pub last_failure: Option<Instant>,
}

impl HostState {
    /// A host nobody has connected to yet.
    pub fn new(name: impl Into<String>, limit: Option<u64>) -> Self {
        Self {
            name: name.into(),
            connections: 0,
            limit,
            down_until: None,
            consecutive_failures: 0,
            last_failure: None,
        }
    }

    /// True unless it failed less than `Host_Failure_Retry` ago.
    pub fn reachable(&self, now: Instant) -> bool {
        self.down_until.is_none_or(|t| now >= t)
    }

    /// True while below its connection limit.
    pub fn has_slot(&self) -> bool {
        self.limit.is_none_or(|l| (self.connections as u64) < l)
    }

    fn usable(&self, now: Instant) -> bool {
        self.reachable(now) && self.has_slot()
    }
}

/// One preference level of a table, as addresses.
pub type Level<'a> = (u32, &'a [SocketAddr]);

/// The host for the next connection, with its level; `None` when every
/// host is unreachable or full.
pub fn choose<'a>(
    levels: impl IntoIterator<Item = Level<'a>>,
    hosts: &HashMap<SocketAddr, HostState>,
    now: Instant,
) -> Option<(u32, SocketAddr)> {
    for (level, addrs) in levels {
        let best = addrs
            .iter()
            .filter_map(|a| {
                hosts
                    .get(a)
                    .filter(|h| h.usable(now))
                    .map(|h| (h.connections, *a))
            })
            .min_by_key(|(connections, _)| *connections);
        if let Some((_, addr)) = best {
            return Some((level, addr));
        }
    }
    None
}

/// True when a level better than `level` has a host that is reachable and
/// free: a connection at `level` must then carry no new message.
pub fn better_is_free<'a>(
    levels: impl IntoIterator<Item = Level<'a>>,
    hosts: &HashMap<SocketAddr, HostState>,
    level: u32,
    now: Instant,
) -> bool {
    levels
        .into_iter()
        .take_while(|(l, _)| *l < level)
        .any(|(_, addrs)| {
            addrs
                .iter()
                .any(|a| hosts.get(a).is_some_and(|h| h.usable(now)))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, n], 25))
    }

    fn hosts(spec: &[(u8, usize, Option<u64>)]) -> HashMap<SocketAddr, HostState> {
        spec.iter()
            .map(|(n, c, l)| {
                let mut h = HostState::new(format!("h{n}"), *l);
                h.connections = *c;
                (addr(*n), h)
            })
            .collect()
    }

    #[test]
    fn the_best_free_level_wins_and_equal_hosts_share() {
        let l10 = [addr(1), addr(2)];
        let l20 = [addr(3)];
        let levels = || [(10, &l10[..]), (20, &l20[..])];
        let now = Instant::now();
        let mut hs = hosts(&[(1, 0, None), (2, 0, None), (3, 0, None)]);
        assert_eq!(choose(levels(), &hs, now), Some((10, addr(1))));
        hs.get_mut(&addr(1)).unwrap().connections = 1;
        assert_eq!(choose(levels(), &hs, now), Some((10, addr(2))));
        // Full at its limit: the other equal host, then the worse level.
        let mut hs = hosts(&[(1, 2, Some(2)), (2, 2, Some(2)), (3, 5, None)]);
        assert_eq!(choose(levels(), &hs, now), Some((20, addr(3))));
        assert!(!better_is_free(levels(), &hs, 20, now));
        hs.get_mut(&addr(2)).unwrap().connections = 1;
        assert!(better_is_free(levels(), &hs, 20, now));
        // Down: skipped until its retry time.
        let mut hs = hosts(&[(1, 0, None), (2, 0, None), (3, 0, None)]);
        for n in [1, 2] {
            hs.get_mut(&addr(n)).unwrap().down_until = Some(now + Duration::from_secs(60));
        }
        assert_eq!(choose(levels(), &hs, now), Some((20, addr(3))));
        assert_eq!(
            choose(levels(), &hs, now + Duration::from_secs(61)),
            Some((10, addr(1)))
        );
        hs.get_mut(&addr(3)).unwrap().limit = Some(0);
        assert_eq!(choose(levels(), &hs, now), None);
    }
}
