//! A store wrapper that measures every operation of the store it wraps.

use std::{sync::Arc, time::Instant};

use opentelemetry::KeyValue;

use super::Metrics;
use crate::{
    nostr::{Filter, VerifiedEvent, hll::Hll},
    store::{
        BoxFuture, CacheStatus, Cancel, Cursor, EventStore, PolicyStore, Record, Row, StoreError,
        WriteOutcome,
        policy::{AuditRecord, PolicyEdit, Removal, StoredPolicy},
    },
};

/// Times each operation (`starling.store.operation.duration`, by operation) and records
/// write batch sizes.
pub struct Metered {
    inner: Arc<dyn EventStore>,
    metrics: Arc<Metrics>,
}

impl Metered {
    /// Measures `inner` into `metrics`.
    pub fn new(inner: Arc<dyn EventStore>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    fn timed<'a, T: Send + 'a>(
        &'a self,
        operation: &'static str,
        work: BoxFuture<'a, Result<T, StoreError>>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        Box::pin(async move {
            let started = Instant::now();
            let result = work.await;
            match &result {
                Ok(_) => self.metrics.set_store_up(true),
                Err(StoreError::Database(_) | StoreError::Closed) => {
                    self.metrics.set_store_up(false)
                }
                Err(_) => {}
            }
            let outcome = match &result {
                Ok(_) => "ok",
                Err(StoreError::Cancelled) => "cancelled",
                Err(StoreError::TimedOut) => "timeout",
                Err(_) => "error",
            };
            self.metrics.store_duration.record(
                started.elapsed().as_secs_f64(),
                &[
                    KeyValue::new("operation", operation),
                    KeyValue::new("outcome", outcome),
                ],
            );
            result
        })
    }
}

impl EventStore for Metered {
    fn write(
        &self,
        batch: Vec<Arc<VerifiedEvent>>,
    ) -> BoxFuture<'_, Result<Vec<WriteOutcome>, StoreError>> {
        self.metrics
            .write_batch_size
            .record(batch.len() as u64, &[]);
        self.timed("write", self.inner.write(batch))
    }

    fn page<'a>(
        &'a self,
        filter: &'a Filter,
        after: Option<Cursor>,
        count: usize,
        now: u64,
        cancel: &'a Cancel,
    ) -> BoxFuture<'a, Result<Vec<Row>, StoreError>> {
        self.timed("query", self.inner.page(filter, after, count, now, cancel))
    }

    fn count<'a>(
        &'a self,
        filters: &'a [Filter],
        now: u64,
        cancel: &'a Cancel,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.timed("count", self.inner.count(filters, now, cancel))
    }

    fn records<'a>(
        &'a self,
        filter: &'a Filter,
        after: Option<Cursor>,
        count: usize,
        now: u64,
        cancel: &'a Cancel,
    ) -> BoxFuture<'a, Result<Vec<Record>, StoreError>> {
        self.timed(
            "records",
            self.inner.records(filter, after, count, now, cancel),
        )
    }

    fn hll<'a>(
        &'a self,
        filter: &'a Filter,
        offset: usize,
        now: u64,
        cancel: &'a Cancel,
    ) -> BoxFuture<'a, Result<Hll, StoreError>> {
        self.timed("hll", self.inner.hll(filter, offset, now, cancel))
    }

    fn refresh_statistics(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.timed("refresh_statistics", self.inner.refresh_statistics())
    }

    fn purge_expired(&self, now: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.timed("purge_expired", self.inner.purge_expired(now))
    }

    fn position(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.timed("position", self.inner.position())
    }

    fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(u64, String)>, StoreError>> {
        self.timed("events_after", self.inner.events_after(after, limit))
    }

    fn pool_status(&self) -> Option<(u64, u64)> {
        self.inner.pool_status()
    }

    fn cache_status(&self) -> Option<CacheStatus> {
        self.inner.cache_status()
    }
}

impl PolicyStore for Metered {
    fn load_policy(&self) -> BoxFuture<'_, Result<StoredPolicy, StoreError>> {
        self.timed("load_policy", self.inner.load_policy())
    }

    fn policy_version(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.timed("policy_version", self.inner.policy_version())
    }

    fn change_policy(
        &self,
        edits: Vec<PolicyEdit>,
        audit: AuditRecord,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.timed("change_policy", self.inner.change_policy(edits, audit))
    }

    fn audit_log(&self, limit: usize) -> BoxFuture<'_, Result<Vec<AuditRecord>, StoreError>> {
        self.timed("audit_log", self.inner.audit_log(limit))
    }

    fn remove_events(&self, removal: Removal) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.timed("remove_events", self.inner.remove_events(removal))
    }
}
