//! Live fan-out: which open subscriptions want a new event.
//!
//! Each worker thread has one [`LiveIndex`] actor holding only that thread's subscriptions,
//! so registering and matching take no locks. The [`Fanout`] hub hands every accepted event
//! (and every event other nodes published) to each thread's index.
//!
//! Every filter is filed under one key — its ids, else its authors, else the values of its
//! first tag condition, else its kinds — or, with none of those, in a short list checked for
//! every event. An event looks up only the keys it carries, so matching costs about the
//! number of candidate filters, not the number of subscriptions.

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
};

use actix::{Actor, Addr, Context, Handler, Message, Recipient};
use futures_util::StreamExt;
use smallvec::SmallVec;
use starling_cluster::{Bus, Envelope};

use super::subscription::{LiveEvent, Subscription};
use crate::metrics::Metrics;
use crate::nostr::{Event, Filter, VerifiedEvent};

/// (subscription key, index of the filter within the subscription).
type Slot = (u64, usize);

/// The slots filed under one key: most keys (an author, an id) have one, held inline.
type Slots = SmallVec<[Slot; 1]>;

/// Subscriptions and the keys their filters are filed under. `T` is whatever receives
/// matches (a subscription's address in the relay).
pub struct Index<T> {
    subscriptions: HashMap<u64, (Arc<[Filter]>, T)>,
    by_id: HashMap<[u8; 32], Slots>,
    by_author: HashMap<[u8; 32], Slots>,
    by_kind: HashMap<u16, Slots>,
    by_tag: HashMap<u8, HashMap<Box<str>, Slots>>,
    unkeyed: Vec<Slot>,
}

impl<T> Default for Index<T> {
    fn default() -> Self {
        Self {
            subscriptions: HashMap::new(),
            by_id: HashMap::new(),
            by_author: HashMap::new(),
            by_kind: HashMap::new(),
            by_tag: HashMap::new(),
            unkeyed: Vec::new(),
        }
    }
}

impl<T> Index<T> {
    /// Adds a subscription under `key` (replacing one with the same key).
    pub fn insert(&mut self, key: u64, filters: Arc<[Filter]>, target: T) {
        self.remove(key);
        for (n, filter) in filters.iter().enumerate().filter(|(_, f)| f.can_match()) {
            let slot = (key, n);
            if let Some(ids) = &filter.ids {
                ids.iter()
                    .for_each(|id| self.by_id.entry(*id).or_default().push(slot));
            } else if let Some(authors) = &filter.authors {
                authors
                    .iter()
                    .for_each(|a| self.by_author.entry(*a).or_default().push(slot));
            } else if let Some(tag) = filter.tags.first() {
                let values = self.by_tag.entry(tag.letter).or_default();
                tag.values
                    .iter()
                    .for_each(|v| values.entry(v.as_str().into()).or_default().push(slot));
            } else if let Some(kinds) = &filter.kinds {
                kinds
                    .iter()
                    .for_each(|k| self.by_kind.entry(*k).or_default().push(slot));
            } else {
                self.unkeyed.push(slot);
            }
        }
        self.subscriptions.insert(key, (filters, target));
    }

