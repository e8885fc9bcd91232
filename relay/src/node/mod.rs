//! A running relay node: the services every connection shares.
//!
//! [`Node`] is the layer below the actors: connections reach the store, the writer, the
//! verifier, the fan-out, the cluster and the limits only through its methods, and nothing
//! here knows of connections beyond a [`Shutdown`] message to close them with.
//!
//! - [`writer`]: the Writer actor, which batches store writes and publishes after commit;
//! - [`registry`]: the open connections, closed when the node stops.

pub mod registry;
pub mod writer;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use actix::{Actor, Addr};
use starling_cluster::{Bus, ClusterView, Limiter};
use tokio::sync::{oneshot, watch};

use crate::{
    config::Config,
    live::{Fanout, Subscriber, catch_up},
    metrics::{Metered, Metrics},
    nostr::{Event, EventError, KindClass, VerifiedEvent},
    policy,
    store::{EventStore, StoreError, WriteOutcome},
    verifier::Verifier,
};

pub use registry::{Connections, Shutdown};
pub use writer::WriteResult;
use writer::{Flush, Write, Writer};

/// Shared state of one relay node.
pub struct Node {
    config: Config,
    id: Arc<str>,
    metrics: Arc<Metrics>,
    store: Arc<dyn EventStore>,
    writer: Addr<Writer>,
    verifier: Arc<Verifier>,
    fanout: Arc<Fanout>,
    cluster: watch::Receiver<ClusterView>,
    limiter: Arc<dyn Limiter>,
    connections: Connections,
    /// Set once the node is stopping: `/readyz` says so and new connections are refused.
    draining: AtomicBool,
}

impl Node {
    /// Starts the writer, the bus receiver, the catch-up after bus outages and the
    /// expiration sweeper for node `id`. Call it inside an actix system.
    pub fn start(
        config: Config,
        store: Arc<dyn EventStore>,
        bus: Arc<dyn Bus>,
        limiter: Arc<dyn Limiter>,
        id: Arc<str>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let cluster = bus.view();
        let store: Arc<dyn EventStore> = Arc::new(Metered::new(store, Arc::clone(&metrics)));
        let fanout = Fanout::new(bus, Arc::clone(&id), Arc::clone(&metrics));
        let writer = Writer::new(
            Arc::clone(&store),
            Arc::clone(&fanout),
            config.write_batch_size,
        )
        .start();
        actix_web::rt::spawn(Arc::clone(&fanout).receive_from_bus());
        actix_web::rt::spawn(catch_up::run(
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
            id,
            metrics,
            store,
            writer,
            verifier: Verifier::per_core(),
            fanout,
            cluster,
            limiter,
            connections: Connections::default(),
            draining: AtomicBool::new(false),
        })
    }

    /// The node's settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This node's name in the cluster.
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// This node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The store, for queries and counts (writes go through [`Node::ingest`]).
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Rate limits shared by the cluster's nodes.
    pub fn limiter(&self) -> &Arc<dyn Limiter> {
        &self.limiter
    }

    /// The cluster as the bus sees it now.
    pub fn cluster(&self) -> ClusterView {
        *self.cluster.borrow()
    }

    /// The open connections.
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Starts the calling worker thread's live index of `A` subscribers, unless it runs
    /// already. A connection calls it when it starts, so its subscriptions find the index.
    pub fn start_live_index<A: Subscriber>(&self) {
        self.fanout.start_local_index::<A>();
    }

    /// Checks an event's id and signature on the verifier pool.
    pub async fn verify(&self, event: Event) -> Result<VerifiedEvent, EventError> {
        self.verifier.verify(event).await
    }

    /// Takes a verified event in: ephemeral events go straight to live subscribers; others
    /// are stored first. Resolves once the outcome is final (committed, for stored events).
    /// The `publish` span after commit is a child of the span current at the call.
    pub fn ingest(&self, event: Arc<VerifiedEvent>) -> impl Future<Output = WriteResult> + 'static {
        let pending = if event.event.class() == KindClass::Ephemeral {
            let _publish = tracing::debug_span!("publish").entered();
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

    /// Whether the node is stopping.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Stops gracefully: says it is draining (`/readyz`), keeps serving for `drain`, then
    /// closes every connection with code 1001 and waits until every event handed to the
    /// writer is committed. Events answered `OK true` are never lost.
    pub async fn shut_down(&self, drain: Duration) {
        self.draining.store(true, Ordering::Relaxed);
        tracing::info!(seconds = drain.as_secs(), "draining");
        tokio::time::sleep(drain).await;
        let open = self.connections.shut_down_all();
        tracing::info!(connections = open, "closing connections");
        let closing = async {
            while !self.connections.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
        let (done, flushed) = oneshot::channel();
        self.writer.do_send(Flush(done));
        if tokio::time::timeout(Duration::from_secs(30), flushed)
            .await
            .is_err()
        {
            tracing::warn!("the writer did not finish in 30 s");
        }
    }
}

/// Deletes expired (NIP-40) events every `every_seconds`.
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
