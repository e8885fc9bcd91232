//! Gap detection: what a receiver knows of each other node's numbered envelopes.
//!
//! Each node numbers what it publishes (per run, from 1). A receiver that sees a number
//! jump, or a heartbeat naming a number it never received, knows envelopes were lost (a
//! failed or dropped publish, a full queue, a silent link) and has the relay catch up from
//! the store. A number already seen is a duplicate (a publish retried after an unanswered
//! attempt that had reached Redis) and is dropped.

use std::{collections::HashMap, sync::Arc};

/// What one numbered envelope or heartbeat means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The next one, or the first from this node: deliver.
    InOrder,
    /// `missed` envelopes before this one never arrived (deliver an event all the same).
    Gap {
        /// How many.
        missed: u64,
    },
    /// The node started again (a new run): what its last run published last may be lost.
    Restarted,
    /// Already received, or from a run that has ended: drop.
    Duplicate,
}

/// The last number received from each node, in its current run.
#[derive(Debug, Default)]
pub struct Sequences {
    last: HashMap<Arc<str>, (u64, u64)>,
}

impl Sequences {
    /// Records an event numbered `seq` in run `epoch` of `origin` (`heartbeat`: the node's
    /// heartbeat saying it had handed out numbers up to `seq`). Unnumbered envelopes (from
    /// nodes older than numbering) are always in order.
    pub fn observe(&mut self, origin: &Arc<str>, epoch: u64, seq: u64, heartbeat: bool) -> Seen {
        if seq == 0 && epoch == 0 {
            return Seen::InOrder;
        }
        let Some((known_epoch, last)) = self.last.get_mut(origin) else {
            // A node heard of for the first time: what it sent before is not this
            // receiver's to know (it catches up from the store when it starts).
            self.last.insert(Arc::clone(origin), (epoch, seq));
            return Seen::InOrder;
        };
        if epoch < *known_epoch {
            return Seen::Duplicate;
        }
        if epoch > *known_epoch {
            (*known_epoch, *last) = (epoch, seq);
            return Seen::Restarted;
        }
        let expected = *last + 1;
        if heartbeat {
            if seq > *last {
                let missed = seq - *last;
                *last = seq;
                return Seen::Gap { missed };
            }
            return Seen::InOrder;
        }
        if seq < expected {
            return Seen::Duplicate;
        }
        *last = seq;
        if seq > expected {
            Seen::Gap {
                missed: seq - expected,
            }
        } else {
            Seen::InOrder
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_order_gaps_duplicates_heartbeats_and_restarts() {
        let mut seen = Sequences::default();
        let a: Arc<str> = "a".into();
        assert_eq!(seen.observe(&a, 1, 5, false), Seen::InOrder, "first heard");
        assert_eq!(seen.observe(&a, 1, 6, false), Seen::InOrder);
        assert_eq!(seen.observe(&a, 1, 6, false), Seen::Duplicate);
        assert_eq!(seen.observe(&a, 1, 9, false), Seen::Gap { missed: 2 });
        assert_eq!(
            seen.observe(&a, 1, 9, true),
            Seen::InOrder,
            "a heartbeat, nothing lost"
        );
        assert_eq!(
            seen.observe(&a, 1, 11, true),
            Seen::Gap { missed: 2 },
            "the last ones lost"
        );
        assert_eq!(seen.observe(&a, 1, 11, false), Seen::Duplicate);
        assert_eq!(seen.observe(&a, 1, 12, false), Seen::InOrder);
        assert_eq!(seen.observe(&a, 2, 1, false), Seen::Restarted);
        assert_eq!(
            seen.observe(&a, 1, 13, false),
            Seen::Duplicate,
            "an ended run"
        );
        assert_eq!(seen.observe(&a, 2, 2, false), Seen::InOrder);
        assert_eq!(seen.observe(&a, 0, 0, false), Seen::InOrder, "unnumbered");
        let b: Arc<str> = "b".into();
        assert_eq!(seen.observe(&b, 7, 1, true), Seen::InOrder);
    }
}
