//! What a session error means for the host, the route and the batch.

use postern_smtp::client::{Phase, SessionError};

use crate::message::Batch;
use crate::messages::{Blame, End};
use crate::mx_host::asks_to_slow_down;

/// A session that could not be set up.
pub(super) fn refused(e: &SessionError) -> End {
    if e.is_local_resource() {
        return End::Starved;
    }
    let reply = e.reply();
    if matches!(e, SessionError::Rejected { .. }) && asks_to_slow_down(&reply) {
        return End::Slowed(None, reply);
    }
    let early = |phase: &Phase| matches!(phase, Phase::Connect | Phase::Greeting);
    let blame = match e {
        SessionError::Connect { .. } | SessionError::Timeout { .. } => Blame::Address,
        SessionError::Io { phase, .. }
        | SessionError::Protocol { phase, .. }
        | SessionError::Rejected { phase, .. }
            if early(phase) =>
        {
            Blame::Address
        }
        _ => Blame::Profile,
    };
    End::Failed(reply, blame)
}

/// A session that broke while carrying `batch`; `reused` when it had
/// carried mail before.
pub(super) fn broken(e: SessionError, batch: Batch, reused: bool) -> End {
    let reply = e.reply();
    if matches!(e, SessionError::Rejected { .. }) && asks_to_slow_down(&reply) {
        return End::Slowed(Some(batch), reply);
    }
    if reused && e.phase() == Some(Phase::Rset) {
        return End::Stale(batch);
    }
    End::Broken {
        after_dot: e.phase() == Some(Phase::DataEnd),
        host_down: matches!(e, SessionError::Timeout { .. }),
        batch,
        reply,
    }
}
