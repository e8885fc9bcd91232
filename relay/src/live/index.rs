//! The live filters of open subscriptions, filed so that a new event finds the few that
//! could match it.
//!
//! Every filter is filed under one key: its ids, else its authors, else the values of its
//! first tag condition, else its kinds; with none of those, it goes in a short list checked
//! for every event. An event looks up only the keys it carries, so matching costs about the
//! number of candidate filters, not the number of subscriptions. The index is plain data:
//! `T` is whatever receives matches (in the relay, a subscription actor's address).

use std::sync::Arc;

use smallvec::SmallVec;

use crate::{
    hashing::FastMap,
    nostr::{Event, Filter, filter::ContentWords},
};

/// One filter of one subscription: (the subscription's key, the filter's position in it).
type FilterRef = (u64, usize);

/// The filters filed under one key: most keys (an author, an id) have one, held inline.
type FilterRefs = SmallVec<[FilterRef; 1]>;

/// Subscriptions and the keys their filters are filed under. `T` is whatever receives
/// matches (a subscription's address in the relay).
pub struct FilterIndex<T> {
    subscriptions: FastMap<u64, (Arc<[Filter]>, T)>,
    by_id: FastMap<[u8; 32], FilterRefs>,
    by_author: FastMap<[u8; 32], FilterRefs>,
    by_kind: FastMap<u16, FilterRefs>,
    by_tag: FastMap<u8, FastMap<Box<str>, FilterRefs>>,
    unkeyed: Vec<FilterRef>,
}

impl<T> Default for FilterIndex<T> {
    fn default() -> Self {
        Self {
            subscriptions: FastMap::default(),
            by_id: FastMap::default(),
            by_author: FastMap::default(),
            by_kind: FastMap::default(),
            by_tag: FastMap::default(),
            unkeyed: Vec::new(),
        }
    }
}

impl<T> FilterIndex<T> {
    /// Adds a subscription under `key` (replacing one with the same key).
    pub fn insert(&mut self, key: u64, filters: Arc<[Filter]>, target: T) {
        self.remove(key);
        for (n, filter) in filters.iter().enumerate().filter(|(_, f)| f.can_match()) {
            let filed = (key, n);
            if let Some(ids) = &filter.ids {
                ids.iter()
                    .for_each(|id| self.by_id.entry(*id).or_default().push(filed));
            } else if let Some(authors) = &filter.authors {
                authors
                    .iter()
                    .for_each(|a| self.by_author.entry(*a).or_default().push(filed));
            } else if let Some(tag) = filter.tags.first() {
                let values = self.by_tag.entry(tag.letter).or_default();
                tag.values
                    .iter()
                    .for_each(|v| values.entry(v.as_str().into()).or_default().push(filed));
            } else if let Some(kinds) = &filter.kinds {
                kinds
                    .iter()
                    .for_each(|k| self.by_kind.entry(*k).or_default().push(filed));
            } else {
                self.unkeyed.push(filed);
            }
        }
        self.subscriptions.insert(key, (filters, target));
    }

    /// Removes the subscription under `key`, if any.
    pub fn remove(&mut self, key: u64) -> Option<T> {
        let (filters, target) = self.subscriptions.remove(&key)?;
        fn unfile<K: std::hash::Hash + Eq>(map: &mut FastMap<K, FilterRefs>, k: &K, key: u64) {
            if let Some(refs) = map.get_mut(k) {
                refs.retain(|r| r.0 != key);
                if refs.is_empty() {
                    map.remove(k);
                }
            }
        }
        for filter in filters.iter() {
            if let Some(ids) = &filter.ids {
                ids.iter().for_each(|id| unfile(&mut self.by_id, id, key));
            } else if let Some(authors) = &filter.authors {
                authors
                    .iter()
                    .for_each(|a| unfile(&mut self.by_author, a, key));
            } else if let Some(tag) = filter.tags.first() {
                if let Some(values) = self.by_tag.get_mut(&tag.letter) {
                    tag.values
                        .iter()
                        .for_each(|v| unfile(values, &Box::from(v.as_str()), key));
                }
            } else if let Some(kinds) = &filter.kinds {
                kinds.iter().for_each(|k| unfile(&mut self.by_kind, k, key));
            }
        }
        self.unkeyed.retain(|r| r.0 != key);
        Some(target)
    }

