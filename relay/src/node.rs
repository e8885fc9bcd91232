//! A running relay node: the parts every connection shares.

use std::{future::Future, sync::Arc, time::Duration};

use actix::{Actor, Addr};
use starling_cluster::{Bus, ClusterView, Limiter};
use tokio::sync::{oneshot, watch};

use crate::{
    actors::{
        live_index::Fanout,
        writer::{Write, WriteResult, Writer},
    },
    config::Config,
    metrics::Metrics,
    nostr::{KindClass, VerifiedEvent},
    policy,
    store::{EventStore, StoreError, WriteOutcome, metered::Metered},
};

/// Shared state of one relay node.
pub struct Node {
    /// The node's settings.
    pub config: Config,
    /// Where events are stored.
    pub store: Arc<dyn EventStore>,
    /// Batches writes to the store.
    pub writer: Addr<Writer>,
    /// Delivers accepted events to live subscribers here and on other nodes.
    pub fanout: Arc<Fanout>,
    /// This node's name in the cluster.
    pub node_id: Arc<str>,
    /// The cluster as the bus sees it.
    pub cluster: watch::Receiver<ClusterView>,
    /// Rate limits shared by the cluster's nodes.
    pub limiter: Arc<dyn Limiter>,
    /// This node's metrics.
    pub metrics: Arc<Metrics>,
}

impl Node {
    /// Starts the writer, the bus receiver, the catch-up after bus outages and the
    /// expiration sweeper for node `node_id`. Call it inside an actix system.
    pub fn start(
        config: Config,
        store: Arc<dyn EventStore>,
        bus: Arc<dyn Bus>,
        limiter: Arc<dyn Limiter>,
        node_id: Arc<str>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let cluster = bus.view();
        let store: Arc<dyn EventStore> = Arc::new(Metered::new(store, Arc::clone(&metrics)));
        let fanout = Fanout::new(bus, Arc::clone(&node_id), Arc::clone(&metrics));
        let writer = Writer::new(
            Arc::clone(&store),
            Arc::clone(&fanout),
            config.write_batch_size,
        )
        .start();
        actix_web::rt::spawn(Arc::clone(&fanout).receive_from_bus());
        actix_web::rt::spawn(crate::catch_up::run(
            Arc::clone(&fanout),
            Arc::clone(&store),
            cluster.clone(),
        ));
        actix_web::rt::spawn(sweep_expired(
            Arc::clone(&store),
            config.expiration_sweep_seconds,
        ));
        Arc::new(Self {
            config,
            store,
            writer,
            fanout,
            node_id,
            cluster,
            limiter,
            metrics,
        })
    }

    /// Takes a verified event in: ephemeral events go straight to live subscribers; others
    /// are stored first. Resolves once the outcome is final (committed, for stored events).
    /// The `publish` span after commit is a child of the span current at the call.
    pub fn ingest(&self, event: Arc<VerifiedEvent>) -> impl Future<Output = WriteResult> + 'static {
        let pending = if event.event.class() == KindClass::Ephemeral {
            let _publish = tracing::info_span!("publish").entered();
            self.fanout.publish(event);
            None
        } else {
            let (reply, outcome) = oneshot::channel();
            let span = tracing::Span::current();
            self.writer.do_send(Write { event, reply, span });
            Some(outcome)
        };
        async move {
            match pending {
                None => Ok(WriteOutcome::Stored),
                Some(outcome) => outcome.await.map_err(|_| StoreError::Closed)?,
            }
        }
    }
}

async fn sweep_expired(store: Arc<dyn EventStore>, every_seconds: u64) {
    let mut ticks = tokio::time::interval(Duration::from_secs(every_seconds.max(1)));
    loop {
        ticks.tick().await;
        match store.purge_expired(policy::now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "deleted expired events"),
            Err(error) => tracing::warn!(%error, "expiration sweep failed"),
        }
    }
}
