//! The PostgreSQL read path: one page of a filter's matches, and counts.
//!
//! A page reads only `(created_at, id)` of its matches from the indexes, then their JSON
//! from the [`JsonCache`](super::json_cache::JsonCache), fetching only the misses. Every
//! statement can be cancelled by its requester: a statement still running
//! [`CANCEL_GRACE`] after the cancel is cancelled on the server. A cancel request reaches
//! the server on a connection of its own, and one that arrived after its statement had
//! ended could stop the next statement on that connection; so the connection is reused
//! only when the statement did end cancelled (the request took effect), and closed
//! otherwise.

use std::{future::Future, sync::Arc, time::Duration};

use deadpool_postgres::Object;
use tokio_postgres::{CancelToken, error::SqlState, types::ToSql};

use super::{error::db, json_cache::JsonCache, sql, tls::PgTls};
use crate::{
    hashing::FastMap,
    nostr::{Event, Filter, hll::Hll},
    store::{Cancel, Cursor, Record, Row, StoreError},
};

/// How long a cancelled statement may go on finishing by itself before it is cancelled on
/// the server (most pages take a few milliseconds).
pub const CANCEL_GRACE: Duration = Duration::from_millis(20);

/// A matching event as a query finds it: `created_at` and id.
type Match = (i64, Vec<u8>);

/// A pooled connection and what reading on it needs: the JSON cache, and the TLS settings a
/// cancel request connects with.
pub struct Reader<'a> {
    /// The connection.
    pub client: Object,
    /// Event JSON kept in memory.
    pub cache: &'a JsonCache,
    /// How the store connects to the server.
    pub tls: &'a PgTls,
}

/// How a cancellable statement ended.
enum Ended<T> {
    /// It finished, well or not.
    Finished(Result<T, tokio_postgres::Error>),
    /// It was cancelled on the server; `reusable` when it ended cancelled, so that no
    /// cancel request is left in flight for the connection's next statement.
    Cancelled { reusable: bool },
}

/// Runs `work` until it ends, or until `cancel` is raised and [`CANCEL_GRACE`] has passed.
async fn until_cancelled<T>(
    token: CancelToken,
    tls: &PgTls,
    work: impl Future<Output = Result<T, tokio_postgres::Error>>,
    cancel: &Cancel,
) -> Ended<T> {
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => Ended::Finished(result),
        () = cancel.cancelled() => {
            if let Ok(result) = tokio::time::timeout(CANCEL_GRACE, &mut work).await {
                return Ended::Finished(result);
            }
            if let Err(error) = token.cancel_query(tls.clone()).await {
                tracing::warn!(%error, "could not cancel a statement");
            }
            // The statement ends with an error once the server has cancelled it.
            let ended = work.await;
            let reusable = matches!(&ended, Err(e) if e.code() == Some(&SqlState::QUERY_CANCELED));
            Ended::Cancelled { reusable }
        }
    }
}

/// Runs a statement with the plan PostgreSQL makes for its values (`custom`: searches,
/// whose best index depends on how common the words are, and counts over ORs of filters),
/// or with the session's generic plan; cancellable.
async fn run(
    client: Object,
    tls: &PgTls,
    text: &str,
    params: &[&(dyn ToSql + Sync)],
    custom: bool,
    cancel: &Cancel,
) -> Result<(Object, Vec<tokio_postgres::Row>), StoreError> {
    let mut client = client;
    let token = client.cancel_token();
    let ended = if custom {
        let work = async {
            let tx = client.transaction().await?;
            tx.batch_execute("SET LOCAL plan_cache_mode = force_custom_plan")
                .await?;
            let statement = tx.prepare_cached(text).await?;
            let rows = tx.query(&statement, params).await?;
            tx.commit().await?;
            Ok(rows)
        };
        until_cancelled(token, tls, work, cancel).await
    } else {
        let work = async {
            let statement = client.prepare_cached(text).await?;
            client.query(&statement, params).await
        };
        until_cancelled(token, tls, work, cancel).await
    };
    match ended {
        Ended::Finished(Ok(rows)) => Ok((client, rows)),
        Ended::Finished(Err(_)) if cancel.is_cancelled() => Err(StoreError::Cancelled),
        Ended::Finished(Err(error)) => Err(db(error)),
        Ended::Cancelled { reusable } => {
            if !reusable {
                drop(Object::take(client));
            }
            Err(StoreError::Cancelled)
        }
    }
}

