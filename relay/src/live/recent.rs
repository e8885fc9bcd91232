//! Once-only delivery: the ids of the events a node delivered most recently, so that an
//! event reaching it by two paths (its own ingest, the bus, a catch-up after a bus outage)
//! is delivered once.

use std::collections::{HashSet, VecDeque};

/// How many delivered ids a node remembers.
pub const RECENT_IDS: usize = 65_536;

/// The last [`RECENT_IDS`] ids recorded, oldest forgotten first.
#[derive(Default)]
pub struct RecentIds {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl RecentIds {
    /// Records `id`; false if it was already recorded.
    pub fn insert(&mut self, id: [u8; 32]) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > RECENT_IDS
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        true
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
    fn an_id_is_fresh_once_until_it_is_forgotten() {
        let mut recent = RecentIds::default();
        assert!(recent.insert(id(0)));
        assert!(!recent.insert(id(0)));
        for n in 1..=RECENT_IDS {
            assert!(recent.insert(id(n)));
        }
        assert!(!recent.insert(id(RECENT_IDS)), "the newest is remembered");
        assert!(recent.insert(id(0)), "the oldest was forgotten");
    }
}
