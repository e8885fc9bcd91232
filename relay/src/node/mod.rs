//! A running relay node: the services every connection shares.
//!
//! [`Node`] is the layer below the actors: connections reach the store, the writer, the
//! verifier, the fan-out, the cluster and the limits only through its methods, and nothing
//! here knows of connections beyond a [`Shutdown`] message to close them with.
//!
//! - [`writer`]: the Writer actor, which batches store writes and publishes after commit;
//! - [`admission`]: the open connections and subscriptions, within the node's caps;
//! - [`addresses`]: what the node knows of each client address (strikes, penalty, budget);
//! - [`queries`]: store queries admitted in fair shares, within budgets, cancellable;
//! - [`rulebook`]: the operator's rules in force, kept current with the store.

pub mod addresses;
pub mod admission;
pub mod queries;
pub mod rulebook;
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
    fair::{ClientAddress, Source},
    live::{Fanout, Subscriber, catch_up},
    metrics::{Metered, Metrics},
    nostr::{Event, EventError, Filter, KindClass, VerifiedEvent, hll::Hll},
    plugin::WritePolicy,
    policy::{self, rules::Rules},
    store::{
        Cancel, Cursor, EventStore, PageRequest, Record, Row, StoreError, WriteOutcome,
        policy::{AuditRecord, PolicyEdit},
    },
    verifier::Verifier,
};

