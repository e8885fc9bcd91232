//! A queue that serves its askers in turn: round-robin over client addresses, and within
//! an address over its connections; each connection's items in the order they came.

use std::collections::{HashMap, VecDeque};

use super::{ClientAddress, Source};

/// Items queued by [`Source`], taken out fairly.
pub struct FairQueue<T> {
    /// Addresses with items, in the order they are served next.
    turns: VecDeque<ClientAddress>,
    addresses: HashMap<ClientAddress, Address<T>>,
    len: usize,
}

/// The connections of one address that have items, and their items.
struct Address<T> {
    turns: VecDeque<u64>,
    connections: HashMap<u64, VecDeque<T>>,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self {
            turns: VecDeque::new(),
            addresses: HashMap::new(),
            len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    /// Items queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `item` from `source`, after the source's earlier items.
    pub fn push(&mut self, source: Source, item: T) {
        let address = self.addresses.entry(source.address).or_insert_with(|| {
            self.turns.push_back(source.address);
            Address {
                turns: VecDeque::new(),
                connections: HashMap::new(),
            }
        });
        address
            .connections
            .entry(source.connection)
            .or_insert_with(|| {
                address.turns.push_back(source.connection);
                VecDeque::new()
            })
            .push_back(item);
        self.len += 1;
    }

    /// The next item: the oldest of the next connection of the next address. The address
    /// and the connection then go to the back of their turns.
    pub fn pop(&mut self) -> Option<T> {
        let key = self.turns.pop_front()?;
        let address = self.addresses.get_mut(&key)?;
        let connection = address.turns.pop_front()?;
        let items = address.connections.get_mut(&connection)?;
        let item = items.pop_front();
        if items.is_empty() {
            address.connections.remove(&connection);
        } else {
            address.turns.push_back(connection);
        }
        if address.turns.is_empty() {
            self.addresses.remove(&key);
        } else {
            self.turns.push_back(key);
        }
        self.len -= usize::from(item.is_some());
        item
    }

    /// Removes every item of `source` that `drop` picks; returns how many.
    pub fn remove_where(&mut self, source: Source, mut drop: impl FnMut(&T) -> bool) -> usize {
        let Some(address) = self.addresses.get_mut(&source.address) else {
            return 0;
        };
        let Some(items) = address.connections.get_mut(&source.connection) else {
            return 0;
        };
        let before = items.len();
        items.retain(|item| !drop(item));
        let removed = before - items.len();
        if items.is_empty() {
            address.connections.remove(&source.connection);
            address.turns.retain(|c| *c != source.connection);
            if address.turns.is_empty() {
                self.addresses.remove(&source.address);
                self.turns.retain(|a| *a != source.address);
            }
        }
        self.len -= removed;
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(address: u8, connection: u64) -> Source {
        Source {
            address: ClientAddress::of([10, 0, 0, address].into()),
            connection,
        }
    }

    #[test]
    fn serves_addresses_then_connections_in_turn() {
        let mut queue = FairQueue::default();
        // Address 1 floods from two connections; addresses 2 and 3 send one item each.
        for n in 0..4 {
            queue.push(source(1, 10), format!("a{n}"));
            queue.push(source(1, 11), format!("b{n}"));
        }
        queue.push(source(2, 20), "c".to_string());
        queue.push(source(3, 30), "d".to_string());
        assert_eq!(queue.len(), 10);
        let order: Vec<String> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(
            order,
            ["a0", "c", "d", "b0", "a1", "b1", "a2", "b2", "a3", "b3"]
        );
        assert!(queue.is_empty() && queue.addresses.is_empty() && queue.turns.is_empty());
    }

    #[test]
    fn removes_one_sources_items() {
        let mut queue = FairQueue::default();
        for n in 0..3 {
            queue.push(source(1, 10), n);
            queue.push(source(2, 20), 10 + n);
        }
        assert_eq!(queue.remove_where(source(1, 10), |n| *n != 1), 2);
        assert_eq!(queue.remove_where(source(1, 10), |_| true), 1);
        assert_eq!(queue.len(), 3);
        let order: Vec<u32> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(order, [10, 11, 12]);
    }
}
