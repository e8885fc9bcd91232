//! Live events: matching each new event to the open subscriptions that want it, on this
//! node and, through the cluster bus, on every other.
//!
//! - [`index`]: the pure index of filters (plain data, tested alone);
//! - [`thread`]: the per-thread actor owning an index, and how a subscriber reaches it;
//! - [`fanout`]: the hub that hands events to every thread's index and to the bus, once each;
//! - [`recent`]: the once-only set behind it;
//! - [`catch_up`]: after a bus outage, what other nodes stored meanwhile.

pub mod catch_up;
pub mod fanout;
pub mod index;
pub mod recent;
pub mod thread;

pub use fanout::Fanout;
pub use thread::{LiveEvent, Subscriber};

#[cfg(test)]
mod probe;
