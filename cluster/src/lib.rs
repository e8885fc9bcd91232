//! The cross-node bus of Starling: how relay nodes share events in real time.
//!
//! A node publishes every event it accepts, wrapped in an [`Envelope`] that names the node it
//! came from, and delivers what other nodes published to its own live subscribers. The relay
//! reaches other nodes only through the [`Bus`] trait; this crate holds the trait and its
//! implementations.
//!
//! Architecture invariant: payloads are opaque bytes here. The bus knows nothing of Nostr.

mod in_process;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;

pub use in_process::InProcessBus;

/// One published event and the node that accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Id of the node that accepted the event.
    pub origin: Arc<str>,
    /// The event's canonical JSON.
    pub payload: Bytes,
}

/// A publish/subscribe channel shared by every node of a cluster.
pub trait Bus: Send + Sync + 'static {
    /// Publishes an envelope to every subscriber, this node's included. Never blocks: an
    /// implementation queues and sends in the background.
    fn publish(&self, envelope: Envelope);

    /// Every envelope published from now on, by any node, in publication order per node.
    fn subscribe(&self) -> BoxStream<'static, Envelope>;
}
