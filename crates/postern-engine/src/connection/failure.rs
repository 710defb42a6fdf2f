//! What a session error means for the host, the route and the batch. A
//! reply the server gave is judged by the scheduler's classifier (it may
//! ask to slow down rather than say the host is broken).

use postern_smtp::client::{Phase, SessionError};

use crate::message::Batch;
use crate::messages::{Blame, End};

/// A session that could not be set up.
pub(super) fn refused(e: &SessionError) -> End {
    if e.is_local_resource() {
        return End::Starved;
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
    End::Refused {
        reply: e.reply(),
        blame,
        answered: matches!(e, SessionError::Rejected { .. }),
    }
}

/// A session that broke while carrying `batch`; `reused` when it had
/// carried mail before.
pub(super) fn broken(e: SessionError, batch: Batch, reused: bool) -> End {
    let reply = e.reply();
    if let SessionError::Rejected { phase, .. } = e
        && !(reused && phase == Phase::Rset)
    {
        return End::Rejected { batch, reply };
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
