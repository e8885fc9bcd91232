//! The PostgreSQL store: what a cluster of nodes shares.
//!
//! Queries go through a `deadpool-postgres` pool of `tokio-postgres` connections with
//! prepared statements. A batch of writes is one transaction: it first takes advisory locks
//! on every id and address the batch touches (sorted, so that writers on different nodes
//! never deadlock), then calls `starling_write_event` once per event, pipelined on one
//! connection. The locks make duplicate, replacement and deletion decisions atomic across
//! every node.

pub mod migrate;
pub mod sql;

use std::{sync::Arc, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::future::try_join_all;
use sha2::{Digest, Sha256};
use tokio_postgres::{NoTls, error::SqlState};

use super::{BoxFuture, EventStore, Row, StoreError, WriteOutcome, merge, to_sql_int};
use crate::nostr::{Filter, KindClass, VerifiedEvent, hex, kind::DELETION};

/// How to reach PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Longest wait to connect, or for a free connection.
    pub connect_timeout: Duration,
    /// Longest a statement may run.
    pub statement_timeout: Duration,
}

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
}

/// Settings of every session the store opens: the statement timeout, and no parallel
/// workers, whose start-up costs more than a relay's small indexed queries take.
pub fn session_options(statement_timeout: Duration) -> String {
    format!(
        "-c statement_timeout={} -c max_parallel_workers_per_gather=0",
        statement_timeout.as_millis()
    )
}

/// How often a batch is retried after a deadlock or serialization failure.
const WRITE_ATTEMPTS: usize = 5;

/// A store error carrying the whole chain of causes ("db error: relation … does not exist").
fn db(error: impl std::error::Error) -> StoreError {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    StoreError::Database(text)
}

impl PgStore {
    /// A store with a pool to `settings.url`. Connections are opened on demand, so this
    /// succeeds even while the database is down.
    pub fn new(settings: &PgSettings) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut config: tokio_postgres::Config =
            settings.url.parse().context("parsing DATABASE_URL")?;
        config
            .connect_timeout(settings.connect_timeout)
            .application_name("starling")
            .options(session_options(settings.statement_timeout));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.connect_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .context("building the PostgreSQL pool")?;
        Ok(Self { pool })
    }

    /// Applies pending migrations; returns the names of those applied now.
    pub async fn migrate(&self) -> Result<Vec<&'static str>, StoreError> {
        let mut client = self.client().await?;
        migrate::run(&mut client).await.map_err(db)
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(db)
    }

    async fn write_once(
        client: &mut Object,
        batch: &[WriteParams<'_>],
        locks: &[i64],
    ) -> Result<Vec<WriteOutcome>, tokio_postgres::Error> {
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::BIGINT[]) AS k",
            &[&locks],
        )
        .await?;
        let write = tx
            .prepare_cached(
                "SELECT starling_write_event($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .await?;
        let args: Vec<_> = batch.iter().map(WriteParams::args).collect();
        let rows = try_join_all(args.iter().map(|a| tx.query_one(&write, a))).await?;
        tx.commit().await?;
        Ok(rows
            .iter()
            .map(|row| match row.get::<_, i16>(0) {
                1 => WriteOutcome::Duplicate,
                2 => WriteOutcome::Superseded,
                3 => WriteOutcome::Deleted,
                _ => WriteOutcome::Stored,
            })
            .collect())
    }
}

/// One event as the arguments of `starling_write_event`.
struct WriteParams<'a> {
    id: &'a [u8],
    pubkey: &'a [u8],
    created_at: i64,
    kind: i32,
    d_tag: Option<&'a str>,
    expires_at: Option<i64>,
    content: &'a str,
    json: &'a str,
    tag_names: Vec<String>,
    tag_values: Vec<&'a str>,
    delete_ids: Vec<Vec<u8>>,
    delete_kinds: Vec<i32>,
    delete_d_tags: Vec<String>,
}

impl<'a> WriteParams<'a> {
    fn new(verified: &'a VerifiedEvent) -> Self {
        let e = &verified.event;
        let (tag_names, tag_values) = e
            .indexed_tags()
            .map(|(letter, value)| (char::from(letter).to_string(), value))
            .unzip();
        let targets = if e.kind == DELETION {
            e.deletion_targets()
        } else {
            Default::default()
        };
        let (delete_kinds, delete_d_tags) = targets
            .addresses
            .into_iter()
            .map(|(kind, d)| (i32::from(kind), d))
            .unzip();
        Self {
            id: &e.id,
            pubkey: &e.pubkey,
            created_at: to_sql_int(e.created_at),
            kind: i32::from(e.kind),
            d_tag: address_d_tag(e),
            expires_at: e.expiration().ok().flatten().map(to_sql_int),
            content: &e.content,
            json: &verified.json,
            tag_names,
            tag_values,
            delete_ids: targets.ids.iter().map(|id| id.to_vec()).collect(),
            delete_kinds,
            delete_d_tags,
        }
    }
}

