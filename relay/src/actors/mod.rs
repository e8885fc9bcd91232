//! The actors of a connection and the small parts they are built from.
//!
//! - [`connection::Connection`]: one per WebSocket; parses, answers, starts subscriptions;
//! - [`subscription::Subscription`]: one per `REQ`; stored events, `EOSE`, then live ones;
//! - [`outbox::Outbox`]: a connection's one bounded queue to its socket;
//! - [`gate::Gate`]: stops reading a socket while its connection has too much in progress;
//! - [`conduct::Conduct`]: a connection's strikes and pings, and whether it is slowed;
//! - [`liveness::Liveness`]: whether a client reads (it answers the relay's pings).
//!
//! Whole messages come from the WebSocket transport, [`crate::websocket`].
//!
//! The live index each thread's subscriptions register in is in [`crate::live`]; the
//! node-wide Writer actor in [`crate::node`].

pub mod conduct;
pub mod connection;
pub mod gate;
pub mod liveness;
pub mod outbox;
pub mod subscription;
