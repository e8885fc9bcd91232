//! Store queries in fair shares: every page a subscription reads and every count is
//! admitted here before it runs.
//!
//! 1. **Budgets.** The asker's connection and address each have a [`WorkBudget`] of store
//!    time a minute; an asker past either waits until it has refilled (while others go
//!    first), or is refused when the wait would be longer than [`MAX_BUDGET_WAIT`].
//! 2. **Per connection.** A connection has at most `max_queries_per_connection` statements
//!    running, and never more than half of the node's places; its other subscriptions wait
//!    their turn.
//! 3. **Node-wide turns.** At most `capacity` statements run on the node at once; waiting
//!    askers are served in turn by address and connection ([`FairQueue`]). Broad reads
//!    (searches, counts, filters naming no id, author or tag value) and askers who spent
//!    part of their budget lately ([`Class::Heavy`]) may hold only part of the places, so
//!    a client asking for what it needs never waits behind a broad filter's slices.
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
    nostr::Filter,
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

/// Which places a statement may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A narrow read by an asker that is not heavy: a client asking for what it needs.
    Light,
    /// A broad read, or any read of a heavy asker: it may take only part of the places.
    Heavy,
}

/// The node's places for running statements, and the askers waiting for one.
pub struct Scheduler {
    state: Mutex<State>,
    capacity: usize,
    /// Places heavy askers may hold at once; the others are kept for light ones.
    heavy_capacity: usize,
}

struct State {
    running: usize,
    heavy: usize,
    /// Light askers waiting, then heavy ones.
    waiting: [FairQueue<oneshot::Sender<Turn>>; 2],
}

impl State {
    fn may_run(&self, class: Class, scheduler: &Scheduler) -> bool {
        self.running < scheduler.capacity
            && (class == Class::Light || self.heavy < scheduler.heavy_capacity)
    }

    fn take(&mut self, class: Class) {
        self.running += 1;
        self.heavy += usize::from(class == Class::Heavy);
    }

    fn give_back(&mut self, class: Class) {
        self.running -= 1;
        self.heavy -= usize::from(class == Class::Heavy);
    }
}

/// One of the node's places, given back when dropped (to the next asker in turn).
pub struct Turn {
    /// `None` once the place has been handed on.
    scheduler: Option<Arc<Scheduler>>,
    class: Class,
}

impl Scheduler {
    /// A scheduler running at most `capacity` statements at once, half of them (at least
    /// one) kept for light askers when there are two places or more.
    pub fn new(capacity: usize) -> Arc<Self> {
        let capacity = capacity.max(1);
        Arc::new(Self {
            state: Mutex::new(State {
                running: 0,
                heavy: 0,
                waiting: [FairQueue::default(), FairQueue::default()],
            }),
            capacity,
            heavy_capacity: (capacity - capacity / 2).max(1).min(capacity),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place, at once if one is free to an asker of `class`, else in `source`'s turn.
    async fn turn(self: &Arc<Self>, source: Source, class: Class) -> Option<Turn> {
        let waiting = {
            let mut state = self.lock();
            if state.may_run(class, self) {
                state.take(class);
                None
            } else {
                let (give, take) = oneshot::channel();
                state.waiting[class as usize].push(source, give);
                Some(take)
            }
        };
        match waiting {
            None => Some(Turn {
                scheduler: Some(Arc::clone(self)),
                class,
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
        let state = self.lock();
        state.waiting[0].len() + state.waiting[1].len()
    }

    /// Hands free places to waiting askers: light ones first, each class in turn.
    fn hand_on(self: &Arc<Self>) {
        loop {
            let (next, class) = {
                let mut state = self.lock();
                let class = [Class::Light, Class::Heavy].into_iter().find(|&class| {
                    !state.waiting[class as usize].is_empty() && state.may_run(class, self)
                });
                let Some(class) = class else { return };
                let Some(next) = state.waiting[class as usize].pop() else {
                    return;
                };
                state.take(class);
                (next, class)
            };
            let turn = Turn {
                scheduler: Some(Arc::clone(self)),
                class,
            };
            // An asker that went away gives the place back; it goes to the next one.
            if let Err(mut unwanted) = next.send(turn) {
                unwanted.scheduler = None;
                self.lock().give_back(class);
            }
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(scheduler) = self.scheduler.take() else {
            return;
        };
        scheduler.lock().give_back(self.class);
        scheduler.hand_on();
    }
}

/// The places a statement holds while it runs.
pub struct Places {
    _connection: OwnedSemaphorePermit,
    _node: Turn,
}

impl Asker {
    /// Waits until the asker may run a statement (`broad` by its shape, see [`is_broad`]):
    /// its budgets refilled, a place of its connection and one of the node's in turn.
    /// Gives up when cancelled.
    pub async fn admit(
        &self,
        scheduler: &Arc<Scheduler>,
        broad: bool,
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
        let class = if broad || self.is_heavy() {
            Class::Heavy
        } else {
            Class::Light
        };
        let node = tokio::select! {
            turn = scheduler.turn(self.source, class) => turn.ok_or(Refusal::Cancelled)?,
            () = cancel.cancelled() => return Err(Refusal::Cancelled),
        };
        Ok(Places {
            _connection: connection,
            _node: node,
        })
    }

    /// Whether the connection or its address is heavy now ([`WorkBudget::is_heavy`]): its
    /// reads take the heavy askers' places, in short slices.
    pub fn is_heavy(&self) -> bool {
        let now = Instant::now();
        lock(&self.budget).is_heavy(now) || self.address.budget().is_heavy(now)
    }

    /// Charges `spent` store time to the connection and the address.
    pub fn charge(&self, spent: Duration) {
        let now = Instant::now();
        lock(&self.budget).charge(spent, now);
        self.address.budget().charge(spent, now);
    }
}

/// Whether reading a filter's page is broad work: a search (ranked over many matches), or
/// a filter naming no id, author or tag value (read from the time or kind index alone).
pub fn is_broad(filter: &Filter) -> bool {
    filter.search.is_some()
        || (filter.ids.is_none() && filter.authors.is_none() && filter.tags.is_empty())
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
        let first = scheduler
            .turn(source(1, 1), Class::Light)
            .await
            .expect("a free place");
        let mut order = Vec::new();
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        for (n, (address, connection)) in [(1, 1), (1, 2), (2, 3)].into_iter().enumerate() {
            let (scheduler, done) = (Arc::clone(&scheduler), done.clone());
            tokio::spawn(async move {
                let turn = scheduler
                    .turn(source(address, connection), Class::Light)
                    .await;
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

    #[tokio::test]
    async fn heavy_askers_leave_places_to_light_ones() {
        let scheduler = Scheduler::new(2);
        let heavy = scheduler
            .turn(source(1, 1), Class::Heavy)
            .await
            .expect("a place for a heavy asker");
        let waiting = {
            let scheduler = Arc::clone(&scheduler);
            tokio::spawn(async move { scheduler.turn(source(1, 2), Class::Heavy).await.is_some() })
        };
        while scheduler.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        let light = scheduler.turn(source(2, 3), Class::Light).await;
        assert!(light.is_some(), "the kept place goes to a light asker");
        assert_eq!(scheduler.running(), 2);
        drop(heavy);
        assert!(
            waiting.await.unwrap(),
            "the second heavy asker runs once the first is done"
        );
    }
}
