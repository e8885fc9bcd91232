//! The relay's acceptance rules: every decision on what a client may do, in one place.
//!
//! Each rule is a plain function or a small value the connection keeps, reading the
//! configuration and, for limits shared by the cluster, the [`Limiter`]; none of them sends
//! anything or counts metrics. Callers act on the answer (and count refusals).
//!
//! - [`auth`]: NIP-42 authentication and NIP-70 protected events;
//! - [`event`]: limits, expiration and proof of work for an event;
//! - [`filters`]: how many filters a `REQ` may hold, and each filter's `limit`;
//! - [`allowance`]: `REQ`s and `COUNT`s per connection and per address, new connections per
//!   address: a burst, then a pace;
//! - [`rates`]: events per minute per client address and per author, across the cluster;
//! - [`connections`]: connections per client address, across the cluster;
//! - [`strikes`]: what a client does wrong, counted against its connection and address;
//! - [`budget`]: the store time a connection or an address may spend a minute;
//! - [`privacy`]: who may read direct messages and gift wraps;
//! - [`rules`]: the operator's allow and deny lists and members-only modes;
//! - [`pace`]: a token bucket for what a client may do often but not without end.
//!
//! [`Limiter`]: starling_cluster::Limiter

pub mod allowance;
pub mod auth;
pub mod budget;
pub mod connections;
pub mod event;
pub mod filters;
pub mod pace;
pub mod privacy;
pub mod rates;
pub mod rules;
pub mod strikes;

pub use allowance::Allowance;
pub use budget::WorkBudget;
pub use connections::AddressLease;
pub use event::check_event;
pub use filters::{filter_bytes, prepare_filters};
pub use pace::Pace;
pub use rates::EventRates;
pub use strikes::{Strike, Strikes};

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