impl WriteParams<'_> {
    /// The arguments in the function's order.
    fn args(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 13] {
        [
            &self.id,
            &self.pubkey,
            &self.created_at,
            &self.kind,
            &self.d_tag,
            &self.expires_at,
            &self.content,
            &self.json,
            &self.tag_names,
            &self.tag_values,
            &self.delete_ids,
            &self.delete_kinds,
            &self.delete_d_tags,
        ]
    }
}

/// The `d_tag` column: "" for replaceable kinds, the `d` tag for addressable ones.
fn address_d_tag(e: &crate::nostr::Event) -> Option<&str> {
    match e.class() {
        KindClass::Replaceable => Some(""),
        KindClass::Addressable => Some(e.d_tag()),
        _ => None,
    }
}

/// Advisory lock keys for everything a batch reads and writes, sorted and unique.
fn lock_keys(batch: &[Arc<VerifiedEvent>]) -> Vec<i64> {
    let id_key = |id: &[u8; 32]| i64::from_be_bytes(id[..8].try_into().expect("8 bytes"));
    let address_key = |kind: u16, pubkey: &[u8; 32], d: &str| {
        let hash = Sha256::digest(format!("{kind}:{}:{d}", hex::encode(pubkey)));
        i64::from_be_bytes(hash[..8].try_into().expect("8 bytes"))
    };
    let mut keys = Vec::with_capacity(batch.len() * 2);
    for verified in batch {
        let e = &verified.event;
        keys.push(id_key(&e.id));
        if let Some(d) = address_d_tag(e) {
            keys.push(address_key(e.kind, &e.pubkey, d));
        }
        if e.kind == DELETION {
            let targets = e.deletion_targets();
            keys.extend(targets.ids.iter().map(id_key));
            keys.extend(
                targets
                    .addresses
                    .iter()
                    .map(|(k, d)| address_key(*k, &e.pubkey, d)),
            );
        }
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

fn retryable(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(&SqlState::T_R_DEADLOCK_DETECTED | &SqlState::T_R_SERIALIZATION_FAILURE)
    )
}

impl EventStore for PgStore {
    fn write(
        &self,
        batch: Vec<Arc<VerifiedEvent>>,
    ) -> BoxFuture<'_, Result<Vec<WriteOutcome>, StoreError>> {
        Box::pin(async move {
            let params: Vec<WriteParams<'_>> = batch.iter().map(|e| WriteParams::new(e)).collect();
            let locks = lock_keys(&batch);
            let mut client = self.client().await?;
            let mut attempt = 1;
            loop {
                match Self::write_once(&mut client, &params, &locks).await {
                    Err(e) if retryable(&e) && attempt < WRITE_ATTEMPTS => attempt += 1,
                    result => return result.map_err(db),
                }
            }
        })
    }

    fn query(
        &self,
        filters: Arc<[Filter]>,
        now: u64,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let mut answers = Vec::new();
            for filter in filters.iter().filter(|f| f.can_match()) {
                let (text, q) = sql::select(filter, now);
                let statement = client.prepare_cached(&text).await.map_err(db)?;
                let rows = client
                    .query(&statement, &q.refs())
                    .await
                    .map_err(db)?
                    .iter()
                    .map(|r| Row {
                        created_at: r.get(0),
                        id: r.get(1),
                        json: r.get(2),
                    })
                    .collect();
                answers.push((filter.search.is_some(), rows));
            }
            Ok(merge(answers))
        })
    }

    fn count(&self, filters: Arc<[Filter]>, now: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let matching: Vec<&Filter> = filters.iter().filter(|f| f.can_match()).collect();
            if matching.is_empty() {
                return Ok(0);
            }
            let (text, q) = sql::count(matching.into_iter(), now);
            let client = self.client().await?;
            let statement = client.prepare_cached(&text).await.map_err(db)?;
            let count: i64 = client
                .query_one(&statement, &q.refs())
                .await
                .map_err(db)?
                .get(0);
            Ok(count as u64)
        })
    }

    fn purge_expired(&self, now: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            client
                .execute(
                    "DELETE FROM events WHERE expires_at <= $1",
                    &[&to_sql_int(now)],
                )
                .await
                .map_err(db)
        })
    }

    fn pool_status(&self) -> Option<(u64, u64)> {
        let status = self.pool.status();
        let idle = status.available as u64;
        Some(((status.size as u64).saturating_sub(idle), idle))
    }

    fn position(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT COALESCE(MAX(seq), 0) FROM events", &[])
                .await
                .map_err(db)?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(u64, String)>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let statement = client
                .prepare_cached("SELECT seq, json FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
                .await
                .map_err(db)?;
            let rows = client
                .query(&statement, &[&to_sql_int(after), &to_sql_int(limit as u64)])
                .await
                .map_err(db)?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
                .collect())
        })
    }
}