/// One page of `filter`'s matches (see [`crate::store::EventStore::page`]), read by
/// `reader`.
pub async fn page(
    reader: Reader<'_>,
    filter: &Filter,
    after: Option<Cursor>,
    count: usize,
    now: u64,
    cancel: &Cancel,
) -> Result<Vec<Row>, StoreError> {
    let (text, q) = sql::select(filter, after, count, now);
    let Reader { client, cache, tls } = reader;
    let custom = filter.search.is_some();
    let (client, rows) = run(client, tls, &text, &q.refs(), custom, cancel).await?;
    let found: Vec<Match> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let json = json_of(cache, &client, &found).await?;
    let recheck = sql::needs_recheck(filter);
    Ok(found
        .into_iter()
        .filter_map(|(created_at, id)| {
            let id: [u8; 32] = id.try_into().ok()?;
            let json = json.get(&id)?;
            // A long tag value is found by its hash: the event must hold the value itself.
            if recheck && !Event::parse(json).is_ok_and(|e| filter.matches(&e)) {
                return None;
            }
            Some(Row {
                created_at,
                id,
                json: json.to_string(),
            })
        })
        .collect())
}

/// The `created_at` and id of one page of `filter`'s events, without their JSON.
pub async fn records(
    reader: Reader<'_>,
    filter: &Filter,
    after: Option<Cursor>,
    count: usize,
    now: u64,
    cancel: &Cancel,
) -> Result<Vec<Record>, StoreError> {
    let (text, q) = sql::select(filter, after, count, now);
    let custom = filter.search.is_some();
    let (_, rows) = run(reader.client, reader.tls, &text, &q.refs(), custom, cancel).await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let id: Vec<u8> = r.get(1);
            Some((r.get(0), id.try_into().ok()?))
        })
        .collect())
}

/// How many events match any of `filters`, counted by `reader`.
pub async fn count(
    reader: Reader<'_>,
    filters: &[Filter],
    now: u64,
    cancel: &Cancel,
) -> Result<u64, StoreError> {
    let (text, q) = sql::count(filters.iter().filter(|f| f.can_match()), now);
    let (_, rows) = run(reader.client, reader.tls, &text, &q.refs(), true, cancel).await?;
    let count: i64 = rows.first().map_or(0, |row| row.get(0));
    Ok(count as u64)
}

/// The NIP-45 HLL of the pubkeys of the events `filter` matches, computed in the database.
pub async fn hll(
    reader: Reader<'_>,
    filter: &Filter,
    offset: usize,
    now: u64,
    cancel: &Cancel,
) -> Result<Hll, StoreError> {
    let (text, q) = sql::hll(filter, offset, now);
    let (_, rows) = run(reader.client, reader.tls, &text, &q.refs(), true, cancel).await?;
    let mut hll = Hll::default();
    for row in rows {
        let (register, value): (i32, i32) = (row.get(0), row.get(1));
        hll.raise(register as usize, value.clamp(0, 255) as u8);
    }
    Ok(hll)
}

/// The JSON of every matched event: from the cache, and the rest in one query (an event
/// deleted meanwhile is simply not found, and left out).
async fn json_of(
    cache: &JsonCache,
    client: &Object,
    found: &[Match],
) -> Result<FastMap<[u8; 32], Arc<str>>, StoreError> {
    let mut json = FastMap::default();
    let mut missing: Vec<&[u8]> = Vec::new();
    for (_, id) in found {
        let Ok(key) = <[u8; 32]>::try_from(id.as_slice()) else {
            continue;
        };
        match cache.get(&key) {
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
            cache.insert(key, Arc::clone(&text));
            json.insert(key, text);
        }
    }
    Ok(json)
}
