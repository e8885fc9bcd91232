//! The embedded store: SQLite in WAL mode, in one file under the data directory.
//!
//! One writer thread owns the only writing connection, so a batch is one transaction and
//! NIP-01/NIP-09 rules are decided in order without races. Reader threads each own a
//! read-only connection; WAL lets them read while the writer commits. A read stops when its
//! requester cancels it or when it runs past the statement time limit, through a progress
//! handler that SQLite calls as it works.

mod policy;
mod schema;
mod sql;
mod workers;
mod write;

use std::{path::Path, sync::Arc, thread, time::Duration};

use rusqlite::{Connection, TransactionBehavior, params, params_from_iter};

use super::{
    BoxFuture, Cancel, Cursor, EventStore, Record, Row, StoreError, WriteOutcome, to_sql_int,
};
use crate::nostr::{Filter, VerifiedEvent, hll::Hll};

pub use schema::FILE_NAME;

use workers::Workers;
use write::{delete_events, write_one};

/// The embedded SQLite store.
pub struct SqliteStore {
    writer: Workers,
    readers: Workers,
    read_timeout: Duration,
}

/// How much of the database file reader connections map into memory (address space, not
/// memory of their own: the pages are the kernel's page cache). SQLite caps it at its
/// build's maximum; pages still in the WAL are read as before.
const MMAP_BYTES: u64 = 1 << 34;

/// Longest a read may run unless [`SqliteStore::with_read_timeout`] says otherwise.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

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
        stable_plans(&writer)?;
        schema::migrate(&mut writer).context("applying the embedded schema")?;
        // Pages still in the write-ahead log are looked up there on every read until a
        // checkpoint copies them to the file and a write resets the log: after an import or
        // a migration that is a whole log for each page read (a sixth of the instructions
        // of reading a page of `kinds`). Start with it empty; another process reading now
        // makes this give up, which changes nothing else.
        if let Err(error) = writer.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::debug!(%error, "could not empty the write-ahead log at start");
        }
        let readers = (0..reader_count())
            .map(|_| {
                let conn = Connection::open(&path)?;
                // Reads map the file instead of copying each page through a read() call:
                // a query that visits scattered rows spent most of its time in the kernel.
                conn.execute_batch(&format!(
                    "PRAGMA query_only = 1; PRAGMA busy_timeout = 5000; PRAGMA mmap_size = {MMAP_BYTES};"
                ))?;
                stable_plans(&conn)?;
                Ok(conn)
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Self {
            writer: Workers::spawn("sqlite-writer", vec![writer])?,
            readers: Workers::spawn("sqlite-reader", readers)?,
            read_timeout: READ_TIMEOUT,
        })
    }

    /// The same store, its reads interrupted after `timeout`.
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }
}

impl SqliteStore {
    /// Runs a page query (`created_at`, id, …) on a reader thread, each row with a 32-byte
    /// id made into a `T` by `make`; rows the query leaves unordered are put in the
    /// page's order (newest first, ties by lowest id).
    fn read_rows<'a, T: Send + 'static>(
        &'a self,
        cancel: &'a Cancel,
        query: sql::PageQuery,
        make: fn(i64, [u8; 32], &rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> impl Future<Output = Result<Vec<T>, StoreError>> + Send + 'a {
        self.readers
            .run_cancellable(cancel, self.read_timeout, move |conn| {
                let mut rows = Vec::new();
                let mut statement = conn.prepare_cached(&query.sql)?;
                let mut found = statement.query(params_from_iter(query.values))?;
                while let Some(r) = found.next()? {
                    let id: Vec<u8> = r.get(1)?;
                    if let Ok(id) = id.try_into() {
                        let created_at: i64 = r.get(0)?;
                        rows.push((created_at, id, make(created_at, id, r)?));
                    }
                }
                if query.unordered {
                    rows.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
                }
                Ok(rows.into_iter().map(|(_, _, row)| row).collect())
            })
    }
}

/// Plans that do not depend on the values bound: SQLite (3.54) otherwise marks a statement
/// whose `LIMIT` is bound as worth re-planning for new values, and the statement cache
/// clears every statement's values when it takes it back, so each query was parsed and
/// planned again (a tenth of a reader's time on a tag query).
fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

fn reader_count() -> usize {
    thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
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

    fn page<'a>(
        &'a self,
        filter: &'a Filter,
        after: Option<Cursor>,
        count: usize,
        now: u64,
        cancel: &'a Cancel,
    ) -> BoxFuture<'a, Result<Vec<Row>, StoreError>> {
        let query = sql::page(filter, after, count, now);
        Box::pin(self.read_rows(cancel, query, |created_at, id, r| {
            Ok(Row {
                created_at,
                id,
                json: r.get(2)?,
            })
        }))
    }

    fn records<'a>(
        &'a self,
        filter: &'a Filter,
        after: Option<Cursor>,
        count: usize,
        now: u64,
        cancel: &'a Cancel,
    ) -> BoxFuture<'a, Result<Vec<Record>, StoreError>> {
        let query = sql::records(filter, after, count, now);
        Box::pin(self.read_rows(cancel, query, |created_at, id, _| Ok((created_at, id))))
    }

    fn count<'a>(
        &'a self,
        filters: &'a [Filter],
        now: u64,
        cancel: &'a Cancel,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let Some((sql, values)) = sql::count(filters, now) else {
            return Box::pin(async { Ok(0) });
        };
        Box::pin(
            self.readers
                .run_cancellable(cancel, self.read_timeout, move |conn| {
                    let count: i64 = conn
                        .prepare_cached(&sql)?
                        .query_row(params_from_iter(values), |r| r.get(0))?;
                    Ok(count as u64)
                }),
        )
    }

    fn hll<'a>(
        &'a self,
        filter: &'a Filter,
        offset: usize,
        now: u64,
        cancel: &'a Cancel,
    ) -> BoxFuture<'a, Result<Hll, StoreError>> {
        let Some((sql, values)) = sql::pubkeys(filter, now) else {
            return Box::pin(async { Ok(Hll::default()) });
        };
        Box::pin(
            self.readers
                .run_cancellable(cancel, self.read_timeout, move |conn| {
                    let mut hll = Hll::default();
                    let mut statement = conn.prepare_cached(&sql)?;
                    let mut rows = statement.query(params_from_iter(values))?;
                    while let Some(row) = rows.next()? {
                        let pubkey: Vec<u8> = row.get(0)?;
                        if let Ok(pubkey) = <[u8; 32]>::try_from(pubkey.as_slice()) {
                            hll.add(&pubkey, offset);
                        }
                    }
                    Ok(hll)
                }),
        )
    }

    fn purge_expired(&self, now: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.writer.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let purged = delete_events(&tx, "expires_at <= ?1", params![to_sql_int(now)])?;
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
            .query_map(params![to_sql_int(after), to_sql_int(limit as u64)], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })?
            .collect()
        }))
    }
}