    /// Every subscription with a filter the event satisfies, each once. The words of the
    /// event's content are cut once, however many search filters it is checked against.
    pub fn matches(&self, event: &Event) -> Vec<&T> {
        let mut keys: Vec<u64> = Vec::new();
        let content = ContentWords::new(event);
        let mut check = |refs: Option<&[FilterRef]>| {
            for &(key, n) in refs.into_iter().flatten() {
                if let Some((filters, _)) = self.subscriptions.get(&key)
                    && filters[n].matches_with(event, &content)
                {
                    keys.push(key);
                }
            }
        };
        check(self.by_id.get(&event.id).map(|s| &s[..]));
        check(self.by_author.get(&event.pubkey).map(|s| &s[..]));
        check(self.by_kind.get(&event.kind).map(|s| &s[..]));
        for (letter, value) in event.indexed_tags() {
            check(
                self.by_tag
                    .get(&letter)
                    .and_then(|values| values.get(value))
                    .map(|s| &s[..]),
            );
        }
        check(Some(&self.unkeyed[..]));
        keys.sort_unstable();
        keys.dedup();
        keys.iter()
            .filter_map(|k| self.subscriptions.get(k).map(|(_, t)| t))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nostr::Keys;

    fn filters(json: &[&str]) -> Arc<[Filter]> {
        json.iter().map(|f| Filter::parse(f).unwrap()).collect()
    }

    #[test]
    fn finds_each_kind_of_key_and_reports_a_subscription_once() {
        let keys = Keys::from_secret([3; 32]).unwrap();
        let author = crate::nostr::hex::encode(&keys.pubkey());
        let event = keys.sign(10, 1, vec![vec!["t".into(), "rust".into()]], "x");
        let id = event.id_hex();
        let mut index = FilterIndex::default();
        index.insert(1, filters(&[&format!(r#"{{"ids":["{id}"]}}"#)]), "by-id");
        index.insert(
            2,
            filters(&[&format!(r#"{{"authors":["{author}"],"kinds":[1]}}"#)]),
            "by-author",
        );
        index.insert(3, filters(&[r##"{"#t":["rust"]}"##]), "by-tag");
        index.insert(4, filters(&[r#"{"kinds":[1]}"#]), "by-kind");
        index.insert(5, filters(&["{}", r#"{"kinds":[1]}"#]), "twice");
        index.insert(6, filters(&[r#"{"kinds":[2]}"#, r#"{"since":11}"#]), "no");
        index.insert(7, filters(&[r#"{"kinds":[]}"#]), "never");
        let mut got: Vec<&str> = index.matches(&event).into_iter().copied().collect();
        got.sort_unstable();
        assert_eq!(
            got,
            vec!["by-author", "by-id", "by-kind", "by-tag", "twice"]
        );
    }

    #[test]
    fn removal_leaves_no_trace() {
        let event = Keys::from_secret([3; 32]).unwrap().sign(
            10,
            1,
            vec![vec!["t".into(), "rust".into()]],
            "x",
        );
        let mut index = FilterIndex::default();
        index.insert(
            1,
            filters(&[r##"{"#t":["rust"]}"##, r#"{"kinds":[1]}"#, "{}"]),
            'a',
        );
        index.insert(2, filters(&[r#"{"kinds":[1]}"#]), 'b');
        assert_eq!(index.remove(1), Some('a'));
        assert_eq!(index.matches(&event), vec![&'b']);
        assert_eq!(index.remove(2), Some('b'));
        assert!(index.subscriptions.is_empty());
        assert!(index.by_kind.is_empty() && index.unkeyed.is_empty());
        assert!(index.by_tag.values().all(|values| values.is_empty()));
    }
}
