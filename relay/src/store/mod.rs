//! Event storage: the [`EventStore`] trait every backend implements, and the backends.
//!
//! Architecture invariant: the store alone decides whether an event is a duplicate, replaced,
//! deleted or expired, atomically with writing it. Actors never guess; they act on the
//! [`WriteOutcome`] a store returns.
//!
//! Every backend passes the same conformance suite (`tests/store_conformance.rs`).

mod backend;
mod cancel;
pub mod policy;
pub mod postgres;
pub mod sqlite;
pub mod stream;

use std::{future::Future, pin::Pin, sync::Arc};

use crate::nostr::{Filter, VerifiedEvent, hll::Hll};

pub use backend::open;
pub use cancel::Cancel;
pub use policy::PolicyStore;
pub use postgres::{PgSettings, PgStore};
pub use sqlite::SqliteStore;
pub use stream::{Cursor, PageRequest, StoredEvents};

/// A boxed, sendable future: what trait methods of a dyn-compatible async trait return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the store did with one event of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Committed. For replaceable and addressable kinds, older versions are gone.
    Stored,
    /// An event with this id was already stored.
    Duplicate,
    /// A newer version of this replaceable or addressable event is stored (NIP-01: newer
    /// `created_at` wins; on a tie, the lowest id).
    Superseded,
    /// The author deleted this event with a NIP-09 request.
    Deleted,
    /// The event's author (or, for a gift wrap, its recipient) asked to vanish (NIP-62)
    /// after it was made.
    Vanished,
}

/// What a store's cache of event JSON has done and holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStatus {
    /// Lookups that found the JSON.
    pub hits: u64,
    /// Lookups that did not (the JSON was then read from the database).
    pub misses: u64,
    /// Bytes of JSON held.
    pub bytes: u64,
}

/// A failure of the storage backend itself (not a verdict on an event). Its text is for
/// the logs: clients get a short, stable message instead.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable or failed; this says nothing about the events.
    #[error("database error: {0}")]
    Database(String),
    /// The database refused what it was given (a value too large for an index, a broken
    /// constraint): something in the batch, which written one event at a time, fails alone.
    #[error("refused by the database: {0}")]
    Refused(String),
    /// The statement ran past the store's time limit.
    #[error("the statement ran past its time limit")]
    TimedOut,
    /// Whoever asked cancelled the work, and it stopped.
    #[error("cancelled")]
    Cancelled,
    /// The store's worker threads are gone (shutting down).
    #[error("store is shut down")]
    Closed,
}

/// Where events live (and, through [`PolicyStore`], the operator's rules). Implementations
/// are cheap to share (`Arc<dyn EventStore>`) and never block the calling thread: blocking
/// work runs on the backend's own threads or pool.
pub trait EventStore: PolicyStore {
    /// Writes a batch in one transaction, applying NIP-01 replacement and NIP-09 deletion
    /// rules in order, and returns one outcome per event, in order. `Ok` means committed.
    /// Ephemeral events must not be passed here.
    fn write(
        &self,
        batch: Vec<Arc<VerifiedEvent>>,
    ) -> BoxFuture<'_, Result<Vec<WriteOutcome>, StoreError>>;

    /// Up to `count` rows of stored events matching `filter`, newest first (ties: lowest id
    /// first; an event may come twice in a row when it holds a filtered tag value twice),
    /// starting after `after` in that order (from the newest when `None`). A NIP-50 search
    /// answers its first `count` matches in order of relevance (`after` is not used). Events
    /// expired at `now` are never returned. When `cancel` is raised the statement stops
    /// and the answer is [`StoreError::Cancelled`].
    fn page<'a>(
        &'a self,
        filter: &'a Filter,
        after: Option<Cursor>,
        count: usize,
        now: u64,
        cancel: &'a Cancel,
    ) -> BoxFuture<'a, Result<Vec<Row>, StoreError>>;

    /// Every stored event matching any filter, each at most once, in the order of
    /// [`StoredEvents`], as canonical JSON, read page by page. Each filter returns at most
    /// its `limit` events, which the caller must set.
    fn query(
        &self,
        filters: Arc<[Filter]>,
        now: u64,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let cancel = Cancel::default();
            let mut plan = StoredEvents::new(Arc::clone(&filters));
            let mut events = Vec::new();
            loop {
                while let Some(row) = plan.next_row() {
                    events.push(row.json);
                }
                let Some(request) = plan.wanted() else {
                    return Ok(events);
                };
                let filter = &filters[request.filter];
                let rows = self
                    .page(filter, request.after, request.count, now, &cancel)
                    .await?;
                plan.fill(request, rows);
            }
        })
    }

    /// The `created_at` and id of [`EventStore::page`]'s events, without their JSON (a
    /// backend reads less when it can).
    fn records<'a>(
        &'a self,
        filter: &'a Filter,
        after: Option<Cursor>,
        count: usize,
        now: u64,
        cancel: &'a Cancel,
    ) -> BoxFuture<'a, Result<Vec<Record>, StoreError>> {
        Box::pin(async move {
            let rows = self.page(filter, after, count, now, cancel).await?;
            Ok(rows.into_iter().map(|r| (r.created_at, r.id)).collect())
        })
    }

    /// How many stored events match any filter (NIP-45); `limit` is ignored. Stops, as
    /// [`EventStore::page`] does, when `cancel` is raised.
    fn count<'a>(
        &'a self,
        filters: &'a [Filter],
        now: u64,
        cancel: &'a Cancel,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// The NIP-45 HLL of the pubkeys of the events `filter` matches, at `offset` (see
    /// [`crate::nostr::hll`]). Stops, as [`EventStore::count`] does, when `cancel` is
    /// raised.
    fn hll<'a>(
        &'a self,
        filter: &'a Filter,
        offset: usize,
        now: u64,
        cancel: &'a Cancel,
    ) -> BoxFuture<'a, Result<Hll, StoreError>>;

    /// Deletes events whose NIP-40 expiration is at or before `now`; returns how many.
    fn purge_expired(&self, now: u64) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Connections of the store's pool in use and idle, if it has a pool.
    fn pool_status(&self) -> Option<(u64, u64)> {
        None
    }

    /// The store's JSON cache, if it has one.
    fn cache_status(&self) -> Option<CacheStatus> {
        None
    }

    /// Brings the query planner's statistics and the visibility map up to date after a
    /// bulk load (PostgreSQL plans tag queries from the statistics, and answers from its
    /// indexes alone where the map says it may; until autovacuum gets to a freshly filled
    /// table, some shapes run thirty times slower). Nothing to do for SQLite.
    fn refresh_statistics(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// The position of the last event stored (0 when empty), for [`EventStore::events_after`].
    fn position(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Up to `limit` stored events in insertion order, starting after position `after`
    /// (0: from the first), each with its position. Used by export and by catch-up.
    fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(u64, String)>, StoreError>>;
}

/// An event's `created_at` and id: what a reconciliation needs of it.
pub type Record = (i64, [u8; 32]);

/// One event of one filter's answer, as a store read it.
#[derive(Debug)]
pub struct Row {
    /// `created_at` of the event.
    pub created_at: i64,
    /// Its id.
    pub id: [u8; 32],
    /// Its canonical JSON.
    pub json: String,
}

/// Seconds and counts are unsigned in Nostr and signed 64-bit in SQL; values past `i64::MAX`
/// mean "no bound" anyway.
pub fn to_sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
