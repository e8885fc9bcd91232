//! The open connections of a node, so that a stopping node can close each of them.

use std::{
    collections::HashMap,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use actix::{Message, Recipient};

/// The node is stopping: the connection closes with code 1001 (going away).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Every open connection, by a key of its own.
#[derive(Default)]
pub struct Connections {
    open: Mutex<HashMap<u64, Recipient<Shutdown>>>,
    next: AtomicU64,
}

impl Connections {
    /// Records an open connection; returns the key to [`Connections::unregister`] it with.
    pub fn register(&self, connection: Recipient<Shutdown>) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(key, connection);
        key
    }

    /// Forgets a closed connection.
    pub fn unregister(&self, key: u64) {
        self.lock().remove(&key);
    }

    /// Tells every open connection to close; returns how many there were.
    pub fn shut_down_all(&self) -> usize {
        let open: Vec<Recipient<Shutdown>> = self.lock().values().cloned().collect();
        for connection in &open {
            connection.do_send(Shutdown);
        }
        open.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Recipient<Shutdown>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}
