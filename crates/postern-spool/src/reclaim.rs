//! Reclaiming space anywhere in the log: a segment that is at most a
//! quarter live has its live messages copied forward (with their state as
//! now), tombstones written for finished messages an older segment still
//! holds, and is then retired: kept as a spare for a later segment to
//! overwrite, or deleted. Work per pass is bounded, and a segment
//! whose reclaiming would copy more than it frees waits until the older
//! segments it depends on are gone.

use crate::record::{Record, decode_in};
use crate::writer::Writer;
use crate::{live::Plan, log};

/// Segments reclaimed per pass at most.
const PER_PASS: usize = 4;

/// Copying this much is always worth it, however small the segment.
const MIN_COPY: u64 = 1024 * 1024;

impl Writer {
    /// One pass: the emptiest segments first.
    pub(crate) fn reclaim(&mut self) {
        for _ in 0..PER_PASS {
            let (current, _) = self.log.position();
            let candidate = {
                let mut live = self.shared.live();
                let emptiest = live
                    .segments
                    .iter()
                    .filter(|(n, s)| **n != current && !s.deferred && s.live_bytes * 4 <= s.size)
                    .min_by_key(|(_, s)| (s.live_bytes * 1000) / s.size.max(1))
                    .map(|(n, s)| (*n, s.size));
                emptiest.map(|(n, size)| (n, size, live.plan(n)))
            };
            let Some((segment, size, plan)) = candidate else {
                return;
            };
            if plan.cost() > size.max(MIN_COPY) || self.carry(&plan).is_err() {
                if let Some(s) = self.shared.live().segments.get_mut(&segment) {
                    s.deferred = true;
                }
                continue;
            }
            if self.log.retire(segment, self.room_for_spare()).is_err() {
                return;
            }
            self.shared.live().delete(segment);
            metrics::counter!(postern_metrics::SPOOL_RECLAIMED).increment(1);
            metrics::counter!(postern_metrics::SPOOL_COPIED_BYTES).increment(plan.cost());
        }
    }

    /// Writes the plan's copies and tombstones with one fsync.
    fn carry(&mut self, plan: &Plan) -> Result<(), ()> {
        if plan.copies.is_empty() && plan.tombstones.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for &loc in &plan.copies {
            bytes.push((log::read(self.log.dir(), loc).map_err(|_| ())?, loc.segment));
        }
        let mut messages = Vec::new();
        let key = self.log.key();
        {
            let live = self.shared.live();
            for (b, segment) in &bytes {
                let Some((
                    Record::Message {
                        mut envelope, body, ..
                    },
                    _,
                )) = decode_in(b, key.owner(*segment))
                else {
                    return Err(());
                };
                if live.bring_up_to_date(&mut envelope) {
                    messages.push(Record::Message {
                        envelope,
                        body,
                        completes: Vec::new(),
                    });
                }
            }
        }
        let tombstones: Vec<Record<'static>> = plan
            .tombstones
            .iter()
            .map(|&id| Record::Gone { id })
            .collect();
        self.write(&tombstones, &messages).map_err(|_| ())
    }
}
