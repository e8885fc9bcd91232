//! The actors of a node and the small parts they are built from.
//!
//! - [`connection::Connection`]: one per WebSocket; parses, answers, starts subscriptions.
//! - [`subscription::Subscription`]: one per `REQ`; stored events, `EOSE`, then live ones.
//! - [`live_index::LiveIndex`]: one per worker thread; matches new events to subscriptions.
//! - [`writer::Writer`]: one per node; batches store writes, publishes after commit.

pub mod connection;
pub mod gate;
pub mod live_index;
pub mod outbox;
pub mod subscription;
pub mod writer;
