//! How a connection behaves: its strikes, its pings, and whether it is slowed because its
//! address is (see [`crate::policy::strikes`]).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    config::Config,
    node::{AddressState, Penalty},
    policy::{Pace, Strikes},
};

/// How often a slowed client's connection reads a message.
pub const PENALTY_PACE: Duration = Duration::from_millis(250);

/// Pings a client may send at once, and a second on average, before they count as strikes.
const PING_BURST: u32 = 10;
const PINGS_PER_SECOND: f64 = 1.0;

/// A connection's record.
pub struct Conduct {
    address: Arc<AddressState>,
    strikes: Strikes,
    pings: Pace,
    /// Whether the connection opened while its address was slowed.
    opened_penalized: bool,
}

/// What a strike led to.
pub struct Outcome {
    /// The connection passed its threshold: close it.
    pub close: bool,
    /// Its address passed its own, and is slowed from now on.
    pub penalized: bool,
    /// The connection's strikes in the current minute.
    pub count: u32,
}

impl Conduct {
    /// The record of a connection from `address`, opened at `now`.
    pub fn new(address: Arc<AddressState>, now: Instant) -> Self {
        Self {
            opened_penalized: address.is_penalized(now),
            address,
            strikes: Strikes::default(),
            pings: Pace::new(PING_BURST, PINGS_PER_SECOND, now),
        }
    }

    /// Counts a strike at `now` against the connection and its address.
    pub fn strike(&mut self, config: &Config, now: Instant) -> Outcome {
        let count = self.strikes.add(now);
        let penalty = Duration::from_secs(config.strike_penalty_seconds);
        let penalized =
            self.address.strike(config.max_strikes_per_ip, penalty, now) == Penalty::Started;
        let max = config.max_strikes_per_connection;
        Outcome {
            close: max > 0 && count > max,
            penalized,
            count,
        }
    }

    /// Records a ping from the client at `now`; false when it pings more than it needs.
    pub fn ping(&mut self, now: Instant) -> bool {
        self.pings.take(now)
    }

    /// Whether the connection reads slowly at `now`: its address is slowed, and it opened
    /// since or has strikes of its own.
    pub fn is_paced(&self, now: Instant) -> bool {
        self.address.is_penalized(now) && (self.opened_penalized || self.strikes.any(now))
    }
}
