//! What the good and the hostile clients share: keys by number, content that is new on
//! every run, and how long any of them waits for an answer.

use std::time::Duration;

/// Longest a client waits for one answer (a good client then counts it as lost).
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Nanoseconds since the Unix epoch, to make every run's events new.
pub(super) fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A secret key for author number `n` of this mode.
pub(super) fn secret(n: u64) -> [u8; 32] {
    let mut secret = [7u8; 32];
    secret[..8].copy_from_slice(&n.to_be_bytes());
    secret
}
