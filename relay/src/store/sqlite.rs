//! The embedded store: SQLite in WAL mode, in one file under the data directory.
//!
//! One writer thread owns the only writing connection, so a batch is one transaction and
//! NIP-01/NIP-09 rules are decided in order without races. Reader threads each own a
//! read-only connection; WAL lets them read while the writer commits.

use std::{
    path::Path,
    sync::{Arc, Mutex, mpsc},
    thread,
};

use rusqlite::{
    Connection, OptionalExtension, Transaction, TransactionBehavior, params, params_from_iter,
    types::Value,
};
use tokio::sync::oneshot;

use super::{BoxFuture, EventStore, Row, StoreError, WriteOutcome, merge, to_sql_int as clamp};
use crate::nostr::{Event, Filter, KindClass, TagFilter, VerifiedEvent, kind::DELETION};

/// File name of the database inside the data directory.
pub const FILE_NAME: &str = "starling.sqlite3";

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
const SCHEMA: &[&str] = &[
    r#"
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY,
    id         BLOB    NOT NULL UNIQUE,
    pubkey     BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    kind       INTEGER NOT NULL,
    d_tag      TEXT,
    expires_at INTEGER,
    json       TEXT    NOT NULL
);
CREATE INDEX events_by_time    ON events (created_at DESC, id);
CREATE INDEX events_by_author  ON events (pubkey, kind, created_at DESC);
CREATE INDEX events_by_kind    ON events (kind, created_at DESC);
CREATE INDEX events_by_address ON events (pubkey, kind, d_tag) WHERE d_tag IS NOT NULL;
CREATE INDEX events_by_expiry  ON events (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE tags (
    event_seq  INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX tags_by_value ON tags (name, value, created_at DESC);
CREATE INDEX tags_by_event ON tags (event_seq);

CREATE TABLE deleted_ids (
    event_id BLOB NOT NULL,
    pubkey   BLOB NOT NULL,
    PRIMARY KEY (event_id, pubkey)
) WITHOUT ROWID;

CREATE TABLE deleted_addresses (
    kind    INTEGER NOT NULL,
    pubkey  BLOB    NOT NULL,
    d_tag   TEXT    NOT NULL,
    until   INTEGER NOT NULL,
    PRIMARY KEY (kind, pubkey, d_tag)
) WITHOUT ROWID;
"#,
    r#"
CREATE VIRTUAL TABLE events_fts USING fts5 (content, content = '', contentless_delete = 1);
"#,
];

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Threads that each own a connection and run jobs from one shared queue.
struct Workers {
    jobs: mpsc::Sender<Job>,
}

impl Workers {
    fn spawn(name: &str, connections: Vec<Connection>) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for (n, mut conn) in connections.into_iter().enumerate() {
            let queue = Arc::clone(&queue);
            thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || {
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&mut conn),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work` on one of the threads and waits for its result without blocking.
    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let (reply, result) = oneshot::channel();
        let sent = self.jobs.send(Box::new(move |conn: &mut Connection| {
            let _ = reply.send(work(conn).map_err(|e| StoreError::Database(e.to_string())));
        }));
        async move {
            sent.map_err(|_| StoreError::Closed)?;
            result.await.map_err(|_| StoreError::Closed)?
        }
    }
}

/// The embedded SQLite store.
pub struct SqliteStore {
    writer: Workers,
    readers: Workers,
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `data_dir` and brings its schema up to date.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data directory {}", data_dir.display()))?;
        let path = data_dir.join(FILE_NAME);
        let mut writer =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        writer.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
        )?;
        migrate(&mut writer).context("applying the embedded schema")?;
        let readers = (0..reader_count())
            .map(|_| {
                let conn = Connection::open(&path)?;
                conn.execute_batch("PRAGMA query_only = 1; PRAGMA busy_timeout = 5000;")?;
                Ok(conn)
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Self {
            writer: Workers::spawn("sqlite-writer", vec![writer])?,
            readers: Workers::spawn("sqlite-reader", readers)?,
        })
    }
}

fn reader_count() -> usize {
    thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let done: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (version, sql) in (1_i64..).zip(SCHEMA).skip(done.max(0) as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(())
}

impl EventStore for SqliteStore {
    fn write(
        &self,
        batch: Vec<Arc<VerifiedEvent>>,
    ) -> BoxFuture<'_, Result<Vec<WriteOutcome>, StoreError>> {
        Box::pin(self.writer.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let outcomes = batch
                .iter()
                .map(|e| write_one(&tx, e))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            tx.commit()?;
            Ok(outcomes)
        }))
    }

    fn query(
        &self,
        filters: Arc<[Filter]>,
        now: u64,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(self.readers.run(move |conn| {
            let mut answers = Vec::new();
            for filter in filters.iter().filter(|f| f.can_match()) {
                let mut values = Vec::new();
                let sql = match &filter.search {
                    Some(search) => {
                        values.push(Value::Text(fts_query(search)));
                        let condition = condition(filter, now, &mut values);
                        format!(
                            "SELECT e.created_at, e.id, e.json
                             FROM events_fts JOIN events e ON e.seq = events_fts.rowid
                             WHERE events_fts MATCH ? AND {condition} ORDER BY events_fts.rank LIMIT ?"
                        )
                    }
                    None => match tag_driven(filter) {
                        Some((tag, rest)) => {
                            values.push(Value::Text(char::from(tag.letter).to_string()));
                            values.extend(tag.values.iter().map(|v| Value::Text(v.clone())));
                            let condition = condition(&rest, now, &mut values);
                            let placeholders = vec!["?"; tag.values.len()].join(",");
                            // CROSS JOIN keeps the tag index as the outer loop: its rows come
                            // newest first, so the scan stops at the limit.
                            format!(
                                "SELECT DISTINCT e.created_at, e.id, e.json
                                 FROM tags t CROSS JOIN events e ON e.seq = t.event_seq
                                 WHERE t.name = ? AND t.value IN ({placeholders}) AND {condition}
                                 ORDER BY t.created_at DESC, e.id ASC LIMIT ?"
                            )
                        }
                        None => {
                            let condition = condition(filter, now, &mut values);
                            format!(
                                "SELECT e.created_at, e.id, e.json FROM events e
                                 WHERE {condition} ORDER BY e.created_at DESC, e.id ASC LIMIT ?"
                            )
                        }
                    },
                };
                values.push(Value::Integer(clamp(filter.limit.unwrap_or(0))));
                let rows = conn
                    .prepare_cached(&sql)?
                    .query_map(params_from_iter(values), |r| {
                        Ok(Row { created_at: r.get(0)?, id: r.get(1)?, json: r.get(2)? })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                answers.push((filter.search.is_some(), rows));
            }
            Ok(merge(answers))
        }))
    }

    fn count(&self, filters: Arc<[Filter]>, now: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.readers.run(move |conn| {
            let mut values = Vec::new();
            let conditions: Vec<String> = filters
                .iter()
                .filter(|f| f.can_match())
                .map(|f| {
                    let condition = condition(f, now, &mut values);
                    let search = f.search.as_ref().map(|search| {
                        values.push(Value::Text(fts_query(search)));
                        " AND e.seq IN (SELECT rowid FROM events_fts WHERE events_fts MATCH ?)"
                    });
                    format!("({condition}{})", search.unwrap_or_default())
                })
                .collect();
            if conditions.is_empty() {
                return Ok(0);
            }
            let sql = format!(
                "SELECT COUNT(*) FROM events e WHERE {}",
                conditions.join(" OR ")
            );
            let count: i64 = conn
                .prepare_cached(&sql)?
                .query_row(params_from_iter(values), |r| r.get(0))?;
            Ok(count as u64)
        }))
    }

    fn purge_expired(&self, now: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.writer.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let purged = delete_events(&tx, "expires_at <= ?1", params![clamp(now)])?;
            tx.commit()?;
            Ok(purged as u64)
        }))
    }

    fn position(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.readers.run(|conn| {
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|seq| seq as u64)
        }))
    }

    fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(u64, String)>, StoreError>> {
        Box::pin(self.readers.run(move |conn| {
            conn.prepare_cached(
                "SELECT seq, json FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?
            .query_map(params![clamp(after), clamp(limit as u64)], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })?
            .collect()
        }))
    }
}

/// For a filter with a tag condition but no ids or authors (which their own indexes serve
/// better): the tag condition to drive the query from the tag index, and the rest of the
/// filter.
fn tag_driven(filter: &Filter) -> Option<(&TagFilter, Filter)> {
    if filter.ids.is_some() || filter.authors.is_some() {
        return None;
    }
    let tag = filter.tags.first()?;
    let rest = Filter {
        tags: filter.tags[1..].to_vec(),
        ..filter.clone()
    };
    Some((tag, rest))
}

/// A NIP-50 query as an FTS5 expression: every word, quoted, must occur.
fn fts_query(search: &str) -> String {
    let words: Vec<String> = search
        .split(' ')
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    words.join(" ")
}

/// The WHERE condition for one filter over `events e` (NIP-50 `search` aside), pushing its
/// bound values onto `values`.
fn condition(filter: &Filter, now: u64, values: &mut Vec<Value>) -> String {
    fn placeholders(n: usize) -> String {
        vec!["?"; n].join(",")
    }
    let mut parts = Vec::new();
    if let Some(ids) = &filter.ids {
        parts.push(format!("e.id IN ({})", placeholders(ids.len())));
        values.extend(ids.iter().map(|id| Value::Blob(id.to_vec())));
    }
    if let Some(authors) = &filter.authors {
        parts.push(format!("e.pubkey IN ({})", placeholders(authors.len())));
        values.extend(authors.iter().map(|a| Value::Blob(a.to_vec())));
    }
    if let Some(kinds) = &filter.kinds {
        parts.push(format!("e.kind IN ({})", placeholders(kinds.len())));
        values.extend(kinds.iter().map(|k| Value::Integer(i64::from(*k))));
    }
    if let Some(since) = filter.since {
        parts.push("e.created_at >= ?".into());
        values.push(Value::Integer(clamp(since)));
    }
    if let Some(until) = filter.until {
        parts.push("e.created_at <= ?".into());
        values.push(Value::Integer(clamp(until)));
    }
    for tag in &filter.tags {
        parts.push(format!(
            "e.seq IN (SELECT event_seq FROM tags WHERE name = ? AND value IN ({}))",
            placeholders(tag.values.len())
        ));
        values.push(Value::Text(char::from(tag.letter).to_string()));
        values.extend(tag.values.iter().map(|v| Value::Text(v.clone())));
    }
    parts.push("(e.expires_at IS NULL OR e.expires_at > ?)".into());
    values.push(Value::Integer(clamp(now)));
    parts.join(" AND ")
}

/// Applies NIP-01 and NIP-09 to one event inside the batch's transaction.
fn write_one(tx: &Transaction<'_>, verified: &VerifiedEvent) -> rusqlite::Result<WriteOutcome> {
    let e = &verified.event;
    let exists = tx
        .prepare_cached("SELECT 1 FROM events WHERE id = ?1")?
        .exists([&e.id[..]])?;
    if exists {
        return Ok(WriteOutcome::Duplicate);
    }
    if e.kind != DELETION
        && tx
            .prepare_cached("SELECT 1 FROM deleted_ids WHERE event_id = ?1 AND pubkey = ?2")?
            .exists(params![&e.id[..], &e.pubkey[..]])?
    {
        return Ok(WriteOutcome::Deleted);
    }
    let d_tag = match e.class() {
        KindClass::Ephemeral => return Ok(WriteOutcome::Stored),
        KindClass::Regular => None,
        KindClass::Replaceable => Some(""),
        KindClass::Addressable => Some(e.d_tag()),
    };
    let created_at = clamp(e.created_at);
    if let Some(d) = d_tag {
        let deleted_until: Option<i64> = tx
            .prepare_cached(
                "SELECT until FROM deleted_addresses WHERE kind = ?1 AND pubkey = ?2 AND d_tag = ?3",
            )?
            .query_row(params![e.kind, &e.pubkey[..], d], |r| r.get(0))
            .optional()?;
        if deleted_until.is_some_and(|until| created_at <= until) {
            return Ok(WriteOutcome::Deleted);
        }
        let newer_exists = tx
            .prepare_cached(
                "SELECT 1 FROM events WHERE pubkey = ?1 AND kind = ?2 AND d_tag = ?3
                 AND (created_at > ?4 OR (created_at = ?4 AND id < ?5))",
            )?
            .exists(params![&e.pubkey[..], e.kind, d, created_at, &e.id[..]])?;
        if newer_exists {
            return Ok(WriteOutcome::Superseded);
        }
        delete_events(
            tx,
            "pubkey = ?1 AND kind = ?2 AND d_tag = ?3",
            params![&e.pubkey[..], e.kind, d],
        )?;
    }
    let expires_at = e.expiration().ok().flatten().map(clamp);
    tx.prepare_cached(
        "INSERT INTO events (id, pubkey, created_at, kind, d_tag, expires_at, json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        &e.id[..],
        &e.pubkey[..],
        created_at,
        e.kind,
        d_tag,
        expires_at,
        &*verified.json
    ])?;
    let seq = tx.last_insert_rowid();
    let mut insert_tag = tx.prepare_cached(
        "INSERT INTO tags (event_seq, name, value, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (letter, value) in e.indexed_tags() {
        insert_tag.execute(params![
            seq,
            char::from(letter).to_string(),
            value,
            created_at
        ])?;
    }
    if !e.content.is_empty() {
        tx.prepare_cached("INSERT INTO events_fts (rowid, content) VALUES (?1, ?2)")?
            .execute(params![seq, e.content])?;
    }
    if e.kind == DELETION {
        apply_deletion(tx, e)?;
    }
    Ok(WriteOutcome::Stored)
}

/// NIP-09: removes what a deletion request names, when the requester is the author, and
/// remembers it so that the deleted events are refused if they are sent again.
fn apply_deletion(tx: &Transaction<'_>, request: &Event) -> rusqlite::Result<()> {
    let author = &request.pubkey[..];
    let targets = request.deletion_targets();
    for id in &targets.ids {
        delete_events(
            tx,
            "id = ?1 AND pubkey = ?2 AND kind != 5",
            params![&id[..], author],
        )?;
        tx.prepare_cached("INSERT OR IGNORE INTO deleted_ids (event_id, pubkey) VALUES (?1, ?2)")?
            .execute(params![&id[..], author])?;
    }
    let until = clamp(request.created_at);
    for (kind, d) in &targets.addresses {
        delete_events(
            tx,
            "pubkey = ?1 AND kind = ?2 AND d_tag = ?3 AND created_at <= ?4",
            params![author, kind, d, until],
        )?;
        tx.prepare_cached(
            "INSERT INTO deleted_addresses (kind, pubkey, d_tag, until) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, pubkey, d_tag) DO UPDATE SET until = max(until, excluded.until)",
        )?
        .execute(params![kind, author, d, until])?;
    }
    Ok(())
}

/// Deletes the events matching `condition`, with their tag and search rows; returns how many.
fn delete_events(
    tx: &Transaction<'_>,
    condition: &str,
    values: impl rusqlite::Params + Clone,
) -> rusqlite::Result<usize> {
    let doomed = format!("SELECT seq FROM events WHERE {condition}");
    tx.prepare_cached(&format!("DELETE FROM tags WHERE event_seq IN ({doomed})"))?
        .execute(values.clone())?;
    tx.prepare_cached(&format!("DELETE FROM events_fts WHERE rowid IN ({doomed})"))?
        .execute(values.clone())?;
    tx.prepare_cached(&format!("DELETE FROM events WHERE {condition}"))?
        .execute(values)
}
