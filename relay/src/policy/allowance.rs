//! What a client may do at a pace: a burst, then a steady pace per minute. Used for `REQ`s
//! and `COUNT`s per connection and per client address over its connections on a node, and
//! for new connections per address on a node. A connection lives on one node, so these
//! limits need no shared counter (the address's is the node's, like its store-time budget).
//!
//! A window of a minute would let a client spend the whole minute's requests in its first
//! second (and again on every new connection); a bucket refilled at the per-minute rate
//! bounds what it can ask at any moment to the burst. The address's allowance keeps a
//! client from getting a fresh burst by opening a new connection.

use std::time::Instant;

use super::Pace;

/// What one connection (or one address) may still do now.
pub struct Allowance {
    /// None for no limit.
    pace: Option<Pace>,
}

impl Allowance {
    /// An allowance of `burst` at once (never more than a minute's), refilled at
    /// `per_minute` (0: no limit), starting full at `now`.
    pub fn new(per_minute: u64, burst: u32, now: Instant) -> Self {
        let burst = u32::try_from(per_minute).map_or(burst, |minute| burst.min(minute));
        Self {
            pace: Pace::per_minute(per_minute, burst, now),
        }
    }

    /// Whether what was taken has all come back at `now` (always, without a limit).
    pub fn is_full(&self, now: Instant) -> bool {
        self.pace.as_ref().is_none_or(|pace| pace.is_full(now))
    }

    /// Counts one use at `now`; whether it is allowed.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.pace.as_mut().is_none_or(|pace| pace.take(now))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn allows_the_burst_then_the_per_minute_pace() {
        let start = Instant::now();
        let mut allowance = Allowance::new(60, 2, start);
        assert!(allowance.allow(start));
        assert!(allowance.allow(start));
        assert!(!allowance.allow(start));
        assert!(!allowance.allow(start + Duration::from_millis(500)));
        assert!(allowance.allow(start + Duration::from_secs(1)));
        assert!(!allowance.allow(start + Duration::from_secs(1)));
        let mut a_minute = Allowance::new(2, 100, start);
        assert!(a_minute.allow(start) && a_minute.allow(start));
        assert!(
            !a_minute.allow(start),
            "a burst is at most a minute's requests"
        );
        let mut unlimited = Allowance::new(0, 2, start);
        assert!((0..1000).all(|_| unlimited.allow(start)));
    }
}
