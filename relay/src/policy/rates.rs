//! Events per minute per client address and per author, counted by the cluster's
//! [`Limiter`] so that they hold across nodes. Events are counted after their signature is
//! checked, so that nobody can spend another author's allowance with forged events.

use std::time::Duration;

use starling_cluster::Limiter;

use crate::{config::Config, fair::ClientAddress, nostr::hex};

/// The per-minute limits one event counts against, by the keys it is counted under.
pub struct EventRates {
    ip: String,
    author: String,
}

impl EventRates {
    /// The keys of an event from client address `address` by `author`.
    pub fn of(address: &ClientAddress, author: &[u8; 32]) -> Self {
        Self {
            ip: format!("events:ip:{address}"),
            author: format!("events:pubkey:{}", hex::encode(author)),
        }
    }

    /// Counts the event against the per-address and per-author limits of `config`; whether
    /// both allow it.
    pub async fn allow(self, limiter: &dyn Limiter, config: &Config) -> bool {
        let minute = Duration::from_secs(60);
        let ip_ok = config.max_events_per_minute_per_ip == 0
            || limiter
                .hit(&self.ip, config.max_events_per_minute_per_ip, minute)
                .await;
        let author_ok = config.max_events_per_minute_per_pubkey == 0
            || limiter
                .hit(
                    &self.author,
                    config.max_events_per_minute_per_pubkey,
                    minute,
                )
                .await;
        ip_ok && author_ok
    }
}
