//! Catching up from the store on what the bus did not bring.
//!
//! Other nodes store events this node's live subscribers must see even when the bus loses
//! them: while it is down or its link silently dead, when a publish failed or was dropped,
//! when this node's receiver fell behind. The bus reports each of these
//! ([`ClusterView::reconnects`], [`ClusterView::gaps`]), and this task then reads what was
//! stored since a position sampled at least [`LOOKBACK`] before (a gap is found within a
//! heartbeat or a bus timeout of the loss), in insertion order, and delivers it through
//! [`Fanout::deliver`], which drops what was delivered already: each subscriber gets each
//! event once, and a node never gets its own again. Expired events are not delivered, and
//! deleted or vanished ones are no longer stored.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use opentelemetry::KeyValue;
use starling_cluster::ClusterView;
use tokio::sync::watch;

use super::Fanout;
use crate::{
    nostr::{Event, VerifiedEvent},
    store::EventStore,
};

/// How often the store position is sampled while the bus is up.
const SAMPLE: Duration = Duration::from_secs(1);

/// How far back a catch-up reads beyond the bus timeout: the heartbeat that reveals a lost
/// last message, and the time a write takes to commit after its position is drawn.
const MARGIN: Duration = Duration::from_secs(3);

/// How far back a catch-up reads at most: the bus timeout (at most this long) and [`MARGIN`].
pub const LOOKBACK: Duration = Duration::from_secs(30 + 3);

/// Events read from the store per round trip while catching up.
const BATCH: usize = 1000;

/// Watches the bus and replays stored events after each outage or gap, until the bus ends.
/// `bus_timeout` is the bus's `--bus-timeout-seconds`.
pub async fn run(
    fanout: Arc<Fanout>,
    store: Arc<dyn EventStore>,
    mut view: watch::Receiver<ClusterView>,
    bus_timeout: Duration,
) {
    let lookback = (bus_timeout + MARGIN).min(LOOKBACK);
    let keep = (lookback.as_secs_f64() / SAMPLE.as_secs_f64()).ceil() as usize + 1;
    // Positions sampled while the bus was up, oldest first; the oldest is where a
    // catch-up starts.
    let mut samples = VecDeque::from([store.position().await.unwrap_or(0)]);
    let mut seen = *view.borrow();
    let mut ticks = tokio::time::interval(SAMPLE);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if view.borrow().connected {
                    if let Ok(position) = store.position().await {
                        samples.push_back(position);
                    }
                    while samples.len() > keep {
                        samples.pop_front();
                    }
                }
            }
            changed = view.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *view.borrow_and_update();
                fanout.hold_recent(!now.connected);
                let reason = if now.gaps != seen.gaps {
                    "gap"
                } else if now.connected && now.reconnects != seen.reconnects {
                    "reconnect"
                } else {
                    continue;
                };
                seen = now;
                let from = samples.front().copied().unwrap_or(0);
                fanout
                    .metrics()
                    .catch_ups
                    .add(1, &[KeyValue::new("reason", reason)]);
                replay(&fanout, &store, from, reason).await;
            }
        }
    }
}

/// Delivers every stored, unexpired event after position `from`; returns the position
/// reached.
async fn replay(fanout: &Fanout, store: &Arc<dyn EventStore>, from: u64, reason: &str) -> u64 {
    let mut position = from;
    let (mut read, mut delivered) = (0, 0);
    let now = crate::policy::now();
    loop {
        match store.events_after(position, BATCH).await {
            Ok(events) if events.is_empty() => break,
            Ok(events) => {
                for (seq, json) in &events {
                    position = *seq;
                    let Ok(event) = Event::parse(json) else {
                        continue;
                    };
                    if event
                        .expiration()
                        .ok()
                        .flatten()
                        .is_some_and(|at| at <= now)
                    {
                        continue;
                    }
                    if fanout.deliver(Arc::new(VerifiedEvent::trusted(event))) {
                        delivered += 1;
                    }
                }
                read += events.len();
            }
            Err(error) => {
                tracing::warn!(%error, "catching up from the store failed; some live events may be missing");
                break;
            }
        }
    }
    fanout.metrics().catch_up_events.add(delivered, &[]);
    tracing::info!(
        reason,
        from,
        to = position,
        read,
        delivered,
        "caught up from the store"
    );
    position
}
