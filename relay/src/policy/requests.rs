//! `REQ`s and `COUNT`s per minute per connection. A connection lives on one node, so this
//! limit needs no shared counter.

use std::time::{Duration, Instant};

/// The requests one connection may still make in the current minute.
pub struct RequestAllowance {
    /// Most requests a minute; 0 for no limit.
    limit: u64,
    /// Start of the current minute, and the requests made in it.
    window: (Instant, u64),
}

impl RequestAllowance {
    /// An allowance of `limit` requests a minute (0: no limit), starting at `now`.
    pub fn new(limit: u64, now: Instant) -> Self {
        Self {
            limit,
            window: (now, 0),
        }
    }

    /// Counts one request made at `now`; whether it is allowed.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self.limit == 0 {
            return true;
        }
        if now.duration_since(self.window.0) >= Duration::from_secs(60) {
            self.window = (now, 0);
        }
        self.window.1 += 1;
        self.window.1 <= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_limit_each_minute() {
        let start = Instant::now();
        let mut allowance = RequestAllowance::new(2, start);
        assert!(allowance.allow(start));
        assert!(allowance.allow(start + Duration::from_secs(1)));
        assert!(!allowance.allow(start + Duration::from_secs(59)));
        assert!(allowance.allow(start + Duration::from_secs(60)));
        let mut unlimited = RequestAllowance::new(0, start);
        assert!((0..1000).all(|_| unlimited.allow(start)));
    }
}
