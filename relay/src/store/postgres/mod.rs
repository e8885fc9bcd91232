//! The PostgreSQL store: what a cluster of nodes shares.
//!
//! Queries go through a `deadpool-postgres` pool of `tokio-postgres` connections with
//! prepared statements: filters compiled by [`sql`], JSON taken from the [`json_cache`]. A
//! batch of writes is one transaction, written by `write.rs` so that nodes writing at once
//! converge; `read.rs` reads pages and counts, cancelled when their requester goes;
//! [`migrate`] keeps the schema up to date.

mod error;
pub mod json_cache;
pub mod migrate;
mod policy;
mod probe;
mod read;
pub mod session;
pub mod sql;
pub mod tls;
mod write;

use std::{sync::Arc, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use session::session_settings;
use tls::PgTls;

use error::{db, unavailable};
use json_cache::JsonCache;

use super::{
    BoxFuture, Cancel, Cursor, EventStore, Record, Row, StoreError, WriteOutcome, to_sql_int,
};
use crate::{
    config::Config,
    nostr::{Filter, VerifiedEvent, hll::Hll},
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
    /// Prepared statements one pooled connection keeps; past it, its cache is emptied
    /// (filters of many shapes must not grow it, and the server's memory, without end).
    pub cached_statements: usize,
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
            cached_statements: config.database_statement_cache,
        })
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    cache: JsonCache,
    tls: PgTls,
    /// The `sslmode` asked for, for the start-up checks' messages.
    ssl_mode: tls::SslMode,
    /// How connections are made, for the start-up checks.
    config: tokio_postgres::Config,
    /// Every session's statement limit (set again after maintenance lifts it).
    statement_timeout: Duration,
    /// Prepared statements one pooled connection keeps ([`PgSettings::cached_statements`]).
    cached_statements: usize,
}

/// The hook that gives every new pooled connection the store's session settings.
fn settings_hook(settings: String) -> deadpool_postgres::Hook {
    deadpool_postgres::Hook::async_fn(move |client, _| {
        let settings = settings.clone();
        Box::pin(async move {
            client
                .batch_execute(&settings)
                .await
                .map_err(deadpool_postgres::HookError::Backend)
        })
    })
}

impl PgStore {
    /// A store with a pool to `settings.url`. Connections are opened on demand, so this
    /// succeeds even while the database is down.
    pub fn new(settings: &PgSettings) -> anyhow::Result<Self> {
        use anyhow::Context;
        let (url, tls) = tls::split_url(&settings.url)?;
        let mut config: tokio_postgres::Config = url.parse().context("parsing DATABASE_URL")?;
        let connector = tls.connector()?;
        // A link that goes silent (a cut network, a dropped NAT flow) must fail, not hang:
        // data unacknowledged for the connect timeout fails the connection, and keepalives
        // find an idle one dead within about as long again.
        // As in libpq, `sslmode` does not apply to Unix sockets: they are plain.
        let over_sockets_only = config
            .get_hosts()
            .iter()
            .all(|host| matches!(host, tokio_postgres::config::Host::Unix(_)));
        config
            .ssl_mode(if over_sockets_only {
                tokio_postgres::config::SslMode::Disable
            } else {
                tls.tokio_mode()
            })
            .connect_timeout(settings.connect_timeout)
            .tcp_user_timeout(settings.connect_timeout)
            .keepalives(true)
            .keepalives_idle(settings.connect_timeout)
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(3)
            .application_name("starling");
        let manager = Manager::from_config(
            config.clone(),
            connector.clone(),
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
            .post_create(settings_hook(session_settings(settings.statement_timeout)))
            .build()
            .context("building the PostgreSQL pool")?;
        Ok(Self {
            pool,
            cache: JsonCache::new(settings.json_cache_bytes),
            tls: connector,
            ssl_mode: tls.mode,
            config,
            statement_timeout: settings.statement_timeout,
            cached_statements: settings.cached_statements,
        })
    }

    /// Applies pending migrations; returns the names of those applied now.
    pub async fn migrate(&self) -> Result<Vec<&'static str>, StoreError> {
        let mut client = self.client().await?;
        migrate::run(&mut client).await.map_err(db)
    }

