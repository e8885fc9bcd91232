//! The embedded store: SQLite in WAL mode, in one file under the data directory.
//!
//! One writer thread owns the only writing connection, so a batch is one transaction and
//! NIP-01/NIP-09 rules are decided in order without races. Reader threads each own a
//! read-only connection; WAL lets them read while the writer commits.

mod schema;
mod sql;
mod workers;
mod write;

use std::{path::Path, sync::Arc, thread};

use rusqlite::{Connection, TransactionBehavior, params, params_from_iter, types::Value};

use super::{BoxFuture, EventStore, Row, StoreError, WriteOutcome, merge, to_sql_int};
use crate::nostr::{Filter, VerifiedEvent};

pub use schema::FILE_NAME;
use sql::{condition, fts_query, tag_driven};
use workers::Workers;
use write::{delete_events, write_one};

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
        schema::migrate(&mut writer).context("applying the embedded schema")?;
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
                values.push(Value::Integer(to_sql_int(filter.limit.unwrap_or(0))));
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
