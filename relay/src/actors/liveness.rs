//! Whether a client reads: the relay pings it with payloads it cannot guess, and only a
//! pong carrying one of the recent payloads counts. A client that writes (even pings) but
//! never reads never sees the pings, so it cannot answer them, and is closed once its idle
//! timeout has passed.

use std::{collections::hash_map::RandomState, hash::BuildHasher, time::Instant};

use bytes::Bytes;

/// The payloads of the relay's last two pings, and when the client last answered one.
pub struct Liveness {
    last_seen: Instant,
    recent: [u64; 2],
    count: u64,
    secret: RandomState,
}

impl Liveness {
    /// A connection that opened at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            last_seen: now,
            recent: [0; 2],
            count: 0,
            secret: RandomState::new(),
        }
    }

    /// When the client last answered a ping (or when it connected).
    pub fn last_seen(&self) -> Instant {
        self.last_seen
    }

    /// The payload of the next ping.
    pub fn next_ping(&mut self) -> Bytes {
        self.count += 1;
        let payload = self.secret.hash_one(self.count);
        self.recent = [self.recent[1], payload];
        Bytes::copy_from_slice(&payload.to_be_bytes())
    }

    /// Records a pong received at `now`; whether it answers one of the recent pings.
    pub fn pong(&mut self, payload: &[u8], now: Instant) -> bool {
        let answers = <[u8; 8]>::try_from(payload)
            .is_ok_and(|p| self.count > 0 && self.recent.contains(&u64::from_be_bytes(p)));
        if answers {
            self.last_seen = now;
        }
        answers
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_a_pong_to_a_recent_ping_counts() {
        let start = Instant::now();
        let later = start + Duration::from_secs(1);
        let mut liveness = Liveness::new(start);
        assert!(!liveness.pong(&[0; 8], later), "no ping was sent");
        let first = liveness.next_ping();
        let second = liveness.next_ping();
        assert_ne!(first, second);
        assert!(!liveness.pong(b"guessed!", later));
        assert_eq!(liveness.last_seen(), start);
        assert!(liveness.pong(&first, later));
        assert_eq!(liveness.last_seen(), later);
        let _third = liveness.next_ping();
        assert!(!liveness.pong(&first, later), "too old");
        assert!(liveness.pong(&second, later));
    }
}
