//! Where the engine's outcomes go. The engine calls an [`Outcomes`] on its
//! control loop for every recipient's outcome and every bounce, so that
//! the daemon records them (spool, delivery log, metrics) without another
//! thread in between.

use crossbeam_channel::{Receiver, Sender};

use crate::Handle;
use crate::bounce::{Bounce, Settlement};
use crate::message::Body;
use crate::message::Report;

/// The receiver of the engine's outcomes. It is called on the engine's
/// control loop, inside its tokio runtime, and must never block: hand
/// slow work (disk, network) to another thread or task.
pub trait Outcomes: Send + 'static {
    /// One recipient's outcome of one attempt. Delivered outcomes are
    /// final; after a transient one the engine retries; permanent ones are
    /// final once their round settles.
    fn report(&mut self, report: Report);

    /// Permanent failures of one entry and round, to record as done; when
    /// a bounce is wanted, it is stored in the same record and then queued
    /// with `engine.submit`.
    fn settle(&mut self, settlement: Settlement, engine: &Handle);
}

/// Outcomes into channels: for tests, and for users that read them on
/// threads of their own.
#[derive(Debug, Clone)]
pub struct Channels {
    reports: Sender<Report>,
    bounces: Sender<Bounce>,
}

impl Channels {
    /// The sink and the receivers of its reports and bounces.
    pub fn new() -> (Channels, Receiver<Report>, Receiver<Bounce>) {
        let (reports, reports_rx) = crossbeam_channel::unbounded();
        let (bounces, bounces_rx) = crossbeam_channel::unbounded();
        (Channels { reports, bounces }, reports_rx, bounces_rx)
    }
}

impl Outcomes for Channels {
    fn report(&mut self, report: Report) {
        // A receiver that is gone wants no more reports.
        let _ = self.reports.send(report);
    }

    /// Renders the bounce with a body held in memory (as tests and the
    /// benchmark driver have them).
    fn settle(&mut self, settlement: Settlement, _: &Handle) {
        let Body::Memory(body) = &settlement.message.body else {
            return;
        };
        if let Some(bounce) = settlement.bounce(body) {
            let _ = self.bounces.send(bounce);
        }
    }
}
