//! Expensive filters cost their sender: each connection and each client address may spend
//! so much store time a minute. The budget is a bucket of milliseconds that fills at its
//! rate up to [`BURST`] worth of it (a client opening its screens asks for much at once,
//! rarely for long); every slice of a query is charged what it took, and a sender whose
//! bucket is empty waits until it has refilled while others' requests go first.

use std::time::{Duration, Instant};

/// How much of its rate a full bucket holds: ten seconds' worth.
pub const BURST: Duration = Duration::from_secs(10);

/// A sender's store time, refilled continuously.
#[derive(Debug)]
pub struct WorkBudget {
    /// Store time allowed per minute; zero for no limit.
    per_minute: Duration,
    /// Milliseconds left (negative after a slice that cost more than was left).
    balance_ms: f64,
    at: Instant,
}

impl WorkBudget {
    /// A full budget of `per_minute` (zero: unlimited) at `now`.
    pub fn new(per_minute: Duration, now: Instant) -> Self {
        let mut budget = Self {
            per_minute,
            balance_ms: 0.0,
            at: now,
        };
        budget.balance_ms = budget.capacity_ms();
        budget
    }

    /// Milliseconds a full bucket holds.
    fn capacity_ms(&self) -> f64 {
        self.per_minute.as_secs_f64() * 1000.0 * BURST.as_secs_f64() / 60.0
    }

    fn refill(&mut self, now: Instant) {
        let rate_ms_per_s = self.per_minute.as_secs_f64() * 1000.0 / 60.0;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.balance_ms = (self.balance_ms + elapsed * rate_ms_per_s).min(self.capacity_ms());
        self.at = now;
    }

    /// How long to wait at `now` before the next slice may run (zero when it may run now).
    pub fn wait(&mut self, now: Instant) -> Duration {
        if self.per_minute.is_zero() {
            return Duration::ZERO;
        }
        self.refill(now);
        if self.balance_ms >= 0.0 {
            return Duration::ZERO;
        }
        let rate_ms_per_s = self.per_minute.as_secs_f64() * 1000.0 / 60.0;
        Duration::from_secs_f64(-self.balance_ms / rate_ms_per_s)
    }

    /// Charges `spent` store time at `now`.
    pub fn charge(&mut self, spent: Duration, now: Instant) {
        if self.per_minute.is_zero() {
            return;
        }
        self.refill(now);
        self.balance_ms -= spent.as_secs_f64() * 1000.0;
    }

    /// The part of a full bucket left at `now` (below zero after an overspent slice; 1 for
    /// an unlimited budget).
    pub fn left(&mut self, now: Instant) -> f64 {
        if self.per_minute.is_zero() {
            return 1.0;
        }
        self.refill(now);
        self.balance_ms / self.capacity_ms()
    }

    /// Whether the bucket is full at `now` (nothing spent that has not refilled).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.balance_ms >= self.capacity_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spending_past_the_budget_waits_for_the_refill() {
        let start = Instant::now();
        // 6 s a minute: the bucket holds 1 s and refills 100 ms of store time a second.
        let mut budget = WorkBudget::new(Duration::from_secs(6), start);
        assert_eq!(budget.wait(start), Duration::ZERO);
        budget.charge(Duration::from_secs(2), start);
        // One second short.
        let wait = budget.wait(start);
        assert!((wait.as_secs_f64() - 10.0).abs() < 0.01, "{wait:?}");
        assert_eq!(budget.wait(start + Duration::from_secs(10)), Duration::ZERO);
        assert!(!budget.is_full(start + Duration::from_secs(10)));
        assert!(budget.is_full(start + Duration::from_secs(20)));
        let mut unlimited = WorkBudget::new(Duration::ZERO, start);
        unlimited.charge(Duration::from_secs(100), start);
        assert_eq!(unlimited.wait(start), Duration::ZERO);
    }
}
