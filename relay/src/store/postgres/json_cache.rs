//! The JSON cache: recently read and written events' canonical JSON, by id.
//!
//! An event never changes once stored (a replacement or a deletion removes it; it is never
//! rewritten), so a cached copy is always right. A query therefore asks PostgreSQL only for
//! the ids and times of its matches, which an index answers alone, and then for the JSON of
//! the ids not cached: a hot set of events is served without reading, decompressing and
//! sending their rows again. Whether an event still exists is always PostgreSQL's answer.
//!
//! Two generations bound the memory: new entries go to the young one; when it holds half the
//! budget, it becomes the old one (dropping the previous old one). A hit in the old
//! generation moves the entry back to the young one.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

/// Cached JSON by event id, bounded in bytes.
pub struct JsonCache {
    /// Bytes of JSON one generation may hold.
    generation_bytes: usize,
    generations: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    young: HashMap<[u8; 32], Arc<str>>,
    young_bytes: usize,
    old: HashMap<[u8; 32], Arc<str>>,
}

impl JsonCache {
    /// A cache holding at most about `budget_bytes` of JSON (0 turns it off).
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            generation_bytes: budget_bytes / 2,
            generations: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Generations> {
        self.generations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The JSON of event `id`, if cached.
    pub fn get(&self, id: &[u8; 32]) -> Option<Arc<str>> {
        let mut g = self.lock();
        if let Some(json) = g.young.get(id) {
            return Some(Arc::clone(json));
        }
        let json = g.old.remove(id)?;
        self.keep(&mut g, *id, Arc::clone(&json));
        Some(json)
    }

    /// Caches the JSON of event `id`.
    pub fn insert(&self, id: [u8; 32], json: Arc<str>) {
        if self.generation_bytes > 0 {
            let mut g = self.lock();
            self.keep(&mut g, id, json);
        }
    }

    fn keep(&self, g: &mut Generations, id: [u8; 32], json: Arc<str>) {
        g.young_bytes += json.len();
        g.young.insert(id, json);
        if g.young_bytes > self.generation_bytes {
            g.old = std::mem::take(&mut g.young);
            g.young_bytes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_recent_entries_within_its_budget() {
        let cache = JsonCache::new(40);
        let json = |n: u8| -> Arc<str> { format!("{n:010}").into() };
        for n in 0..10 {
            cache.insert([n; 32], json(n));
        }
        // Budget 40: generations of 20 bytes, two entries each; the newest survive.
        assert!(cache.get(&[0; 32]).is_none());
        assert_eq!(cache.get(&[9; 32]).as_deref(), Some("0000000009"));
        let cached = (0..10).filter(|n| cache.get(&[*n; 32]).is_some()).count();
        assert!(cached <= 4, "{cached} entries cached");
        let off = JsonCache::new(0);
        off.insert([1; 32], json(1));
        assert!(off.get(&[1; 32]).is_none());
    }
}
