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

/// A connection's record.
pub struct Conduct {
    address: Arc<AddressState>,
    strikes: Strikes,
    /// The pings the client may still send (none: no limit).
    pings: Option<Pace>,
    /// How often the connection reads a message while it is slowed.
    pace: Duration,
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
    /// The record of a connection from `address`, opened at `now`, with `config`'s pings
    /// and pace.
    pub fn new(config: &Config, address: Arc<AddressState>, now: Instant) -> Self {
        let per_minute = u64::from(config.max_pings_per_minute_per_connection);
        let pings = Pace::per_minute(per_minute, config.max_ping_burst, now);
        Self {
            opened_penalized: address.is_penalized(now),
            address,
            strikes: Strikes::default(),
            pings,
            pace: Duration::from_millis(config.strike_penalty_pace_ms),
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
        self.pings.as_mut().is_none_or(|pings| pings.take(now))
    }

    /// How long the connection waits before it reads its next message at `now`, when it
    /// reads slowly: its address is slowed, and it opened since or has strikes of its own.
    pub fn pace(&self, now: Instant) -> Option<Duration> {
        let paced =
            self.address.is_penalized(now) && (self.opened_penalized || self.strikes.any(now));
        paced.then_some(self.pace)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::{fair::ClientAddress, node::addresses::Addresses};

    fn conduct(options: &[&str], now: Instant) -> (Config, Conduct) {
        let config = Config::from_args(options);
        let address = ClientAddress::of(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let state = Addresses::default().get(address, &config);
        let conduct = Conduct::new(&config, state, now);
        (config, conduct)
    }

    #[test]
    fn pings_past_the_configured_burst_and_rate_are_refused() {
        let now = Instant::now();
        let (_, mut conduct) = conduct(
            &[
                "--max-ping-burst",
                "3",
                "--max-pings-per-minute-per-connection",
                "6",
            ],
            now,
        );
        assert!((0..3).all(|_| conduct.ping(now)));
        assert!(!conduct.ping(now));
        // Six a minute: one every ten seconds.
        assert!(!conduct.ping(now + Duration::from_secs(9)));
        assert!(conduct.ping(now + Duration::from_secs(11)));
    }

    #[test]
    fn pings_are_not_limited_at_zero_a_minute() {
        let now = Instant::now();
        let (_, mut conduct) = conduct(&["--max-pings-per-minute-per-connection", "0"], now);
        assert!((0..1000).all(|_| conduct.ping(now)));
    }

    #[test]
    fn a_slowed_connection_reads_at_the_configured_pace() {
        let now = Instant::now();
        let options = [
            "--max-strikes-per-ip",
            "1",
            "--strike-penalty-pace-ms",
            "40",
        ];
        let (config, mut conduct) = conduct(&options, now);
        assert_eq!(conduct.pace(now), None);
        conduct.strike(&config, now);
        assert_eq!(
            conduct.pace(now),
            None,
            "the address is not past its strikes"
        );
        assert!(conduct.strike(&config, now).penalized);
        assert_eq!(conduct.pace(now), Some(Duration::from_millis(40)));
        let over = now + Duration::from_secs(config.strike_penalty_seconds + 1);
        assert_eq!(conduct.pace(over), None, "the penalty is over");
    }
}
