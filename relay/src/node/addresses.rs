//! What the node knows of each client address over all its connections: its strikes,
//! whether it is slowed, how much store time it may still spend, and how many requests and
//! new connections it may still make.
//!
//! Entries live while a connection from the address is open and, after that, until their
//! strikes, penalty and budget have all run out; they are swept out as the table grows.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use crate::{
    config::Config,
    fair::ClientAddress,
    policy::{Allowance, Strikes, WorkBudget},
};

/// Addresses kept before the table is swept.
const SWEEP_AT: usize = 4096;

/// One client address's shared state.
pub struct AddressState {
    strikes: Mutex<Strikes>,
    penalized_until: Mutex<Option<Instant>>,
    budget: Mutex<WorkBudget>,
    requests: Mutex<Allowance>,
    connections: Mutex<Allowance>,
}

/// What a strike did to its address.
#[derive(Debug, PartialEq, Eq)]
pub enum Penalty {
    /// Nothing yet.
    None,
    /// The address just passed its threshold and is slowed from now on.
    Started,
}

impl AddressState {
    fn new(config: &Config, now: Instant) -> Self {
        let budget = Duration::from_millis(config.query_ms_per_minute_per_ip);
        Self {
            strikes: Mutex::new(Strikes::default()),
            penalized_until: Mutex::new(None),
            budget: Mutex::new(WorkBudget::new(budget, now)),
            requests: Mutex::new(Allowance::new(
                config.max_reqs_per_minute_per_ip,
                config.max_reqs_burst_per_ip,
                now,
            )),
            connections: Mutex::new(Allowance::new(
                config.max_connections_per_minute_per_ip,
                config.max_connections_burst_per_ip,
                now,
            )),
        }
    }

    /// Counts a strike at `now`; slows the address for `penalty` when it passes `max`.
    pub fn strike(&self, max: u32, penalty: Duration, now: Instant) -> Penalty {
        let count = lock(&self.strikes).add(now);
        if max == 0 || count != max + 1 {
            return Penalty::None;
        }
        *lock(&self.penalized_until) = Some(now + penalty);
        Penalty::Started
    }

    /// Whether the address is slowed at `now`.
    pub fn is_penalized(&self, now: Instant) -> bool {
        lock(&self.penalized_until).is_some_and(|until| now < until)
    }

    /// The address's store-time budget.
    pub fn budget(&self) -> MutexGuard<'_, WorkBudget> {
        lock(&self.budget)
    }

    /// Counts one request (`REQ`, `COUNT`, negentropy message) made at `now`; whether the
    /// address may make it.
    pub fn allow_request(&self, now: Instant) -> bool {
        lock(&self.requests).allow(now)
    }

    /// Counts one new connection opened at `now`; whether the address may open it.
    pub fn allow_connection(&self, now: Instant) -> bool {
        lock(&self.connections).allow(now)
    }

    /// Whether nothing is left to remember at `now`.
    fn is_spent(&self, now: Instant) -> bool {
        !lock(&self.strikes).any(now)
            && !self.is_penalized(now)
            && self.budget().is_full(now)
            && lock(&self.requests).is_full(now)
            && lock(&self.connections).is_full(now)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The table of addresses.
#[derive(Default)]
pub struct Addresses {
    table: Mutex<HashMap<ClientAddress, Arc<AddressState>>>,
}

impl Addresses {
    /// The state of `address`, made on first use.
    pub fn get(&self, address: ClientAddress, config: &Config) -> Arc<AddressState> {
        let now = Instant::now();
        let mut table = lock(&self.table);
        if table.len() >= SWEEP_AT && !table.contains_key(&address) {
            // An entry only this table holds belongs to no open connection.
            table.retain(|_, state| Arc::strong_count(state) > 1 || !state.is_spent(now));
        }
        Arc::clone(
            table
                .entry(address)
                .or_insert_with(|| Arc::new(AddressState::new(config, now))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_past_its_strikes_is_slowed_for_the_penalty() {
        let config = Config::from_args(&[]);
        let addresses = Addresses::default();
        let address = ClientAddress::of([192, 0, 2, 1].into());
        let state = addresses.get(address, &config);
        let now = Instant::now();
        let penalty = Duration::from_secs(10);
        assert_eq!(state.strike(2, penalty, now), Penalty::None);
        assert_eq!(state.strike(2, penalty, now), Penalty::None);
        assert!(!state.is_penalized(now));
        assert_eq!(state.strike(2, penalty, now), Penalty::Started);
        assert_eq!(state.strike(2, penalty, now), Penalty::None, "started once");
        assert!(state.is_penalized(now + Duration::from_secs(9)));
        assert!(!state.is_penalized(now + penalty));
        assert!(Arc::ptr_eq(&state, &addresses.get(address, &config)));
    }
}
