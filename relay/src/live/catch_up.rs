//! Catching up after a bus outage.
//!
//! While the bus is down, other nodes keep storing events this node's live subscribers do
//! not see. When the bus comes back, the node reads what was stored meanwhile from the
//! shared store, in insertion order, and delivers it; [`Fanout::deliver`] drops whatever
//! was delivered already, so each subscriber gets each event once.

use std::{sync::Arc, time::Duration};

use starling_cluster::ClusterView;
use tokio::sync::watch;

use super::Fanout;
use crate::store::EventStore;

/// How often the store position is sampled while the bus is up.
const SAMPLE: Duration = Duration::from_secs(1);

/// Events read from the store per round trip while catching up.
const BATCH: usize = 1000;

/// Watches the bus and replays stored events after each outage, until the bus ends.
///
/// `safe` is a store position up to which every event is known to have been delivered: the
/// position sampled one interval before the latest sample, which leaves time for writes
/// that were in flight (a stored event's position is taken before its commit) to arrive.
pub async fn run(
    fanout: Arc<Fanout>,
    store: Arc<dyn EventStore>,
    mut view: watch::Receiver<ClusterView>,
) {
    let mut latest = store.position().await.unwrap_or(0);
    let mut safe = latest;
    let mut was_connected = view.borrow().connected;
    let mut ticks = tokio::time::interval(SAMPLE);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if was_connected {
                    safe = latest;
                    latest = store.position().await.unwrap_or(latest);
                }
            }
            changed = view.changed() => {
                if changed.is_err() {
                    return;
                }
                let connected = view.borrow().connected;
                if connected && !was_connected {
                    safe = replay(&fanout, &store, safe).await;
                    latest = safe;
                }
                was_connected = connected;
            }
        }
    }
}

/// Delivers every stored event after position `from`; returns the position reached.
async fn replay(fanout: &Fanout, store: &Arc<dyn EventStore>, from: u64) -> u64 {
    let mut position = from;
    let mut delivered = 0;
    loop {
        match store.events_after(position, BATCH).await {
            Ok(events) if events.is_empty() => break,
            Ok(events) => {
                for (seq, json) in &events {
                    fanout.deliver_json(json);
                    position = *seq;
                }
                delivered += events.len();
            }
            Err(error) => {
                tracing::warn!(%error, "catching up after a bus outage failed; some live events may be missing");
                break;
            }
        }
    }
    tracing::info!(
        from,
        to = position,
        events = delivered,
        "caught up after a bus outage"
    );
    position
}
