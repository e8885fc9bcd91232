//! Fair shares: who asked for a piece of work, and a queue that serves askers in turn.
//!
//! Work that every connection competes for (signature checks, store queries, writes) is
//! queued by [`Source`]: the client address first, then the connection. [`FairQueue`] serves
//! the addresses that wait in turn and, within an address, its connections in turn, so one
//! connection (or one address with many connections) gets one share while others wait,
//! however fast it sends.

mod queue;
mod source;

pub use queue::FairQueue;
pub use source::{ClientAddress, Source};