pub use addresses::{AddressState, Penalty};
pub use admission::{Connections, Shutdown, Subscriptions};
pub use queries::{Asker, Refusal, Scheduler};
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
    subscriptions: Subscriptions,
    addresses: addresses::Addresses,
    queries: Arc<Scheduler>,
    /// Set once the node is stopping: `/readyz` says so and new connections are refused.
    draining: AtomicBool,
    /// The write-policy plugin, when one is configured.
    write_policy: Option<Arc<WritePolicy>>,
    /// The operator's rules in force.
    rulebook: Arc<rulebook::Rulebook>,
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
            Arc::clone(&metrics),
            config.write_batch_size,
        )
        .start();
        actix_web::rt::spawn(Arc::clone(&fanout).receive_from_bus());
        actix_web::rt::spawn(catch_up::run(
            Arc::clone(&fanout),
            Arc::clone(&store),
            cluster.clone(),
            Duration::from_secs(config.bus_timeout_seconds.max(1)),
        ));
        actix_web::rt::spawn(sweep_expired(
            Arc::clone(&store),
            config.expiration_sweep_seconds,
        ));
        let queries = Scheduler::new(config.concurrent_queries());
        let scheduler = Arc::clone(&queries);
        metrics.observe_queries(move || (scheduler.running() as u64, scheduler.waiting() as u64));
        let write_policy = config.write_policy_plugin.clone().map(|command| {
            let timeout = Duration::from_millis(config.write_policy_timeout_ms.max(1));
            WritePolicy::start(
                command,
                timeout,
                config.write_policy_on_error,
                Arc::clone(&metrics),
            )
        });
        let rulebook = Arc::new(rulebook::Rulebook::new(Rules::from_config(&config)));
        actix_web::rt::spawn(rulebook::keep_current(
            Arc::clone(&rulebook),
            config.clone(),
            Arc::clone(&store),
            writer.clone(),
            fanout.policy_versions(),
            cluster.clone(),
            Duration::from_secs(config.policy_reload_seconds.max(1)),
        ));
        Arc::new(Self {
            write_policy,
            rulebook,
            queries,
            subscriptions: Subscriptions::default(),
            addresses: addresses::Addresses::default(),
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

    /// The operator's rules on who may write and read, as they are now.
    pub fn rules(&self) -> Arc<Rules> {
        self.rulebook.current()
    }

    /// Reads the stored rules again now if they changed (see [`rulebook`]).
    pub async fn refresh_rules(&self) -> Result<bool, StoreError> {
        self.rulebook
            .refresh(&self.config, &*self.store, &self.writer)
            .await
    }

    /// Applies a change to the stored rules: writes it with its audit record, applies it
    /// on this node, and announces the new version to the others. Returns the version.
    pub async fn change_rules(
        &self,
        edits: Vec<PolicyEdit>,
        audit: AuditRecord,
    ) -> Result<u64, StoreError> {
        let version = self.store.change_policy(edits, audit).await?;
        self.refresh_rules().await?;
        self.fanout.announce_policy(version);
        Ok(version)
    }

    /// The write-policy plugin, when one is configured.
    pub fn write_policy(&self) -> Option<&WritePolicy> {
        self.write_policy.as_deref()
    }

    /// Checks an event's id and signature on the verifier pool, in `source`'s turn.
    pub async fn verify(&self, source: Source, event: Event) -> Result<VerifiedEvent, EventError> {
        self.verifier.verify(source, event).await
    }

    /// Admits a new connection from `address` unless the node holds `max_connections`.
    pub fn admit_connection(self: &Arc<Self>, address: ClientAddress) -> Option<Admission> {
        let key = self.connections.admit(self.config.max_connections)?;
        Some(Admission {
            node: Arc::clone(self),
            source: Source {
                address,
                connection: key,
            },
            address: self.addresses.get(address, &self.config),
        })
    }

    /// Counts a new subscription unless the node holds `max_node_subscriptions`; the count
    /// is given back when the returned value is dropped.
    pub fn admit_subscription(self: &Arc<Self>) -> Option<SubscriptionPlace> {
        self.subscriptions
            .admit(self.config.max_node_subscriptions)
            .then(|| SubscriptionPlace(Arc::clone(self)))
    }

    /// Reads one page of stored events for `asker`, in its turn and within its budgets (see
    /// [`queries`]); the rows, and how long the store took. When `cancel` is raised the read
    /// stops, and its places are given back once the store has stopped.
    pub async fn read_page(
        &self,
        asker: &Asker,
        filters: Arc<[Filter]>,
        request: PageRequest,
        now: u64,
        cancel: &Cancel,
    ) -> Result<(Vec<Row>, Duration), Refusal> {
        let broad = queries::is_broad(&filters[request.filter]);
        let places = asker.admit(&self.queries, broad, cancel).await?;
        let (store, cancel) = (Arc::clone(&self.store), cancel.clone());
        run_admitted(places, asker.clone(), async move {
            let filter = &filters[request.filter];
            store
                .page(filter, request.after, request.count, now, &cancel)
                .await
        })
        .await
    }

    /// The `created_at` and id of one page of stored events for `asker`, without their
    /// JSON, admitted like [`Node::read_page`].
    pub async fn read_records(
        &self,
        asker: &Asker,
        filter: Filter,
        after: Option<Cursor>,
        count: usize,
        cancel: &Cancel,
    ) -> Result<Vec<Record>, Refusal> {
        let places = asker
            .admit(&self.queries, queries::is_broad(&filter), cancel)
            .await?;
        let (store, cancel) = (Arc::clone(&self.store), cancel.clone());
        let now = policy::now();
        run_admitted(places, asker.clone(), async move {
            store.records(&filter, after, count, now, &cancel).await
        })
        .await
        .map(|(records, _)| records)
    }

    /// Counts the events matching `filters` for `asker`, admitted like [`Node::read_page`].
    pub async fn count(
        &self,
        asker: &Asker,
        filters: Arc<[Filter]>,
        now: u64,
        cancel: &Cancel,
    ) -> Result<u64, Refusal> {
        // A count reads every match: it takes the heavy askers' places.
        let places = asker.admit(&self.queries, true, cancel).await?;
        let (store, cancel) = (Arc::clone(&self.store), cancel.clone());
        run_admitted(places, asker.clone(), async move {
            store.count(&filters, now, &cancel).await
        })
        .await
        .map(|(count, _)| count)
    }

    /// The NIP-45 HLL of `filter`'s events at `offset` for `asker`, admitted like
    /// [`Node::count`].
    pub async fn hll(
        &self,
        asker: &Asker,
        filter: Filter,
        offset: usize,
        now: u64,
        cancel: &Cancel,
    ) -> Result<Hll, Refusal> {
        let places = asker.admit(&self.queries, true, cancel).await?;
        let (store, cancel) = (Arc::clone(&self.store), cancel.clone());
        run_admitted(places, asker.clone(), async move {
            store.hll(&filter, offset, now, &cancel).await
        })
        .await
        .map(|(hll, _)| hll)
    }

    /// Takes a verified event in: ephemeral events go straight to live subscribers; others
    /// are stored first. Resolves once the outcome is final (committed, for stored events).
    /// The `publish` span after commit is a child of the span current at the call.
    pub fn ingest(
        &self,
        source: Source,
        event: Arc<VerifiedEvent>,
    ) -> impl Future<Output = WriteResult> + 'static {
        let pending = if event.event.class() == KindClass::Ephemeral {
            let _publish = tracing::debug_span!("publish").entered();
            self.fanout.publish(event);
            None
        } else {
            let (reply, outcome) = oneshot::channel();
            let span = tracing::Span::current();
            self.writer.do_send(Write {
                source,
                event,
                reply,
                span,
            });
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

/// Runs admitted store `work` in a task of its own that holds `places` until the work has
/// ended (cancelled or not), and charges what it took to `asker`; its answer and that time.
async fn run_admitted<T: Send + 'static>(
    places: queries::Places,
    asker: Asker,
    work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<(T, Duration), Refusal> {
    let task = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let result = work.await;
        let took = started.elapsed();
        asker.charge(took);
        drop(places);
        result.map(|value| (value, took))
    });
    match task.await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(StoreError::Cancelled)) | Err(_) => Err(Refusal::Cancelled),
        Ok(Err(error)) => Err(Refusal::Store(error)),
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

/// A connection admitted by the node: its number and address, given back when dropped.
pub struct Admission {
    node: Arc<Node>,
    /// The connection's address and number.
    pub source: Source,
    /// What the node knows of its address.
    pub address: Arc<AddressState>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.node.connections.release(self.source.connection);
    }
}

/// A subscription counted by the node, given back when dropped.
pub struct SubscriptionPlace(Arc<Node>);

impl SubscriptionPlace {
    /// The node the subscription belongs to.
    pub fn node(&self) -> &Arc<Node> {
        &self.0
    }
}

impl Drop for SubscriptionPlace {
    fn drop(&mut self) {
        self.0.subscriptions.release();
    }
}
