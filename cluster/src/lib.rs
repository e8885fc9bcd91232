//! The cross-node bus of Starling: how relay nodes share events in real time.
//!
//! A node publishes every event it accepts, wrapped in an [`Envelope`] that names the node it
//! came from, and delivers what other nodes published to its own live subscribers. The relay
//! reaches other nodes only through the [`Bus`] trait; this crate holds the trait and its
//! implementations.
//!
//! Architecture invariant: payloads are opaque bytes here. The bus knows nothing of Nostr.

mod endpoint;
mod in_process;
mod limits;
mod redis_bus;
mod sentinel_url;
mod sequence;
mod wire;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::{broadcast, watch};

pub use endpoint::{RedisEndpoint, RedisSettings, Unusable};
pub use in_process::InProcessBus;
pub use limits::{Limiter, LocalLimiter, RedisLimiter};
pub use redis_bus::{BusSettings, RedisBus};
pub use sequence::{Seen, Sequences};

/// A Redis URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid Redis URL: {0}")]
pub struct InvalidUrl(String);

/// One published event and the node that accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Id of the node that accepted the event.
    pub origin: Arc<str>,
    /// The event's canonical JSON.
    pub payload: Bytes,
    /// When the origin published it, in microseconds since the Unix epoch.
    pub sent_at_micros: u64,
    /// The origin's run (its bus's start time in microseconds); set by the bus, 0 unset.
    pub epoch: u64,
    /// The envelope's number in the origin's run, from 1; set by the bus, 0 unset.
    pub seq: u64,
}

/// Microseconds since the Unix epoch, for [`Envelope::sent_at_micros`].
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A publish/subscribe channel shared by every node of a cluster.
pub trait Bus: Send + Sync + 'static {
    /// Publishes an envelope to every subscriber, this node's included. Never blocks: an
    /// implementation queues and sends in the background.
    fn publish(&self, envelope: Envelope);

    /// Every envelope published from now on, by any node, in publication order per node.
    fn subscribe(&self) -> BoxStream<'static, Envelope>;

    /// The bus's view of the cluster, updated as it changes.
    fn view(&self) -> watch::Receiver<ClusterView>;
}

/// What a node knows of the cluster through its bus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Whether envelopes from other nodes are arriving. After a time without, the node must
    /// catch up on what it missed from the shared store.
    pub connected: bool,
    /// Nodes that announced themselves recently, this one included.
    pub nodes: usize,
    /// How many times the connection was lost since start.
    pub reconnects: u64,
    /// How many times envelopes from other nodes were found missing (a gap in a node's
    /// numbers, a node restarted, or this node's receiver falling behind): each asks the
    /// node to catch up from the store.
    pub gaps: u64,
    /// How many times a link to Redis was silent past the bus timeout and was dropped.
    pub link_timeouts: u64,
}

/// Envelopes from a broadcast channel as a stream; a subscriber that falls behind skips
/// what it missed rather than ending, and counts it as a gap in `view` (so that its node
/// catches up on it from the store).
fn broadcast_stream(
    receiver: broadcast::Receiver<Envelope>,
    view: watch::Sender<ClusterView>,
) -> BoxStream<'static, Envelope> {
    stream::unfold((receiver, view), |(mut receiver, view)| async move {
        loop {
            match receiver.recv().await {
                Ok(envelope) => return Some((envelope, (receiver, view))),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    view.send_modify(|v| v.gaps += 1);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .boxed()
}
