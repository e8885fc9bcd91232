//! A token bucket: at most `burst` at once, refilled at `per_second`. Used for what a client
//! may do often but not without end (pings).

use std::time::Instant;

/// Tokens for something a client does.
#[derive(Debug)]
pub struct Pace {
    burst: f64,
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl Pace {
    /// A full bucket of `burst` tokens refilled at `per_second`, at `now`.
    pub fn new(burst: u32, per_second: f64, now: Instant) -> Self {
        Self {
            burst: f64::from(burst),
            per_second,
            tokens: f64::from(burst),
            at: now,
        }
    }

    /// A limit of `per_minute` on average, `burst` of them at once (at least one), starting
    /// full at `now`; `None` for no limit (0 a minute).
    pub fn per_minute(per_minute: u64, burst: u32, now: Instant) -> Option<Self> {
        (per_minute > 0).then(|| Self::new(burst.max(1), per_minute as f64 / 60.0, now))
    }

    /// Whether the bucket is full again at `now` (what was taken has come back).
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * self.per_second >= self.burst
    }

    /// Takes a token at `now`; false when there is none.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut pace = Pace::new(3, 1.0, start);
        assert!((0..3).all(|_| pace.take(start)));
        assert!(!pace.take(start));
        assert!(pace.take(start + Duration::from_secs(1)));
        assert!(!pace.take(start + Duration::from_secs(1)));
    }

    #[test]
    fn a_pace_per_minute_allows_its_burst_and_none_at_zero() {
        let start = Instant::now();
        let mut pace = Pace::per_minute(60, 2, start).unwrap();
        assert!(pace.take(start) && pace.take(start));
        assert!(!pace.take(start));
        assert!(pace.take(start + Duration::from_secs(1)));
        assert!(!pace.is_full(start + Duration::from_secs(1)));
        assert!(pace.is_full(start + Duration::from_secs(3)));
        assert!(Pace::per_minute(0, 100, start).is_none());
    }
}