    /// Removes the subscription under `key`, if any.
    pub fn remove(&mut self, key: u64) -> Option<T> {
        let (filters, target) = self.subscriptions.remove(&key)?;
        fn drop_slot<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Slots>, k: &K, key: u64) {
            if let Some(slots) = map.get_mut(k) {
                slots.retain(|s| s.0 != key);
                if slots.is_empty() {
                    map.remove(k);
                }
            }
        }
        for filter in filters.iter() {
            if let Some(ids) = &filter.ids {
                ids.iter()
                    .for_each(|id| drop_slot(&mut self.by_id, id, key));
            } else if let Some(authors) = &filter.authors {
                authors
                    .iter()
                    .for_each(|a| drop_slot(&mut self.by_author, a, key));
            } else if let Some(tag) = filter.tags.first() {
                if let Some(values) = self.by_tag.get_mut(&tag.letter) {
                    tag.values
                        .iter()
                        .for_each(|v| drop_slot(values, &Box::from(v.as_str()), key));
                }
            } else if let Some(kinds) = &filter.kinds {
                kinds
                    .iter()
                    .for_each(|k| drop_slot(&mut self.by_kind, k, key));
            }
        }
        self.unkeyed.retain(|s| s.0 != key);
        Some(target)
    }

    /// Every subscription with a filter the event satisfies, each once.
    pub fn matches(&self, event: &Event) -> Vec<&T> {
        let mut keys: Vec<u64> = Vec::new();
        let mut check = |slots: Option<&[Slot]>| {
            for &(key, n) in slots.into_iter().flatten() {
                if let Some((filters, _)) = self.subscriptions.get(&key)
                    && filters[n].matches(event)
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

/// Registers a subscription's filters in its thread's index.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    /// Unique key of the subscription.
    pub key: u64,
    /// Its filters.
    pub filters: Arc<[Filter]>,
    /// Where matching events go.
    pub target: Addr<Subscription>,
}

/// Removes a subscription from its thread's index.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister(pub u64);

/// A new event for every matching subscription of this thread.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Deliver(pub Arc<VerifiedEvent>);

/// The actor owning one worker thread's [`Index`].
#[derive(Default)]
pub struct LiveIndex {
    index: Index<Addr<Subscription>>,
}

impl Actor for LiveIndex {
    type Context = Context<Self>;
}

impl Handler<Register> for LiveIndex {
    type Result = ();
    fn handle(&mut self, msg: Register, _: &mut Context<Self>) {
        self.index.insert(msg.key, msg.filters, msg.target);
    }
}

impl Handler<Unregister> for LiveIndex {
    type Result = ();
    fn handle(&mut self, msg: Unregister, _: &mut Context<Self>) {
        self.index.remove(msg.0);
    }
}

impl Handler<Deliver> for LiveIndex {
    type Result = ();
    fn handle(&mut self, msg: Deliver, _: &mut Context<Self>) {
        for target in self.index.matches(&msg.0.event) {
            target.do_send(LiveEvent(Arc::clone(&msg.0)));
        }
    }
}

thread_local! {
    static THIS_THREAD: RefCell<Option<Addr<LiveIndex>>> = const { RefCell::new(None) };
}

/// Ids of the events delivered most recently, so that an event reaching this node by two
/// paths (its own ingest, the bus, a catch-up after a bus outage) is delivered once.
struct RecentIds {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

/// How many delivered ids a node remembers.
const RECENT_IDS: usize = 65_536;

impl RecentIds {
    /// Records `id`; false if it was already recorded.
    fn insert(&mut self, id: [u8; 32]) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > RECENT_IDS {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
        true
    }
}

/// Hands accepted events to every worker thread's index and to the cluster bus, and
/// delivers events other nodes published. Every path into the live indexes passes through
/// [`Fanout::deliver`], which delivers each event once.
pub struct Fanout {
    indexes: Mutex<Vec<Recipient<Deliver>>>,
    recent: Mutex<RecentIds>,
    bus: Arc<dyn Bus>,
    node_id: Arc<str>,
    metrics: Arc<Metrics>,
}

/// Sends `msg` to the calling worker thread's index, if it has been started. A subscription
/// runs on its connection's thread, whose index the connection started, so it reaches its
/// index this way without holding an address of its own.
pub fn send_to_local_index<M>(msg: M)
where
    M: Message + Send + 'static,
    M::Result: Send,
    LiveIndex: Handler<M>,
{
    THIS_THREAD.with(|cell| {
        if let Some(index) = cell.borrow().as_ref() {
            index.do_send(msg);
        }
    });
}

impl Fanout {
    /// A hub publishing on `bus` as node `node_id`.
    pub fn new(bus: Arc<dyn Bus>, node_id: Arc<str>, metrics: Arc<Metrics>) -> Arc<Self> {
        let recent = RecentIds {
            set: HashSet::new(),
            order: VecDeque::new(),
        };
        Arc::new(Self {
            indexes: Mutex::new(Vec::new()),
            recent: Mutex::new(recent),
            bus,
            node_id,
            metrics,
        })
    }

    /// The index of the calling worker thread, started on first use. Call it from inside
    /// an actix arbiter.
    pub fn local_index(&self) -> Addr<LiveIndex> {
        THIS_THREAD.with(|cell| {
            cell.borrow_mut()
                .get_or_insert_with(|| {
                    let addr = LiveIndex::default().start();
                    self.lock_indexes().push(addr.clone().recipient());
                    addr
                })
                .clone()
        })
    }

    /// Delivers an event this node accepted to local subscribers and publishes it to the
    /// other nodes.
    pub fn publish(&self, event: Arc<VerifiedEvent>) {
        let payload = bytes::Bytes::copy_from_slice(event.json.as_bytes());
        self.deliver(event);
        self.bus.publish(Envelope {
            origin: Arc::clone(&self.node_id),
            payload,
            sent_at_micros: starling_cluster::now_micros(),
        });
        self.metrics.bus_published.add(1, &[]);
    }

    /// Delivers an event to this node's live subscribers only, unless it was delivered
    /// recently already.
    pub fn deliver(&self, event: Arc<VerifiedEvent>) {
        let fresh = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(event.event.id);
        if !fresh {
            return;
        }
        for index in self.lock_indexes().iter() {
            index.do_send(Deliver(Arc::clone(&event)));
        }
    }

    /// Delivers what other nodes publish on the bus, until the bus ends.
    pub async fn receive_from_bus(self: Arc<Self>) {
        let mut envelopes = self.bus.subscribe();
        while let Some(envelope) = envelopes.next().await {
            if envelope.origin == self.node_id {
                continue;
            }
            self.metrics.bus_received.add(1, &[]);
            let latency = starling_cluster::now_micros().saturating_sub(envelope.sent_at_micros);
            self.metrics.bus_latency.record(latency as f64 / 1e6, &[]);
            match std::str::from_utf8(&envelope.payload) {
                Ok(json) => self.deliver_json(json),
                Err(_) => {
                    tracing::warn!(origin = %envelope.origin, "dropping a non-UTF-8 payload from the bus")
                }
            }
        }
    }

    /// Delivers an event given as JSON by another node or read back from the store.
    pub fn deliver_json(&self, json: &str) {
        match Event::parse(json) {
            Ok(event) => self.deliver(Arc::new(VerifiedEvent::trusted(event))),
            Err(error) => tracing::warn!(%error, "dropping a malformed event from the cluster"),
        }
    }

    fn lock_indexes(&self) -> std::sync::MutexGuard<'_, Vec<Recipient<Deliver>>> {
        self.indexes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let mut index = Index::default();
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
        let mut index = Index::default();
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
        assert!(index.by_tag.values().all(HashMap::is_empty));
    }
}
