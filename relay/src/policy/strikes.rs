//! Abuse costs the abuser: what a client does wrong (forged signatures, malformed messages,
//! refused events and requests, rate-limit refusals, ping floods) counts as strikes against its
//! connection and its address. A connection past its threshold in a minute is closed; an
//! address past its threshold is slowed for a while (the node keeps that state).

use std::time::{Duration, Instant};

/// What a strike was for; the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strike {
    /// A message that could not be read, or an event or filter of the wrong shape.
    Invalid,
    /// An event whose id or signature is wrong.
    Forged,
    /// An event or request the relay's rules refused: limits, expiration, proof of work,
    /// the operator's lists, access rules (`auth-required:`, `restricted:`), the
    /// write-policy plugin.
    Refused,
    /// A request past a rate limit.
    RateLimited,
    /// Pings faster than a client needs.
    Pings,
}

impl Strike {
    /// Every kind of strike, for metrics that start at zero.
    pub const ALL: [Strike; 5] = [
        Strike::Invalid,
        Strike::Forged,
        Strike::Refused,
        Strike::RateLimited,
        Strike::Pings,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Strike::Invalid => "invalid",
            Strike::Forged => "forged",
            Strike::Refused => "refused",
            Strike::RateLimited => "rate-limited",
            Strike::Pings => "pings",
        }
    }
}

/// How long strikes are counted together.
pub const STRIKE_WINDOW: Duration = Duration::from_secs(60);

/// Strikes counted in windows of a minute, each opened by its first strike.
#[derive(Debug, Default)]
pub struct Strikes {
    window: Option<(Instant, u32)>,
}

impl Strikes {
    /// Counts a strike at `now`; the strikes in the current window, this one included.
    pub fn add(&mut self, now: Instant) -> u32 {
        let (opened, count) = match self.window {
            Some((opened, count)) if now.duration_since(opened) < STRIKE_WINDOW => {
                (opened, count + 1)
            }
            _ => (now, 1),
        };
        self.window = Some((opened, count));
        count
    }

    /// Whether any strike counts at `now`.
    pub fn any(&self, now: Instant) -> bool {
        self.window
            .is_some_and(|(opened, _)| now.duration_since(opened) < STRIKE_WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_within_a_window_of_a_minute() {
        let start = Instant::now();
        let mut strikes = Strikes::default();
        assert!(!strikes.any(start));
        assert_eq!(strikes.add(start), 1);
        assert_eq!(strikes.add(start + Duration::from_secs(59)), 2);
        assert!(strikes.any(start + Duration::from_secs(59)));
        assert!(!strikes.any(start + STRIKE_WINDOW));
        assert_eq!(strikes.add(start + STRIKE_WINDOW), 1);
    }
}