    /// Connects at start-up: a failure a setting causes (TLS the server does not pass or
    /// offer, a plain connection it refuses, a login it refuses, a database it does not
    /// have) and a pooler that does not keep sessions are errors now, naming the setting; a
    /// database that is down is not, since the store connects whenever it is back.
    pub async fn probe(&self) -> anyhow::Result<()> {
        match self.pool.get().await {
            Ok(_) => session::check_session_pooling(&self.config, &self.tls).await,
            Err(error) => match probe::judge(error, self.ssl_mode) {
                probe::Failure::Refused(error) => Err(error),
                probe::Failure::Unreachable(error) => {
                    tracing::warn!(%error, "PostgreSQL is not reachable yet; the store connects when it is");
                    Ok(())
                }
            },
        }
    }

    /// A pooled connection, its statement cache within [`PgSettings::cached_statements`].
    async fn client(&self) -> Result<Object, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        if client.statement_cache.size() > self.cached_statements {
            client.statement_cache.clear();
        }
        Ok(client)
    }

    /// A pooled connection to read with.
    async fn reader(&self) -> Result<read::Reader<'_>, StoreError> {
        Ok(read::Reader {
            client: self.client().await?,
            cache: &self.cache,
            tls: &self.tls,
        })
    }

    /// Statements cached by one pooled connection, after [`PgStore::client`] has bounded
    /// them (for tests of the bound).
    pub async fn cached_statements(&self) -> Result<usize, StoreError> {
        Ok(self.client().await?.statement_cache.size())
    }
}

impl EventStore for PgStore {
    fn page<'a>(
        &'a self,
        filter: &'a Filter,
        after: Option<Cursor>,
        count: usize,
        now: u64,
        cancel: &'a Cancel,
    ) -> BoxFuture<'a, Result<Vec<Row>, StoreError>> {
        Box::pin(async move {
            if cancel.is_cancelled() {
                return Err(StoreError::Cancelled);
            }
            let reader = self.reader().await?;
            read::page(reader, filter, after, count, now, cancel).await
        })
    }

    fn records<'a>(
        &'a self,
        filter: &'a Filter,
        after: Option<Cursor>,
        count: usize,
        now: u64,
        cancel: &'a Cancel,
    ) -> BoxFuture<'a, Result<Vec<Record>, StoreError>> {
        Box::pin(async move {
            if cancel.is_cancelled() {
                return Err(StoreError::Cancelled);
            }
            if sql::needs_recheck(filter) {
                // A long tag value is found by its hash: the events must be read to check.
                let rows = self.page(filter, after, count, now, cancel).await?;
                return Ok(rows.into_iter().map(|r| (r.created_at, r.id)).collect());
            }
            let reader = self.reader().await?;
            read::records(reader, filter, after, count, now, cancel).await
        })
    }

    fn count<'a>(
        &'a self,
        filters: &'a [Filter],
        now: u64,
        cancel: &'a Cancel,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            if cancel.is_cancelled() {
                return Err(StoreError::Cancelled);
            }
            if !filters.iter().any(Filter::can_match) {
                return Ok(0);
            }
            let reader = self.reader().await?;
            read::count(reader, filters, now, cancel).await
        })
    }

    fn hll<'a>(
        &'a self,
        filter: &'a Filter,
        offset: usize,
        now: u64,
        cancel: &'a Cancel,
    ) -> BoxFuture<'a, Result<Hll, StoreError>> {
        Box::pin(async move {
            if cancel.is_cancelled() {
                return Err(StoreError::Cancelled);
            }
            if !filter.can_match() {
                return Ok(Hll::default());
            }
            let reader = self.reader().await?;
            read::hll(reader, filter, offset, now, cancel).await
        })
    }

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

    fn refresh_statistics(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            // VACUUM runs alone (not in a transaction, so one statement at a time) and may
            // take longer than a client's statement limit on a large store.
            client
                .batch_execute("SET statement_timeout = 0")
                .await
                .map_err(db)?;
            let done = client.batch_execute("VACUUM (ANALYZE)").await.map_err(db);
            let limit = format!(
                "SET statement_timeout = {}",
                self.statement_timeout.as_millis()
            );
            client.batch_execute(&limit).await.map_err(db)?;
            done
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
