//! The interned names of the engine's nouns: a domain's queue, an MX
//! host, a connection. The scheduler keeps domains and hosts in vectors
//! indexed by these, so that no decision hashes a name.

/// A domain's index in the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DomainId(pub(crate) u32);

/// A host's index in the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct HostId(pub(crate) u32);

/// A connection's number, unique in the engine.
pub(crate) type ConnId = u64;

/// A map keyed by the engine's own numbers (connections, message ids),
/// never by names that come from mail: a fast hash is safe there, and a
/// connection is looked up several times a batch.
pub(crate) type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
