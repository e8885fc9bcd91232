//! The PostgreSQL store: what a cluster of nodes shares.
//!
//! Queries go through a `deadpool-postgres` pool of `tokio-postgres` connections with
//! prepared statements. A batch of writes is one transaction: it first takes advisory locks
//! on every id and address the batch touches (sorted, so that writers on different nodes
//! never deadlock), then writes each run of plain events (regular kinds) with one set-based
//! statement and every other event with a call of `starling_write_event`, all pipelined on
//! one connection. The locks make duplicate, replacement and deletion decisions atomic across
//! every node.

pub mod json_cache;
pub mod migrate;
pub mod sql;

use std::{collections::HashMap, sync::Arc, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::future::try_join_all;
use sha2::{Digest, Sha256};
use tokio_postgres::{NoTls, error::SqlState};

use json_cache::JsonCache;

use super::{BoxFuture, EventStore, Row, StoreError, WriteOutcome, merge, to_sql_int};
use crate::{
    config::Config,
    nostr::{Filter, KindClass, VerifiedEvent, hex, kind::DELETION},
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

    async fn write_once(
        client: &mut Object,
        batch: &[WriteParams<'_>],
        locks: &[i64],
    ) -> Result<Vec<WriteOutcome>, tokio_postgres::Error> {
        let tx = client.transaction().await?;
        let lock = tx
            .prepare_cached("SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::BIGINT[]) AS k")
            .await?;
        tx.execute(&lock, &[&locks]).await?;
        let by_rule = tx.prepare_cached(WRITE_BY_RULE).await?;
        let plain = tx.prepare_cached(WRITE_PLAIN).await?;
        let steps = plan(batch);
        // Every step is sent before the first answer arrives (pipelined), in batch order.
        let runs = steps.iter().map(|step| {
            let (by_rule, plain, tx) = (&by_rule, &plain, &tx);
            async move {
                match step {
                    Step::ByRule(i) => {
                        let row = tx.query_one(by_rule, &batch[*i].args()).await?;
                        Ok(vec![(*i, outcome(row.get(0)))])
                    }
                    Step::Plain(run) => {
                        let arrays = PlainArrays::new(run.iter().map(|i| &batch[*i]));
                        let rows = tx.query(plain, &arrays.args()).await?;
                        Ok(rows
                            .iter()
                            .map(|row| {
                                (run[row.get::<_, i64>(0) as usize - 1], outcome(row.get(1)))
                            })
                            .collect::<Vec<_>>())
                    }
                }
            }
        });
        let done = try_join_all(runs).await?;
        tx.commit().await?;
        // Events no step wrote repeat an id earlier in their run: duplicates.
        let mut outcomes = vec![WriteOutcome::Duplicate; batch.len()];
        for (i, result) in done.into_iter().flatten() {
            outcomes[i] = result;
        }
        Ok(outcomes)
    }
}

/// Writes one event, applying every NIP-01 and NIP-09 rule (see the migrations).
const WRITE_BY_RULE: &str = "SELECT starling_write_event($1, $2, $3, $4, $5, $6,
    NULLIF($7::TEXT, '')::TSVECTOR, $8, $9, $10, $11, $12, $13)";

/// Writes a run of plain events (regular kinds, no deletion requests, distinct ids) in one
/// set-based statement: an event is stored unless its id is stored already (1) or its author
/// deleted it (3). Answers (position in the run from 1, outcome) for every event.
const WRITE_PLAIN: &str = "
WITH input AS (
    SELECT * FROM unnest($1::BYTEA[], $2::BYTEA[], $3::BIGINT[], $4::INTEGER[], $5::BIGINT[],
                         $6::TEXT[], $7::TEXT[])
        WITH ORDINALITY AS i (id, pubkey, created_at, kind, expires_at, lexemes, json, n)
), stored AS (
    INSERT INTO events (id, pubkey, created_at, kind, expires_at, content_fts, json)
    SELECT id, pubkey, created_at, kind, expires_at,
           NULLIF(lexemes, '')::TSVECTOR, json
    FROM input
    WHERE NOT EXISTS (SELECT 1 FROM deleted_ids d WHERE d.event_id = input.id AND d.pubkey = input.pubkey)
    ORDER BY n
    ON CONFLICT (id) DO NOTHING
    RETURNING seq, id
), tagged AS (
    INSERT INTO event_tags (event_seq, name, value, kind, created_at)
    SELECT DISTINCT s.seq, t.name, t.value, i.kind, i.created_at
    FROM unnest($8::BIGINT[], $9::TEXT[], $10::TEXT[]) AS t (n, name, value)
    JOIN input i ON i.n = t.n
    JOIN stored s ON s.id = i.id
)
SELECT i.n,
       CASE WHEN s.seq IS NOT NULL THEN 0
            WHEN EXISTS (SELECT 1 FROM deleted_ids d WHERE d.event_id = i.id AND d.pubkey = i.pubkey) THEN 3
            ELSE 1 END::SMALLINT
FROM input i LEFT JOIN stored s ON s.id = i.id";

/// The outcome a write statement reports as a number.
fn outcome(code: i16) -> WriteOutcome {
    match code {
        1 => WriteOutcome::Duplicate,
        2 => WriteOutcome::Superseded,
        3 => WriteOutcome::Deleted,
        _ => WriteOutcome::Stored,
    }
}

/// One statement of a batch write.
enum Step {
    /// Positions of consecutive plain events, written by [`WRITE_PLAIN`].
    Plain(Vec<usize>),
    /// The position of an event written by [`WRITE_BY_RULE`] (replaceable, addressable or
    /// a deletion request).
    ByRule(usize),
}

/// Splits a batch into steps that keep its order. A plain event repeating an id earlier in
/// its own run is left out: a duplicate. (A repeat after a step by rule is sent, since that
/// step may have deleted the first.)
fn plan(batch: &[WriteParams<'_>]) -> Vec<Step> {
    let mut in_run = std::collections::HashSet::new();
    let mut steps = Vec::new();
    for (i, event) in batch.iter().enumerate() {
        if !event.is_plain() {
            in_run.clear();
            steps.push(Step::ByRule(i));
        } else if !in_run.insert(event.id) {
            continue;
        } else if let Some(Step::Plain(run)) = steps.last_mut() {
            run.push(i);
        } else {
            steps.push(Step::Plain(vec![i]));
        }
    }
    steps
}

/// A run of plain events as the column arrays of [`WRITE_PLAIN`].
struct PlainArrays<'a> {
    ids: Vec<&'a [u8]>,
    pubkeys: Vec<&'a [u8]>,
    created_at: Vec<i64>,
    kinds: Vec<i32>,
    expires_at: Vec<Option<i64>>,
    lexemes: Vec<&'a str>,
    jsons: Vec<&'a str>,
    tag_events: Vec<i64>,
    tag_names: Vec<&'a str>,
    tag_values: Vec<&'a str>,
}

impl<'a> PlainArrays<'a> {
    fn new(run: impl Iterator<Item = &'a WriteParams<'a>>) -> Self {
        let mut arrays = Self {
            ids: Vec::new(),
            pubkeys: Vec::new(),
            created_at: Vec::new(),
            kinds: Vec::new(),
            expires_at: Vec::new(),
            lexemes: Vec::new(),
            jsons: Vec::new(),
            tag_events: Vec::new(),
            tag_names: Vec::new(),
            tag_values: Vec::new(),
        };
        for (n, event) in run.enumerate() {
            arrays.ids.push(event.id);
            arrays.pubkeys.push(event.pubkey);
            arrays.created_at.push(event.created_at);
            arrays.kinds.push(event.kind);
            arrays.expires_at.push(event.expires_at);
            arrays.lexemes.push(&event.lexemes);
            arrays.jsons.push(event.json);
            for (name, value) in event.tag_names.iter().zip(&event.tag_values) {
                arrays.tag_events.push(n as i64 + 1);
                arrays.tag_names.push(name);
                arrays.tag_values.push(value);
            }
        }
        arrays
    }

    fn args(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 10] {
        [
            &self.ids,
            &self.pubkeys,
            &self.created_at,
            &self.kinds,
            &self.expires_at,
            &self.lexemes,
            &self.jsons,
            &self.tag_events,
            &self.tag_names,
            &self.tag_values,
        ]
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

/// One event as the arguments of `starling_write_event`.
struct WriteParams<'a> {
    id: &'a [u8],
    pubkey: &'a [u8],
    created_at: i64,
    kind: i32,
    d_tag: Option<&'a str>,
    expires_at: Option<i64>,
    /// The content's words as a `tsvector` literal ([`sql::tsvector`]).
    lexemes: String,
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
            lexemes: sql::tsvector(&e.content),
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
    /// Whether the event is stored as it is: a regular kind, not a deletion request.
    fn is_plain(&self) -> bool {
        self.d_tag.is_none() && self.kind != i32::from(DELETION)
    }

    /// The arguments in the function's order.
    fn args(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 13] {
        [
            &self.id,
            &self.pubkey,
            &self.created_at,
            &self.kind,
            &self.d_tag,
            &self.expires_at,
            &self.lexemes,
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
            let outcomes = loop {
                match Self::write_once(&mut client, &params, &locks).await {
                    Err(e) if retryable(&e) && attempt < WRITE_ATTEMPTS => attempt += 1,
                    result => break result.map_err(db)?,
                }
            };
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
