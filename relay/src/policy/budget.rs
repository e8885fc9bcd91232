//! Expensive filters cost their sender: each connection and each client address may spend
//! so much store time a minute. The budget is a bucket of milliseconds that fills at its
//! rate up to [`BURST`] worth of it (a client opening its screens asks for much at once,
//! rarely for long); every slice of a query is charged what it took, and a sender whose
//! bucket is empty waits until it has refilled while others' requests go first.
//!
//! The budget also says whether its sender is *heavy*: spending fast lately (more than
//! [`HEAVY_SHARE`] of its rate over about the last [`RECENT`]), or having spent most of
//! the bucket. A sender at its budget's pace is heavy at once, however full the bucket
//! still is; the node serves heavy senders from part of its places and in short slices.

use std::time::{Duration, Instant};

/// How much of its rate a full bucket holds: ten seconds' worth.
pub const BURST: Duration = Duration::from_secs(10);

/// How far back "lately" reaches: store time spent counts for less as it ages, by a factor
/// of e every `RECENT`.
pub const RECENT: Duration = Duration::from_secs(1);

/// A sender spending more than this part of its rate lately is heavy.
pub const HEAVY_SHARE: f64 = 0.5;

/// A sender with less than this part of its bucket left is heavy.
pub const HEAVY_BELOW: f64 = 0.9;

/// A sender's store time, refilled continuously.
#[derive(Debug)]
pub struct WorkBudget {
    /// Store time allowed per minute; zero for no limit.
    per_minute: Duration,
    /// Milliseconds left (negative after a slice that cost more than was left).
    balance_ms: f64,
    /// Milliseconds spent lately, each fading by a factor of e every [`RECENT`].
    recent_ms: f64,
    at: Instant,
}

impl WorkBudget {
    /// A full budget of `per_minute` (zero: unlimited) at `now`.
    pub fn new(per_minute: Duration, now: Instant) -> Self {
        let mut budget = Self {
            per_minute,
            balance_ms: 0.0,
            recent_ms: 0.0,
            at: now,
        };
        budget.balance_ms = budget.capacity_ms();
        budget
    }

    /// Milliseconds a full bucket holds.
    fn capacity_ms(&self) -> f64 {
        self.per_minute.as_secs_f64() * 1000.0 * BURST.as_secs_f64() / 60.0
    }

    /// Store time the bucket gains a second, in milliseconds.
    fn rate_ms_per_s(&self) -> f64 {
        self.per_minute.as_secs_f64() * 1000.0 / 60.0
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.balance_ms =
            (self.balance_ms + elapsed * self.rate_ms_per_s()).min(self.capacity_ms());
        self.recent_ms *= (-elapsed / RECENT.as_secs_f64()).exp();
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
        Duration::from_secs_f64(-self.balance_ms / self.rate_ms_per_s())
    }

    /// Charges `spent` store time at `now`.
    pub fn charge(&mut self, spent: Duration, now: Instant) {
        if self.per_minute.is_zero() {
            return;
        }
        self.refill(now);
        self.balance_ms -= spent.as_secs_f64() * 1000.0;
        self.recent_ms += spent.as_secs_f64() * 1000.0;
    }

    /// Whether the sender is heavy at `now` (see the module documentation); never for an
    /// unlimited budget, which has no rate to compare with.
    pub fn is_heavy(&mut self, now: Instant) -> bool {
        if self.per_minute.is_zero() {
            return false;
        }
        self.refill(now);
        let recent_rate = self.recent_ms / RECENT.as_secs_f64();
        recent_rate > HEAVY_SHARE * self.rate_ms_per_s()
            || self.balance_ms < HEAVY_BELOW * self.capacity_ms()
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
        assert!(!unlimited.is_heavy(start));
    }

    #[test]
    fn a_sender_at_its_pace_is_heavy_with_its_bucket_still_full() {
        let start = Instant::now();
        // 6 s a minute: 100 ms of store time a second, a bucket of 1 s.
        let mut budget = WorkBudget::new(Duration::from_secs(6), start);
        let mut now = start;
        // 5 ms every 50 ms: 100 ms a second, which the bucket refills as fast.
        for _ in 0..40 {
            now += Duration::from_millis(50);
            budget.charge(Duration::from_millis(5), now);
        }
        assert!(
            budget.balance_ms > 0.99 * budget.capacity_ms(),
            "the bucket stays full"
        );
        assert!(budget.is_heavy(now), "it spends its whole rate");
        // After a few quiet seconds it is light again.
        assert!(!budget.is_heavy(now + 4 * RECENT));
        // A sender spending a tenth of its rate is light.
        let mut light = WorkBudget::new(Duration::from_secs(6), start);
        let mut now = start;
        for _ in 0..40 {
            now += Duration::from_millis(50);
            light.charge(Duration::from_micros(500), now);
        }
        assert!(!light.is_heavy(now));
        // One that spent most of its bucket at once stays heavy until it has refilled
        // most of it, long after its spending has stopped counting as recent.
        light.charge(Duration::from_millis(950), now);
        assert!(light.is_heavy(now + 4 * RECENT));
        assert!(!light.is_heavy(now + Duration::from_secs(10)));
    }
}
