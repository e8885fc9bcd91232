//! Once-only delivery: the ids of the events a node delivered lately, so that an event
//! reaching it by two paths (its own ingest, the bus, a catch-up from the store) is
//! delivered once.
//!
//! Ids are kept for a span of time, not a number of events: a catch-up replays at most
//! the last [`catch_up::LOOKBACK`](super::catch_up::LOOKBACK) before its trigger, and every
//! id delivered in that span is still here, however many events it held (up to
//! [`MAX_IDS`], a bound on memory that a relay reaches only past ~30 000 events a second).
//! While the bus is away nothing is forgotten ([`RecentIds::hold`]), so the replay after a
//! long outage finds what was delivered just before it.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use crate::hashing::FastSet;

/// How long an id is remembered (while the bus is up).
pub const RETENTION: Duration = Duration::from_secs(60);

/// Most ids remembered at once; past it the oldest go first.
pub const MAX_IDS: usize = 1 << 21;

/// The ids recorded in the last [`RETENTION`], oldest forgotten first.
#[derive(Default)]
pub struct RecentIds {
    set: FastSet<[u8; 32]>,
    order: VecDeque<([u8; 32], Instant)>,
    held: bool,
}

impl RecentIds {
    /// Records `id`, delivered at `now`; false if it was already recorded.
    pub fn insert(&mut self, id: [u8; 32], now: Instant) -> bool {
        if !self.held {
            while let Some((oldest, at)) = self.order.front().copied() {
                if now.duration_since(at) < RETENTION {
                    break;
                }
                self.order.pop_front();
                self.set.remove(&oldest);
            }
        }
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back((id, now));
        if self.order.len() > MAX_IDS
            && let Some((oldest, _)) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        true
    }

    /// Stops (`true`) or resumes forgetting by age: held while the bus is away.
    pub fn hold(&mut self, held: bool) {
        self.held = held;
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> [u8; 32] {
        let mut id = [0; 32];
        id[..8].copy_from_slice(&(n as u64).to_be_bytes());
        id
    }

    #[test]
    fn an_id_is_fresh_once_until_it_is_old_unless_held() {
        let start = Instant::now();
        let mut recent = RecentIds::default();
        assert!(recent.insert(id(0), start));
        assert!(!recent.insert(id(0), start + RETENTION / 2));
        for n in 1..=100_000 {
            assert!(recent.insert(id(n), start + RETENTION / 2));
        }
        assert!(
            !recent.insert(id(0), start + RETENTION / 2),
            "a count does not forget"
        );
        recent.hold(true);
        let later = start + RETENTION * 3;
        assert!(!recent.insert(id(1), later), "held: nothing is forgotten");
        recent.hold(false);
        assert!(recent.insert(id(0), later), "old enough to be forgotten");
        assert_eq!(recent.len(), 1);
    }
}
