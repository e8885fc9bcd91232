//! The Nostr protocol: events, filters and the messages clients and relays exchange.
//!
//! Architecture invariant: this module knows nothing of actors, stores, HTTP or Redis. It
//! is pure types and checks, so every rule of NIP-01 is unit-tested here in isolation.

pub mod event;
pub mod filter;
pub mod hex;
pub mod hll;
pub mod kind;
pub mod message;
pub mod relay_url;
pub mod search;

pub use event::{DeletionTargets, Event, EventError, Keys, VerifiedEvent};
pub use filter::{Filter, TagFilter};
pub use kind::KindClass;
pub use message::{ClientMessage, MessageError, Prefix, Reason};
pub use relay_url::{InvalidRelayUrl, RelayUrl};

/// A serde_json error without its "at line 1 column 42" suffix, for messages to clients.
fn describe_json_error(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.find(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}
