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
/// carried mail before. A batch the session could not start (a reused
/// session found closed, or one that speaks for another client) goes
/// back as not attempted.
pub(super) fn broken(e: SessionError, batch: Batch, reused: bool) -> End {
    let reply = e.reply();
    if let SessionError::Rejected { phase, .. } = e
        && !(reused && phase == Phase::Rset)
    {
        return End::Rejected { batch, reply };
    }
    if matches!(e, SessionError::OtherClient(_)) || (reused && e.phase() == Some(Phase::Rset)) {
        return End::Stale(batch);
    }
    End::Broken {
        after_dot: e.phase() == Some(Phase::DataEnd),
        host_down: matches!(e, SessionError::Timeout { .. }),
        batch,
        reply,
    }
}

#[cfg(test)]
mod tests {
    use postern_smtp::client::{Phase, SessionError};

    use super::broken;
    use crate::message::Batch;
    use crate::messages::End;

    fn lost_at_rset() -> SessionError {
        SessionError::Io {
            phase: Phase::Rset,
            source: std::io::ErrorKind::ConnectionReset.into(),
        }
    }

    #[test]
    fn a_batch_the_session_could_not_start_goes_back_unattempted() {
        let batch = || Batch::for_test("a@x.test");
        for reused in [true, false] {
            let other = SessionError::OtherClient("XCLIENT refused".into());
            assert!(matches!(broken(other, batch(), reused), End::Stale(_)));
        }
        assert!(matches!(
            broken(lost_at_rset(), batch(), true),
            End::Stale(_)
        ));
        // A fresh session that breaks at its first RSET is not stale.
        assert!(matches!(
            broken(lost_at_rset(), batch(), false),
            End::Broken { .. }
        ));
    }
}
