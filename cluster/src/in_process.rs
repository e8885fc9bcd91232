//! A bus inside one process: what a single node uses, and what lets several nodes in one
//! process share events without any server.

use futures_util::stream::BoxStream;
use tokio::sync::{broadcast, watch};

use crate::{Bus, ClusterView, Envelope};

/// Envelopes a slow subscriber may fall behind by before it skips the oldest.
const CAPACITY: usize = 4096;

/// A [`Bus`] over a tokio broadcast channel. Clones share the channel.
#[derive(Clone)]
pub struct InProcessBus {
    sender: broadcast::Sender<Envelope>,
    state: watch::Sender<ClusterView>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        let state = ClusterView {
            connected: true,
            nodes: 1,
            reconnects: 0,
            gaps: 0,
            link_timeouts: 0,
        };
        Self {
            sender: broadcast::channel(CAPACITY).0,
            state: watch::Sender::new(state),
        }
    }
}

impl InProcessBus {
    /// A new, empty bus.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Bus for InProcessBus {
    fn publish(&self, envelope: Envelope) {
        // Without subscribers there is nobody to tell; that is not an error.
        let _ = self.sender.send(envelope);
    }

    fn subscribe(&self) -> BoxStream<'static, Envelope> {
        crate::broadcast_stream(self.sender.subscribe(), self.state.clone())
    }

    fn view(&self) -> watch::Receiver<ClusterView> {
        self.state.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn every_subscriber_gets_every_envelope_in_order() {
        let bus = InProcessBus::new();
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        for n in 0..3 {
            bus.publish(Envelope {
                origin: Arc::from("node-1"),
                payload: Bytes::from(format!("{n}")),
                sent_at_micros: 0,
                epoch: 0,
                seq: 0,
            });
        }
        for sub in [&mut a, &mut b] {
            for n in 0..3 {
                let got = sub.next().await.expect("an envelope");
                assert_eq!(got.payload, Bytes::from(format!("{n}")));
                assert_eq!(&*got.origin, "node-1");
            }
        }
    }
}
