//! The PostgreSQL store: what a cluster of nodes shares.
//!
//! Queries go through a `deadpool-postgres` pool of `tokio-postgres` connections with
//! prepared statements: filters compiled by [`sql`], JSON taken from the [`json_cache`]. A
//! batch of writes is one transaction, written by `write.rs` so that nodes writing at once
//! converge; [`migrate`] keeps the schema up to date.

pub mod json_cache;
pub mod migrate;
pub mod sql;
mod write;

use std::{collections::HashMap, sync::Arc, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use json_cache::JsonCache;

use super::{BoxFuture, EventStore, Row, StoreError, WriteOutcome, merge, to_sql_int};
use crate::{
    config::Config,
    nostr::{Filter, VerifiedEvent},
};

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
    /// Bytes of event JSON kept in memory for queries (0: none).
    pub json_cache_bytes: usize,
}

impl PgSettings {
    /// The PostgreSQL settings of `config`, when it names a database.
    pub fn from_config(config: &Config) -> Option<Self> {
        config.database_url.as_ref().map(|url| Self {
            url: url.clone(),
            pool_size: config.database_pool_size,
            connect_timeout: Duration::from_secs(config.database_connect_timeout_seconds.max(1)),
            statement_timeout: Duration::from_millis(config.database_statement_timeout_ms.max(1)),
            json_cache_bytes: config.database_json_cache_mb.saturating_mul(1 << 20),
        })
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    cache: JsonCache,
}

/// Settings of every session the store opens: the statement timeout; no parallel workers and
/// no JIT compilation, whose start-up costs more than a relay's small indexed queries take
/// (a generic plan, not knowing its limit, can look costly enough to trigger JIT on every
/// execution); and generic plans for prepared statements: the store's writes and index
/// probes have one good plan whatever the values, and planning them anew for each execution
/// cost as much as running them. Statements whose plan depends on the values run with
/// custom plans ([`query_custom`]).
pub fn session_options(statement_timeout: Duration) -> String {
    format!(
        "-c statement_timeout={} -c max_parallel_workers_per_gather=0 -c jit=off \
         -c plan_cache_mode=force_generic_plan",
        statement_timeout.as_millis()
    )
}

/// Runs a query with a plan made for its values: NIP-50 searches (how common a word is
/// decides between the full-text index and the time index) and counts over ORs of filters.
async fn query_custom(
    client: &mut Object,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL plan_cache_mode = force_custom_plan")
        .await?;
    let statement = tx.prepare_cached(sql).await?;
    let rows = tx.query(&statement, params).await?;
    tx.commit().await?;
    Ok(rows)
}

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
        Ok(Self {
            pool,
            cache: JsonCache::new(settings.json_cache_bytes),
        })
    }

    /// Applies pending migrations; returns the names of those applied now.
    pub async fn migrate(&self) -> Result<Vec<&'static str>, StoreError> {
        let mut client = self.client().await?;
        migrate::run(&mut client).await.map_err(db)
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(db)
    }
}

/// A matching event as a query finds it: `created_at` and id.
type Match = (i64, Vec<u8>);

impl PgStore {
    /// The JSON of every matched event: from the cache, and the rest in one query (an event
    /// deleted meanwhile is simply not found, and left out).
    async fn json_of(
        &self,
        client: &Object,
        matches: &[(bool, Vec<Match>)],
    ) -> Result<HashMap<[u8; 32], Arc<str>>, StoreError> {
        let mut json = HashMap::new();
        let mut missing: Vec<&[u8]> = Vec::new();
        for (_, id) in matches.iter().flat_map(|(_, found)| found) {
            let Ok(key) = <[u8; 32]>::try_from(id.as_slice()) else {
                continue;
            };
            match self.cache.get(&key) {
                Some(cached) => {
                    json.insert(key, cached);
                }
                None => missing.push(id),
            }
        }
        if !missing.is_empty() {
            let statement = client
                .prepare_cached("SELECT id, json FROM events WHERE id = ANY($1)")
                .await
                .map_err(db)?;
            for row in client.query(&statement, &[&missing]).await.map_err(db)? {
                let Ok(key) = <[u8; 32]>::try_from(row.get::<_, &[u8]>(0)) else {
                    continue;
                };
                let text: Arc<str> = Arc::from(row.get::<_, &str>(1));
                self.cache.insert(key, Arc::clone(&text));
                json.insert(key, text);
            }
        }
        Ok(json)
    }
}

impl EventStore for PgStore {
    fn write(
        &self,
        batch: Vec<Arc<VerifiedEvent>>,
    ) -> BoxFuture<'_, Result<Vec<WriteOutcome>, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let outcomes = write::write_batch(&mut client, &batch).await.map_err(db)?;
            // Fresh events are the ones queried most.
            for (event, outcome) in batch.iter().zip(&outcomes) {
                if *outcome == WriteOutcome::Stored {
                    self.cache.insert(event.event.id, Arc::clone(&event.json));
                }
            }
            Ok(outcomes)
        })
    }

    fn query(
        &self,
        filters: Arc<[Filter]>,
        now: u64,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let mut matches = Vec::new();
            for filter in filters.iter().filter(|f| f.can_match()) {
                let (text, q) = sql::select(filter, now);
                let rows = if filter.search.is_some() {
                    query_custom(&mut client, &text, &q.refs()).await
                } else {
                    match client.prepare_cached(&text).await {
                        Ok(statement) => client.query(&statement, &q.refs()).await,
                        Err(e) => Err(e),
                    }
                };
                let found: Vec<Match> = rows
                    .map_err(db)?
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect();
                matches.push((filter.search.is_some(), found));
            }
            let json = self.json_of(&client, &matches).await?;
            let answers = matches
                .into_iter()
                .map(|(ranked, found)| {
                    let rows = found
                        .into_iter()
                        .filter_map(|(created_at, id)| {
                            let json = json.get(id.as_slice())?.to_string();
                            Some(Row {
                                created_at,
                                id,
                                json,
                            })
                        })
                        .collect();
                    (ranked, rows)
                })
                .collect();
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
            let mut client = self.client().await?;
            let rows = query_custom(&mut client, &text, &q.refs())
                .await
                .map_err(db)?;
            let count: i64 = rows.first().map_or(0, |row| row.get(0));
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

    fn cache_status(&self) -> Option<super::CacheStatus> {
        Some(self.cache.status())
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
