//! Counted slots as values. A [`Gauge`] counts the [`Lease`]s taken from
//! it; a lease gives its slot back when dropped. A connection's record
//! holds a lease on its host's pool, the server-wide count, its event
//! loop, and the domain it is opened for or carries mail of, so that
//! forgetting the connection (whatever ended it) gives every slot back,
//! and no count can drift.
//!
//! The engine's control plane runs on one thread, so the counts are
//! `Rc<Cell<_>>`, not atomics.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

/// A count of leases held.
#[derive(Clone, Default)]
pub(crate) struct Gauge(Rc<Cell<usize>>);

impl Gauge {
    /// Leases held now.
    pub(crate) fn get(&self) -> usize {
        self.0.get()
    }

    /// Takes one slot.
    pub(crate) fn lease(&self) -> Lease {
        self.0.set(self.0.get() + 1);
        Lease(self.0.clone())
    }
}

impl fmt::Debug for Gauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gauge({})", self.get())
    }
}

/// One slot of a [`Gauge`], given back on drop.
pub(crate) struct Lease(Rc<Cell<usize>>);

impl Drop for Lease {
    fn drop(&mut self) {
        // Every lease was counted when taken, so the count is at least 1.
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lease")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_gives_its_slot_back_on_drop() {
        let g = Gauge::default();
        let a = g.lease();
        let b = g.lease();
        assert_eq!(g.get(), 2);
        drop(a);
        assert_eq!(g.get(), 1);
        drop(b);
        assert_eq!(g.get(), 0);
    }
}
