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

use std::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicU64, Ordering},
};

use crate::{hashing::FastMap, store::CacheStatus};

/// Cached JSON by event id, bounded in bytes.
pub struct JsonCache {
    /// Bytes of JSON one generation may hold.
    generation_bytes: usize,
    generations: Mutex<Generations>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Default)]
struct Generations {
    young: FastMap<[u8; 32], Arc<str>>,
    young_bytes: usize,
    old: FastMap<[u8; 32], Arc<str>>,
    old_bytes: usize,
}

impl JsonCache {
    /// A cache holding at most about `budget_bytes` of JSON (0 turns it off).
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            generation_bytes: budget_bytes / 2,
            generations: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Generations> {
        self.generations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The JSON of event `id`, if cached.
    pub fn get(&self, id: &[u8; 32]) -> Option<Arc<str>> {
        let found = self.lookup(id);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn lookup(&self, id: &[u8; 32]) -> Option<Arc<str>> {
        let mut g = self.lock();
        if let Some(json) = g.young.get(id) {
            return Some(Arc::clone(json));
        }
        let json = g.old.remove(id)?;
        g.old_bytes -= json.len();
        self.keep(&mut g, *id, Arc::clone(&json));
        Some(json)
    }

    /// Lookups so far and the bytes of JSON held now.
    pub fn status(&self) -> CacheStatus {
        let g = self.lock();
        CacheStatus {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: (g.young_bytes + g.old_bytes) as u64,
        }
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
            g.old_bytes = std::mem::take(&mut g.young_bytes);
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
        let status = cache.status();
        assert!(status.hits >= 1 && status.misses >= 1, "{status:?}");
        assert!(status.bytes <= 40, "{status:?}");
        let off = JsonCache::new(0);
        off.insert([1; 32], json(1));
        assert!(off.get(&[1; 32]).is_none());
    }
}
