//! How much the node holds, within its caps: its open connections (also kept so that a
//! stopping node can close each of them) and its open subscriptions.

use std::{
    collections::HashMap,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use actix::{Message, Recipient};

/// The node is stopping: the connection closes with code 1001 (going away).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Every open connection, by its number on this node.
#[derive(Default)]
pub struct Connections {
    /// Admitted connections; the address to close them with once they have started.
    open: Mutex<HashMap<u64, Option<Recipient<Shutdown>>>>,
    next: AtomicU64,
}

impl Connections {
    /// Admits a new connection unless `max` are open; its number on this node.
    pub fn admit(&self, max: usize) -> Option<u64> {
        let mut open = self.lock();
        if open.len() >= max {
            return None;
        }
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        open.insert(key, None);
        Some(key)
    }

    /// Records how to close admitted connection `key`.
    pub fn register(&self, key: u64, connection: Recipient<Shutdown>) {
        if let Some(slot) = self.lock().get_mut(&key) {
            *slot = Some(connection);
        }
    }

    /// Forgets a connection that closed (or never started).
    pub fn release(&self, key: u64) {
        self.lock().remove(&key);
    }

    /// Tells every open connection to close; returns how many there were.
    pub fn shut_down_all(&self) -> usize {
        let open: Vec<Recipient<Shutdown>> = self.lock().values().flatten().cloned().collect();
        for connection in &open {
            connection.do_send(Shutdown);
        }
        open.len()
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Option<Recipient<Shutdown>>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How many subscriptions are open on the node.
#[derive(Default)]
pub struct Subscriptions(AtomicUsize);

impl Subscriptions {
    /// Counts a new subscription unless `max` are open; whether it was counted.
    pub fn admit(&self, max: usize) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < max).then_some(open + 1)
            })
            .is_ok()
    }

    /// Forgets a subscription that ended.
    pub fn release(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_cap() {
        let connections = Connections::default();
        let a = connections.admit(2).expect("room");
        let _b = connections.admit(2).expect("room");
        assert!(connections.admit(2).is_none());
        connections.release(a);
        assert!(connections.admit(2).is_some());
        let subscriptions = Subscriptions::default();
        assert!(subscriptions.admit(1));
        assert!(!subscriptions.admit(1));
        subscriptions.release();
        assert!(subscriptions.admit(1));
    }
}
