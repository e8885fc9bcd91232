//! Store queries in fair shares: every page a subscription reads and every count is
//! admitted here before it runs.
//!
//! 1. **Budgets.** The asker's connection and address each have a [`WorkBudget`] of store
//!    time a minute; an asker past either waits until it has refilled (while others go
//!    first), or is refused when the wait would be longer than [`MAX_BUDGET_WAIT`].
//! 2. **Per connection.** A connection has at most `max_queries_per_connection` statements
//!    running; its other subscriptions wait their turn.
//! 3. **Node-wide turns.** At most `capacity` statements run on the node at once; waiting
//!    askers are served in turn by address and connection ([`FairQueue`]), so a cheap
//!    request waits behind at most one slice of each other asker.
//!
//! The statement runs in a task of its own that holds the places it took: when its
//! requester goes away the task is cancelled through the store and gives the places back
//! only once the statement has stopped.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::addresses::AddressState;
use crate::{
    fair::{FairQueue, Source},
    policy::WorkBudget,
    store::{Cancel, StoreError},
};

/// The longest a request waits for its budget to refill before it is refused.
pub const MAX_BUDGET_WAIT: Duration = Duration::from_secs(10);

/// Who asks for store work, and what it may still spend.
#[derive(Clone)]
pub struct Asker {
    /// The connection and its address.
    pub source: Source,
    /// The address's shared state (its budget among it).
    pub address: Arc<AddressState>,
    /// The connection's own budget.
    pub budget: Arc<Mutex<WorkBudget>>,
    /// The connection's places for running statements.
    pub running: Arc<Semaphore>,
}

/// Why a read was not done.
#[derive(Debug)]
pub enum Refusal {
    /// The asker spent its store time; it may ask again later.
    OverBudget,
    /// The asker went away (the work was cancelled).
    Cancelled,
    /// The store failed.
    Store(StoreError),
}

/// The node's places for running statements, and the askers waiting for one.
pub struct Scheduler {
    state: Mutex<State>,
    capacity: usize,
}

struct State {
    running: usize,
    waiting: FairQueue<oneshot::Sender<Turn>>,
}

/// One of the node's places, given back when dropped (to the next asker in turn).
pub struct Turn {
    /// `None` once the place has been handed on.
    scheduler: Option<Arc<Scheduler>>,
}

impl Scheduler {
    /// A scheduler running at most `capacity` statements at once.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                running: 0,
                waiting: FairQueue::default(),
            }),
            capacity: capacity.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place, at once if one is free, else in `source`'s turn.
    async fn turn(self: &Arc<Self>, source: Source) -> Option<Turn> {
        let waiting = {
            let mut state = self.lock();
            if state.running < self.capacity {
                state.running += 1;
                None
            } else {
                let (give, take) = oneshot::channel();
                state.waiting.push(source, give);
                Some(take)
            }
        };
        match waiting {
            None => Some(Turn {
                scheduler: Some(Arc::clone(self)),
            }),
            Some(take) => take.await.ok(),
        }
    }

    /// Statements running now.
    pub fn running(&self) -> usize {
        self.lock().running
    }

    /// Askers waiting for a place.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(scheduler) = self.scheduler.take() else {
            return;
        };
        loop {
            let next = {
                let mut state = scheduler.lock();
                match state.waiting.pop() {
                    Some(next) => next,
                    None => {
                        state.running -= 1;
                        return;
                    }
                }
            };
            // The place goes on to the next asker still waiting; one that went away gives
            // it back, and it goes on to the one after.
            let turn = Turn {
                scheduler: Some(Arc::clone(&scheduler)),
            };
            match next.send(turn) {
                Ok(()) => return,
                Err(mut unwanted) => {
                    unwanted.scheduler = None;
                }
            }
        }
    }
}

/// The places a statement holds while it runs.
pub struct Places {
    _connection: OwnedSemaphorePermit,
    _node: Turn,
}

impl Asker {
    /// Waits until the asker may run a statement: its budgets refilled, a place of its
    /// connection and one of the node's in turn. Gives up when cancelled.
    pub async fn admit(
        &self,
        scheduler: &Arc<Scheduler>,
        cancel: &Cancel,
    ) -> Result<Places, Refusal> {
        loop {
            let now = Instant::now();
            let wait = lock(&self.budget)
                .wait(now)
                .max(self.address.budget().wait(now));
            if wait.is_zero() {
                break;
            }
            if wait > MAX_BUDGET_WAIT {
                return Err(Refusal::OverBudget);
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => return Err(Refusal::Cancelled),
            }
        }
        let connection = tokio::select! {
            permit = Arc::clone(&self.running).acquire_owned() => {
                permit.map_err(|_| Refusal::Cancelled)?
            }
            () = cancel.cancelled() => return Err(Refusal::Cancelled),
        };
        let node = tokio::select! {
            turn = scheduler.turn(self.source) => turn.ok_or(Refusal::Cancelled)?,
            () = cancel.cancelled() => return Err(Refusal::Cancelled),
        };
        Ok(Places {
            _connection: connection,
            _node: node,
        })
    }

    /// Charges `spent` store time to the connection and the address.
    pub fn charge(&self, spent: Duration) {
        let now = Instant::now();
        lock(&self.budget).charge(spent, now);
        self.address.budget().charge(spent, now);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fair::ClientAddress;

    fn source(address: u8, connection: u64) -> Source {
        Source {
            address: ClientAddress::of([10, 0, 0, address].into()),
            connection,
        }
    }

    #[tokio::test]
    async fn a_freed_place_goes_to_the_next_address_in_turn() {
        let scheduler = Scheduler::new(1);
        let first = scheduler.turn(source(1, 1)).await.expect("a free place");
        let mut order = Vec::new();
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        for (n, (address, connection)) in [(1, 1), (1, 2), (2, 3)].into_iter().enumerate() {
            let (scheduler, done) = (Arc::clone(&scheduler), done.clone());
            tokio::spawn(async move {
                let turn = scheduler.turn(source(address, connection)).await;
                done.send(n).unwrap();
                drop(turn);
            });
        }
        while scheduler.waiting() < 3 {
            tokio::task::yield_now().await;
        }
        drop(first);
        for _ in 0..3 {
            order.push(finished.recv().await.unwrap());
        }
        // Address 1's first waiter, then address 2, then address 1's second.
        assert_eq!(order, [0, 2, 1]);
        assert_eq!(scheduler.running(), 0);
    }
}
