//! The fan-out hub: hands every event this node accepts to each worker thread's live index
//! and to the cluster bus, and delivers what other nodes published.
//!
//! Every path into the live indexes passes through [`Fanout::deliver`], which delivers each
//! event once ([`RecentIds`]).

use std::sync::{Arc, Mutex, MutexGuard};

use actix::Recipient;
use futures_util::StreamExt;
use starling_cluster::{Bus, Envelope};

use super::{
    recent::RecentIds,
    thread::{self, Deliver, Subscriber},
};
use crate::{
    metrics::Metrics,
    nostr::{Event, VerifiedEvent},
};

/// The node's fan-out hub.
pub struct Fanout {
    indexes: Mutex<Vec<Recipient<Deliver>>>,
    recent: Mutex<RecentIds>,
    bus: Arc<dyn Bus>,
    node_id: Arc<str>,
    metrics: Arc<Metrics>,
}

impl Fanout {
    /// A hub publishing on `bus` as node `node_id`.
    pub fn new(bus: Arc<dyn Bus>, node_id: Arc<str>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            indexes: Mutex::new(Vec::new()),
            recent: Mutex::new(RecentIds::default()),
            bus,
            node_id,
            metrics,
        })
    }

    /// Starts the calling worker thread's index of `A` subscribers, unless it runs already,
    /// and delivers to it from then on. Call it inside an actix arbiter.
    pub fn start_local_index<A: Subscriber>(&self) {
        if let Some(index) = thread::start_here::<A>() {
            self.lock_indexes().push(index.recipient());
        }
    }

    /// Delivers an event this node accepted to local subscribers and publishes it to the
    /// other nodes.
    pub fn publish(&self, event: Arc<VerifiedEvent>) {
        let payload = bytes::Bytes::copy_from_slice(event.json.as_bytes());
        self.deliver(event);
        self.bus.publish(Envelope {
            origin: Arc::clone(&self.node_id),
            payload,
            sent_at_micros: starling_cluster::now_micros(),
        });
        self.metrics.bus_published.add(1, &[]);
    }

    /// Delivers an event to this node's live subscribers only, unless it was delivered
    /// recently already.
    pub fn deliver(&self, event: Arc<VerifiedEvent>) {
        let fresh = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(event.event.id);
        if !fresh {
            return;
        }
        for index in self.lock_indexes().iter() {
            index.do_send(Deliver(Arc::clone(&event)));
        }
    }

    /// Delivers what other nodes publish on the bus, until the bus ends.
    pub async fn receive_from_bus(self: Arc<Self>) {
        let mut envelopes = self.bus.subscribe();
        while let Some(envelope) = envelopes.next().await {
            if envelope.origin == self.node_id {
                continue;
            }
            self.metrics.bus_received.add(1, &[]);
            let latency = starling_cluster::now_micros().saturating_sub(envelope.sent_at_micros);
            self.metrics.bus_latency.record(latency as f64 / 1e6, &[]);
            match std::str::from_utf8(&envelope.payload) {
                Ok(json) => self.deliver_json(json),
                Err(_) => {
                    tracing::warn!(origin = %envelope.origin, "dropping a non-UTF-8 payload from the bus")
                }
            }
        }
    }

    /// Delivers an event given as JSON by another node or read back from the store.
    pub fn deliver_json(&self, json: &str) {
        match Event::parse(json) {
            Ok(event) => self.deliver(Arc::new(VerifiedEvent::trusted(event))),
            Err(error) => tracing::warn!(%error, "dropping a malformed event from the cluster"),
        }
    }

    fn lock_indexes(&self) -> MutexGuard<'_, Vec<Recipient<Deliver>>> {
        self.indexes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
