//! Metrics: OpenTelemetry instruments, exported in the Prometheus text format at `/metrics`,
//! and pushed over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (every
//! `OTEL_METRIC_EXPORT_INTERVAL` milliseconds, 60 s by default).
//!
//! Every series carries the node id as the label `node` (a resource attribute the exporter
//! copies onto each series). Names follow the OpenTelemetry conventions (`starling.*`, units
//! as UCUM); the exporter turns them into Prometheus names (`starling_*`, counters with
//! `_total`, units such as `_seconds`). The README lists every metric.

use std::{collections::HashSet, sync::Arc};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter, MeterProvider, UpDownCounter},
};
use opentelemetry_sdk::{Resource, metrics::SdkMeterProvider};
use prometheus::{Encoder, TextEncoder};
use starling_cluster::ClusterView;
use tokio::sync::watch;

use crate::{policy::Strike, store::EventStore};

mod gauges;
mod metered;

pub use metered::Metered;

/// Label carrying the node id on every series.
pub const NODE_LABEL: &str = "node";

/// The `limit` labels of `starling_rate_limited_total`: every limit that refuses something.
pub const LIMITS: [&str; 8] = [
    "connections",
    "node-connections",
    "events",
    "requests",
    "subscriptions",
    "node-subscriptions",
    "filter-bytes",
    "store-time",
];

/// The `action` labels of `starling_write_policy_decisions_total`.
pub const WRITE_POLICY_ACTIONS: [&str; 5] =
    ["accept", "reject", "shadowReject", "timeout", "unavailable"];

/// The `outcome` labels of `starling_auth_total`.
pub const AUTH_OUTCOMES: [&str; 4] = ["accepted", "invalid", "forged", "restricted"];

/// The node's instruments and the registry they export to.
pub struct Metrics {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    meter: Meter,
    /// Connections opened.
    pub connections_opened: Counter<u64>,
    /// Connections closed, by `reason`.
    pub connections_closed: Counter<u64>,
    /// Connections open now.
    pub connections_open: UpDownCounter<i64>,
    /// Subscriptions open now.
    pub subscriptions_open: UpDownCounter<i64>,
    /// Client messages, by `type` (EVENT, REQ, CLOSE, COUNT, invalid).
    pub messages_received: Counter<u64>,
    /// Relay messages, by `type` (EVENT, OK, EOSE, CLOSED, NOTICE, COUNT).
    pub messages_sent: Counter<u64>,
    /// Events accepted, by `kind_class`.
    pub events_accepted: Counter<u64>,
    /// Events refused, by `kind_class` and `reason` (the NIP-01 prefix).
    pub events_refused: Counter<u64>,
    /// Store operation latency, by `operation`.
    pub store_duration: Histogram<f64>,
    /// Events per write batch.
    pub write_batch_size: Histogram<u64>,
    /// Events this node published on the bus.
    pub bus_published: Counter<u64>,
    /// Events received from other nodes over the bus.
    pub bus_received: Counter<u64>,
    /// Time from another node's publish to receipt here.
    pub bus_latency: Histogram<f64>,
    /// Live events sent to subscriptions.
    pub deliveries: Counter<u64>,
    /// Clients disconnected because they did not read.
    pub slow_clients_dropped: Counter<u64>,
    /// Bytes of text messages compressed (permessage-deflate), before compression.
    pub compression_input_bytes: Counter<u64>,
    /// Bytes those messages came to, compressed.
    pub compression_output_bytes: Counter<u64>,
    /// Text messages sent compressed.
    pub messages_compressed: Counter<u64>,
    /// Compressed client messages refused for inflating past the message bound.
    pub inflate_refused: Counter<u64>,
    /// Requests refused by a rate limit, by `limit`.
    pub rate_limited: Counter<u64>,
    /// Strikes against connections, by `reason`.
    pub strikes: Counter<u64>,
    /// Times an address passed its strikes and was slowed.
    pub addresses_penalized: Counter<u64>,
    /// Write batches the store refused, written again one event at a time.
    pub batches_split: Counter<u64>,
    /// Connections from trusted balancers closed for their PROXY header, by `reason`.
    pub proxy_refused: Counter<u64>,
    /// NIP-42 `AUTH` messages, by `outcome`.
    pub auth: Counter<u64>,
    /// `REQ`s and `COUNT`s refused by the access rules, by `reason` (the NIP-01 prefix).
    pub requests_refused: Counter<u64>,
    /// Write-policy plugin decisions, by `action` (or why there was none).
    pub write_policy_decisions: Counter<u64>,
    /// Time from asking the write-policy plugin to its answer (or giving up).
    pub write_policy_duration: Histogram<f64>,
    /// NIP-86 management API calls, by `method` and `outcome`.
    pub management_calls: Counter<u64>,
    /// Catch-ups from the store, by `reason` (`reconnect`, `gap`).
    pub catch_ups: Counter<u64>,
    /// Events delivered by catch-ups (new to this node; those it had are not counted).
    pub catch_up_events: Counter<u64>,
    /// Whether the store's last operation reached the database (see [`Metrics::store_up`]).
    store_up: Arc<std::sync::atomic::AtomicBool>,
}

