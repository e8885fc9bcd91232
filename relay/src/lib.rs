//! Starling, a horizontally scaled, actor-based Nostr relay.
//!
//! See ARCHITECTURE.md at the top of the repository for the map of this crate.

pub mod actors;
pub mod cli;
pub mod config;
pub mod dial;
pub mod fair;
pub mod hashing;
pub mod http;
pub mod ingest;
pub mod live;
pub mod manage;
pub mod metrics;
pub mod node;
pub mod nostr;
pub mod plugin;
pub mod policy;
pub mod proxy;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod transfer;
pub mod verifier;
pub mod websocket;
