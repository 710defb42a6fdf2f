//! Recipient callouts (the listener's `Recipient_Verification = callout`)
//! count against the `Host` limits: before it connects, the listener asks
//! for a slot at the destination (refused while a host there is at its
//! limit), and the slot holds a place in that host's pool until the
//! callout is done.

use std::collections::HashMap;
use std::time::Instant;

use actix::prelude::*;

use super::{Core, Scheduler};
use crate::ids::HostId;
use crate::lease::Lease;
use crate::mx_host::Peer;

/// Callouts in progress, each holding a place in a host's pool.
#[derive(Debug, Default)]
pub(super) struct Callouts {
    next: u64,
    held: HashMap<u64, (HostId, Lease)>,
}

/// Ask for a slot at a destination; `None` while it is at its limit.
#[derive(Message)]
#[rtype(result = "Option<u64>")]
pub(crate) struct ReserveCallout(pub(crate) Peer);

/// A callout is done.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct EndCallout(pub(crate) u64);

impl Core {
    /// A slot for a callout to `peer`: counted in the first of its hosts
    /// that has a `Host` limit (none, for a destination the engine has no
    /// limit for or has not met).
    fn reserve_callout(&mut self, peer: &Peer) -> Option<u64> {
        let hosts = self.peers.get(peer).cloned().unwrap_or_default();
        let mut counted = None;
        for h in hosts {
            let host = self.host(h)?;
            if let Some(limit) = host.limit {
                if host.open.get() >= limit {
                    return None;
                }
                counted.get_or_insert(h);
            }
        }
        let callouts = &mut self.callouts;
        callouts.next += 1;
        let id = callouts.next;
        if let Some(h) = counted
            && let Some(lease) = self.hosts.get(h.0 as usize).map(|x| x.open.lease())
        {
            self.callouts.held.insert(id, (h, lease));
        }
        Some(id)
    }

    /// The callout is done: its place goes back, and the host may use it.
    fn end_callout(&mut self, id: u64) {
        if let Some((h, lease)) = self.callouts.held.remove(&id) {
            drop(lease);
            self.dispatch(h, Instant::now());
        }
    }
}

impl Handler<ReserveCallout> for Scheduler {
    type Result = Option<u64>;

    fn handle(
        &mut self,
        ReserveCallout(peer): ReserveCallout,
        _: &mut Context<Self>,
    ) -> Option<u64> {
        self.core.reserve_callout(&peer)
    }
}

impl Handler<EndCallout> for Scheduler {
    type Result = ();

    fn handle(&mut self, EndCallout(id): EndCallout, ctx: &mut Context<Self>) {
        self.core.end_callout(id);
        self.sync(ctx);
    }
}
