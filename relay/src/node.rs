//! A running relay node: the parts every connection shares.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use actix::{Actor, Addr, Recipient};
use starling_cluster::{Bus, ClusterView, Limiter};
use tokio::sync::{oneshot, watch};

use crate::{
    actors::{
        connection::Shutdown,
        live_index::Fanout,
        writer::{Flush, Write, WriteResult, Writer},
    },
    config::Config,
    metrics::Metrics,
    nostr::{KindClass, VerifiedEvent},
    policy,
    store::{EventStore, StoreError, WriteOutcome, metered::Metered},
    verifier::Verifier,
};

/// Shared state of one relay node.
pub struct Node {
    /// The node's settings.
    pub config: Config,
    /// Where events are stored.
    pub store: Arc<dyn EventStore>,
    /// Batches writes to the store.
    pub writer: Addr<Writer>,
    /// Checks signatures on threads of its own.
    pub verifier: Arc<Verifier>,
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
    /// Set once the node is stopping: `/readyz` says so and new connections are refused.
    draining: AtomicBool,
    /// The open connections, to close when the node stops.
    connections: Mutex<HashMap<u64, Recipient<Shutdown>>>,
    next_connection: AtomicU64,
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
            verifier: Verifier::per_core(),
            fanout,
            node_id,
            cluster,
            limiter,
            metrics,
            draining: AtomicBool::new(false),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
        })
    }

    /// Records an open connection; returns the key to [`Node::unregister`] it with.
    pub fn register(&self, connection: Recipient<Shutdown>) -> u64 {
        let key = self.next_connection.fetch_add(1, Ordering::Relaxed);
        self.lock_connections().insert(key, connection);
        key
    }

    /// Forgets a closed connection.
    pub fn unregister(&self, key: u64) {
        self.lock_connections().remove(&key);
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
        let open: Vec<Recipient<Shutdown>> = self.lock_connections().values().cloned().collect();
        tracing::info!(connections = open.len(), "closing connections");
        for connection in open {
            connection.do_send(Shutdown);
        }
        let closing = async {
            while !self.lock_connections().is_empty() {
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

    fn lock_connections(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Recipient<Shutdown>>> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
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
