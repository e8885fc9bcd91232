//! Gauges read when metrics are collected: the cluster as the bus sees it, the store's pool
//! and JSON cache, and the process's CPU time and memory.

use std::sync::Arc;

use opentelemetry::{KeyValue, metrics::Meter};
use starling_cluster::ClusterView;
use tokio::sync::watch;

use crate::store::EventStore;

/// Registers the cluster's and the process's gauges on `meter`.
pub fn observe(meter: &Meter, cluster: watch::Receiver<ClusterView>) {
    let view = cluster.clone();
    meter
        .u64_observable_gauge("starling.cluster.nodes")
        .with_description("Nodes this node sees in its cluster, itself included")
        .with_callback(move |o| o.observe(view.borrow().nodes as u64, &[]))
        .build();
    let view = cluster.clone();
    meter
        .u64_observable_gauge("starling.bus.connected")
        .with_description("1 while the cluster bus is connected")
        .with_callback(move |o| o.observe(u64::from(view.borrow().connected), &[]))
        .build();
    let view = cluster.clone();
    meter
        .u64_observable_counter("starling.bus.reconnects")
        .with_description("Times the cluster bus lost its connection")
        .with_callback(move |o| o.observe(view.borrow().reconnects, &[]))
        .build();
    let view = cluster.clone();
    meter
        .u64_observable_counter("starling.bus.gaps")
        .with_description(
            "Times envelopes from other nodes were found missing (a gap in a node's numbers, a node restarted, this node's receiver behind)",
        )
        .with_callback(move |o| o.observe(view.borrow().gaps, &[]))
        .build();
    meter
        .u64_observable_counter("starling.bus.link.timeouts")
        .with_description(
            "Times the bus link was silent past --bus-timeout-seconds and was dropped",
        )
        .with_callback(move |o| o.observe(cluster.borrow().link_timeouts, &[]))
        .build();
    meter
        .f64_observable_counter("starling.process.cpu.time")
        .with_unit("s")
        .with_description("CPU time used by the process")
        .with_callback(|o| {
            if let Some(seconds) = process::cpu_seconds() {
                o.observe(seconds, &[]);
            }
        })
        .build();
    meter
        .u64_observable_gauge("starling.process.memory.resident")
        .with_unit("By")
        .with_description("Resident memory of the process")
        .with_callback(|o| {
            if let Some(bytes) = process::resident_bytes() {
                o.observe(bytes, &[]);
            }
        })
        .build();
}

/// Registers the gauges of what only a backend knows, when it has them: its pool and its
/// JSON cache.
pub fn observe_store(meter: &Meter, store: Arc<dyn EventStore>) {
    if store.pool_status().is_some() {
        let store = Arc::clone(&store);
        meter
            .u64_observable_gauge("starling.store.pool.connections")
            .with_description("PostgreSQL pool connections, by state (in_use, idle)")
            .with_callback(move |o| {
                let (in_use, idle) = store.pool_status().unwrap_or_default();
                o.observe(in_use, &[KeyValue::new("state", "in_use")]);
                o.observe(idle, &[KeyValue::new("state", "idle")]);
            })
            .build();
    }
    if store.cache_status().is_some() {
        let cache = Arc::clone(&store);
        meter
            .u64_observable_counter("starling.store.json_cache.lookups")
            .with_description("Lookups in the store's JSON cache, by result (hit, miss)")
            .with_callback(move |o| {
                let status = cache.cache_status().unwrap_or_default();
                o.observe(status.hits, &[KeyValue::new("result", "hit")]);
                o.observe(status.misses, &[KeyValue::new("result", "miss")]);
            })
            .build();
        meter
            .u64_observable_gauge("starling.store.json_cache.size")
            .with_unit("By")
            .with_description("Event JSON held in the store's cache")
            .with_callback(move |o| {
                let status = store.cache_status().unwrap_or_default();
                o.observe(status.bytes, &[]);
            })
            .build();
    }
}

/// Registers the gauge of the node's store queries, `running` and `waiting` for their
/// turn, as `read` tells them.
pub fn observe_queries(meter: &Meter, read: impl Fn() -> (u64, u64) + Send + Sync + 'static) {
    meter
        .u64_observable_gauge("starling.store.queries")
        .with_description("Store queries of clients, by state (running, waiting for a turn)")
        .with_callback(move |o| {
            let (running, waiting) = read();
            o.observe(running, &[KeyValue::new("state", "running")]);
            o.observe(waiting, &[KeyValue::new("state", "waiting")]);
        })
        .build();
}

/// The process's own figures, from /proc.
mod process {
    /// Clock ticks per second of /proc/self/stat (Linux uses 100 on every platform it runs).
    const TICKS_PER_SECOND: f64 = 100.0;
    /// Page size of /proc/self/statm.
    const PAGE_BYTES: u64 = 4096;

    /// User plus system CPU time, in seconds.
    pub fn cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let user: f64 = fields.get(11)?.parse().ok()?;
        let system: f64 = fields.get(12)?.parse().ok()?;
        Some((user + system) / TICKS_PER_SECOND)
    }

    /// Resident set size, in bytes.
    pub fn resident_bytes() -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * PAGE_BYTES)
    }
}