impl Metrics {
    /// Instruments for node `node_id`, with gauges read from `cluster` and the process.
    pub fn new(node_id: &str, cluster: watch::Receiver<ClusterView>) -> anyhow::Result<Self> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .without_target_info()
            .with_resource_selector(HashSet::from([opentelemetry::Key::new(NODE_LABEL)]))
            .build()?;
        let resource = Resource::builder_empty()
            .with_attribute(KeyValue::new(NODE_LABEL, node_id.to_string()))
            .build();
        let mut provider = SdkMeterProvider::builder()
            .with_reader(exporter)
            .with_resource(resource);
        if crate::telemetry::otlp_enabled() {
            let otlp = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()?;
            provider = provider
                .with_reader(opentelemetry_sdk::metrics::PeriodicReader::builder(otlp).build());
        }
        let provider = provider.build();
        let meter = provider.meter("starling");
        gauges::observe(&meter, cluster);
        let store_up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let up = Arc::clone(&store_up);
        meter
            .u64_observable_gauge("starling.store.up")
            .with_description("1 while the store's last operation reached the database")
            .with_callback(move |o| {
                o.observe(
                    u64::from(up.load(std::sync::atomic::Ordering::Relaxed)),
                    &[],
                )
            })
            .build();
        let counter = |name: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_description(description)
                .build()
        };
        let gauge = |name: &'static str, description: &'static str| {
            meter
                .i64_up_down_counter(name)
                .with_description(description)
                .build()
        };
        let latency_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let metrics = Self {
            connections_opened: counter(
                "starling.connections.opened",
                "WebSocket connections opened",
            ),
            connections_closed: counter(
                "starling.connections.closed",
                "WebSocket connections closed, by reason",
            ),
            connections_open: gauge(
                "starling.connections.open",
                "WebSocket connections open now",
            ),
            subscriptions_open: gauge("starling.subscriptions.open", "Subscriptions open now"),
            messages_received: counter(
                "starling.messages.received",
                "Client messages received, by type",
            ),
            messages_sent: counter("starling.messages.sent", "Relay messages sent, by type"),
            events_accepted: counter("starling.events.accepted", "Events accepted, by kind class"),
            events_refused: counter(
                "starling.events.refused",
                "Events refused, by kind class and reason",
            ),
            store_duration: meter
                .f64_histogram("starling.store.operation.duration")
                .with_unit("s")
                .with_description("Store operation latency, by operation")
                .with_boundaries(latency_buckets.clone())
                .build(),
            write_batch_size: meter
                .u64_histogram("starling.store.write.batch.size")
                .with_description("Events per write batch")
                .with_boundaries(vec![
                    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
                ])
                .build(),
            bus_published: counter(
                "starling.bus.published",
                "Events this node published on the bus",
            ),
            bus_received: counter(
                "starling.bus.received",
                "Events received from other nodes over the bus",
            ),
            bus_latency: meter
                .f64_histogram("starling.bus.delivery.latency")
                .with_unit("s")
                .with_description("Time from another node's publish to receipt here")
                .with_boundaries(latency_buckets)
                .build(),
            deliveries: counter("starling.deliveries", "Live events sent to subscriptions"),
            slow_clients_dropped: counter(
                "starling.slow_clients.dropped",
                "Clients disconnected for not reading",
            ),
            compression_input_bytes: counter(
                "starling.compression.input.bytes",
                "Bytes of text messages sent compressed, before compression",
            ),
            compression_output_bytes: counter(
                "starling.compression.output.bytes",
                "Bytes of text messages sent compressed, after compression",
            ),
            messages_compressed: counter(
                "starling.compression.messages",
                "Text messages sent compressed (permessage-deflate)",
            ),
            inflate_refused: counter(
                "starling.compression.inflate_refused",
                "Compressed client messages refused for inflating past the message bound",
            ),
            rate_limited: counter(
                "starling.rate_limited",
                "Requests refused by a rate limit, by limit",
            ),
            strikes: counter(
                "starling.strikes",
                "Strikes against connections (what a client did wrong), by reason",
            ),
            addresses_penalized: counter(
                "starling.addresses.penalized",
                "Times a client address passed its strikes and was slowed",
            ),
            batches_split: counter(
                "starling.store.batches.split",
                "Write batches the store refused, written again one event at a time",
            ),
            proxy_refused: counter(
                "starling.proxy.refused",
                "Connections from trusted balancers closed for a missing, malformed or late PROXY header, by reason",
            ),
            write_policy_decisions: counter(
                "starling.write_policy.decisions",
                "Write-policy plugin decisions: accept, reject, shadowReject, or timeout and unavailable when it gave none",
            ),
            write_policy_duration: meter
                .f64_histogram("starling.write_policy.duration")
                .with_unit("s")
                .with_description(
                    "Time the write-policy plugin took to answer, or until the relay gave up",
                )
                .with_boundaries(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .build(),
            requests_refused: counter(
                "starling.requests.refused",
                "REQs and COUNTs refused by the access rules (private kinds, members only), by reason",
            ),
            catch_ups: counter(
                "starling.catch_up",
                "Catch-ups from the store after a bus outage or a gap, by reason (reconnect, gap)",
            ),
            catch_up_events: counter(
                "starling.catch_up.events",
                "Events a catch-up delivered that had not reached this node over the bus",
            ),
            management_calls: counter(
                "starling.management.calls",
                "NIP-86 management API calls, by method and outcome (ok, invalid, unauthorized, too-large, error)",
            ),
            auth: counter(
                "starling.auth",
                "NIP-42 AUTH messages, by outcome (accepted, invalid, forged, restricted)",
            ),
            store_up,
            registry,
            provider,
            meter,
        };
        metrics.start_at_zero();
        Ok(metrics)
    }

    /// Records zero on counters that may stay untouched for a long time, so that their
    /// series exist (and dashboards show 0, not "no data") from the start.
    fn start_at_zero(&self) {
        for counter in [
            &self.connections_opened,
            &self.bus_published,
            &self.bus_received,
            &self.deliveries,
            &self.slow_clients_dropped,
            &self.compression_input_bytes,
            &self.compression_output_bytes,
            &self.messages_compressed,
            &self.inflate_refused,
            &self.addresses_penalized,
            &self.batches_split,
        ] {
            counter.add(0, &[]);
        }
        self.connections_open.add(0, &[]);
        self.subscriptions_open.add(0, &[]);
        for limit in LIMITS {
            self.rate_limited.add(0, &[KeyValue::new("limit", limit)]);
        }
        for action in WRITE_POLICY_ACTIONS {
            self.write_policy_decisions
                .add(0, &[KeyValue::new("action", action)]);
        }
        for reason in ["auth-required", "restricted"] {
            self.requests_refused
                .add(0, &[KeyValue::new("reason", reason)]);
        }
        for reason in ["reconnect", "gap"] {
            self.catch_ups.add(0, &[KeyValue::new("reason", reason)]);
        }
        self.catch_up_events.add(0, &[]);
        // Calls refused before their method is read count under `unknown`.
        for outcome in ["ok", "invalid", "unauthorized", "too-large", "error"] {
            let labels = [
                KeyValue::new("method", "unknown"),
                KeyValue::new("outcome", outcome),
            ];
            self.management_calls.add(0, &labels);
        }
        for outcome in AUTH_OUTCOMES {
            self.auth.add(0, &[KeyValue::new("outcome", outcome)]);
        }
        for reason in crate::proxy::stream::REFUSAL_REASONS {
            self.proxy_refused
                .add(0, &[KeyValue::new("reason", reason)]);
        }
        for strike in Strike::ALL {
            self.strikes
                .add(0, &[KeyValue::new("reason", strike.as_str())]);
        }
    }

    /// Whether the store's last operation reached the database (false after it failed as
    /// unreachable, until one succeeds).
    pub fn store_up(&self) -> bool {
        self.store_up.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records whether a store operation reached the database.
    pub fn set_store_up(&self, up: bool) {
        self.store_up
            .store(up, std::sync::atomic::Ordering::Relaxed);
    }

    /// Adds the gauges of `store` (its pool and JSON cache, when it has them).
    pub fn observe_store(&self, store: Arc<dyn EventStore>) {
        gauges::observe_store(&self.meter, store);
    }

    /// Adds the gauge of the node's store queries: `read` tells how many run and wait.
    pub fn observe_queries(&self, read: impl Fn() -> (u64, u64) + Send + Sync + 'static) {
        gauges::observe_queries(&self.meter, read);
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let _ = self.provider.force_flush();
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
