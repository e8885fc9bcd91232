//! The fan-out hub: hands every event this node accepts to each worker thread's live index
//! and to the cluster bus, and delivers what other nodes published.
//!
//! Every path into the live indexes passes through [`Fanout::deliver`], which delivers each
//! event once ([`RecentIds`]).
//!
//! The bus also carries announcements of new versions of the operator's rules: a payload
//! that is a JSON array `["policy", <version>]` (events are JSON objects), which
//! [`Fanout::policy_versions`] reports.

use std::{
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
};

use actix::Recipient;
use futures_util::StreamExt;
use starling_cluster::{Bus, Envelope};
use tokio::sync::watch;

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
    /// The last rules version announced on the bus.
    policy_versions: watch::Sender<u64>,
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
            policy_versions: watch::Sender::new(0),
        })
    }

    /// Tells the other nodes that the stored rules are now at `version`.
    pub fn announce_policy(&self, version: u64) {
        self.bus.publish(Envelope {
            origin: Arc::clone(&self.node_id),
            payload: serde_json::json!(["policy", version]).to_string().into(),
            sent_at_micros: starling_cluster::now_micros(),
            epoch: 0,
            seq: 0,
        });
    }

    /// The rules versions other nodes announce, as they arrive.
    pub fn policy_versions(&self) -> watch::Receiver<u64> {
        self.policy_versions.subscribe()
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
        let _ = self.deliver(event);
        self.bus.publish(Envelope {
            origin: Arc::clone(&self.node_id),
            payload,
            sent_at_micros: starling_cluster::now_micros(),
            epoch: 0,
            seq: 0,
        });
        self.metrics.bus_published.add(1, &[]);
    }

    /// Delivers an event to this node's live subscribers only, unless it was delivered
    /// recently already.
    /// Whether it was new.
    pub fn deliver(&self, event: Arc<VerifiedEvent>) -> bool {
        let fresh = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(event.event.id, std::time::Instant::now());
        if !fresh {
            return false;
        }
        for index in self.lock_indexes().iter() {
            index.do_send(Deliver(Arc::clone(&event)));
        }
        true
    }

    /// Delivers what other nodes publish on the bus from now on, until the bus ends.
    pub fn receive_from_bus(self: Arc<Self>) -> impl Future<Output = ()> + 'static {
        let mut envelopes = self.bus.subscribe();
        async move {
            while let Some(envelope) = envelopes.next().await {
                if envelope.origin == self.node_id {
                    continue;
                }
                self.metrics.bus_received.add(1, &[]);
                let latency =
                    starling_cluster::now_micros().saturating_sub(envelope.sent_at_micros);
                self.metrics.bus_latency.record(latency as f64 / 1e6, &[]);
                match std::str::from_utf8(&envelope.payload) {
                    Ok(json) if json.starts_with('[') => self.on_announcement(json),
                    Ok(json) => self.deliver_json(json),
                    Err(_) => {
                        tracing::warn!(origin = %envelope.origin, "dropping a non-UTF-8 payload from the bus")
                    }
                }
            }
        }
    }

    /// Stops (`true`) or resumes forgetting delivered ids by age (see [`RecentIds::hold`]).
    pub fn hold_recent(&self, held: bool) {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hold(held);
    }

    /// This node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Delivers an event given as JSON by another node or read back from the store.
    pub fn deliver_json(&self, json: &str) {
        match Event::parse(json) {
            Ok(event) => {
                let _ = self.deliver(Arc::new(VerifiedEvent::trusted(event)));
            }
            Err(error) => tracing::warn!(%error, "dropping a malformed event from the cluster"),
        }
    }

    fn on_announcement(&self, json: &str) {
        match serde_json::from_str::<(String, u64)>(json) {
            Ok((topic, version)) if topic == "policy" => {
                self.policy_versions.send_replace(version);
            }
            _ => tracing::warn!("dropping an unknown announcement from the cluster"),
        }
    }

    fn lock_indexes(&self) -> MutexGuard<'_, Vec<Recipient<Deliver>>> {
        self.indexes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use actix::Actor;
    use starling_cluster::InProcessBus;

    use super::*;
    use crate::{
        live::probe::{Probe, Received},
        nostr::Keys,
    };

    fn signed(content: &str) -> Event {
        Keys::from_secret([4; 32])
            .unwrap()
            .sign(1, 1, vec![], content)
    }

    /// Waits until the probe has received `count` events; what it received.
    async fn received(probe: &actix::Addr<Probe>, count: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let got = probe.send(Received).await.unwrap();
            if got.len() >= count || std::time::Instant::now() > deadline {
                return got;
            }
            tokio::task::yield_now().await;
        }
    }

    #[actix::test]
    async fn delivers_each_event_once_and_only_other_nodes_events_from_the_bus() {
        let bus = Arc::new(InProcessBus::new());
        let view = bus.view();
        let metrics = Arc::new(Metrics::new("a", view).unwrap());
        let fanout = Fanout::new(Arc::clone(&bus) as Arc<dyn Bus>, "a".into(), metrics);
        fanout.start_local_index::<Probe>();
        let probe = Probe::new(1, "{}").start();
        // Once the probe answers, it has started and registered.
        assert!(probe.send(Received).await.unwrap().is_empty());
        actix::spawn(Arc::clone(&fanout).receive_from_bus());

        let first = Arc::new(VerifiedEvent::trusted(signed("first")));
        fanout.publish(Arc::clone(&first));
        fanout.deliver(Arc::clone(&first));
        fanout.deliver_json(&first.json);
        let from_b = signed("from b");
        bus.publish(Envelope {
            origin: "b".into(),
            payload: from_b.to_json().into(),
            sent_at_micros: 0,
            epoch: 0,
            seq: 0,
        });
        let own = signed("own, seen on the bus only");
        bus.publish(Envelope {
            origin: "a".into(),
            payload: own.to_json().into(),
            sent_at_micros: 0,
            epoch: 0,
            seq: 0,
        });
        let witness = signed("witness");
        bus.publish(Envelope {
            origin: "c".into(),
            payload: witness.to_json().into(),
            sent_at_micros: 0,
            epoch: 0,
            seq: 0,
        });
        assert_eq!(received(&probe, 3).await, ["first", "from b", "witness"]);
    }
}
