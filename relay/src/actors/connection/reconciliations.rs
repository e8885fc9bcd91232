//! A connection's NIP-77 reconciliations by subscription id: opening (its records being
//! read) or open (ready for messages).

use std::collections::HashMap;

use negentropy::{Negentropy, NegentropyStorageVector};

/// A reconciliation in progress.
pub type Reconciliation = Negentropy<'static, NegentropyStorageVector>;

enum State {
    /// Its records are being read (the number tells this opening from a later one).
    Opening(u64),
    /// Ready for messages.
    Open(Box<Reconciliation>),
}

/// A connection's reconciliations.
#[derive(Default)]
pub struct Reconciliations {
    by_id: HashMap<String, State>,
    opened: u64,
}

impl Reconciliations {
    /// How many are opening or open.
    pub fn count(&self) -> usize {
        self.by_id.len()
    }

    /// Forgets `sub_id`'s, if any.
    pub fn remove(&mut self, sub_id: &str) {
        self.by_id.remove(sub_id);
    }

    /// Records that `sub_id`'s is opening; the number to finish it with.
    pub fn opening(&mut self, sub_id: String) -> u64 {
        self.opened += 1;
        self.by_id.insert(sub_id, State::Opening(self.opened));
        self.opened
    }

    /// Whether `sub_id`'s is still the opening numbered `n` (not closed or replaced since);
    /// forgets it if so, for [`Reconciliations::open`] to put it back.
    pub fn finish_opening(&mut self, sub_id: &str, n: u64) -> bool {
        let current = matches!(self.by_id.get(sub_id), Some(State::Opening(m)) if *m == n);
        if current {
            self.by_id.remove(sub_id);
        }
        current
    }

    /// Keeps `sub_id`'s, ready for messages.
    pub fn open(&mut self, sub_id: String, reconciliation: Reconciliation) {
        self.by_id
            .insert(sub_id, State::Open(Box::new(reconciliation)));
    }

    /// `sub_id`'s, if it is open.
    pub fn get_open(&mut self, sub_id: &str) -> Option<&mut Reconciliation> {
        match self.by_id.get_mut(sub_id) {
            Some(State::Open(reconciliation)) => Some(reconciliation),
            _ => None,
        }
    }
}
