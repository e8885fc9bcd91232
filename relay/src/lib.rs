//! Starling, a horizontally scaled, actor-based Nostr relay.

pub mod nostr;
