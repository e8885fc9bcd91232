//! The rules in the embedded store: [`PolicyStore`] on the writer thread (changes, removals)
//! and the reader threads (loads).

use rusqlite::{Connection, TransactionBehavior, params};

use super::{SqliteStore, write::delete_events};
use crate::store::{
    BoxFuture, StoreError,
    policy::{
        AuditRecord, PolicyEdit, PolicyEntry, PolicyList, PolicyStore, Removal, StoredPolicy,
    },
    to_sql_int,
};

fn version(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM policy_audit", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|seq| seq as u64)
}

fn load(conn: &mut Connection) -> rusqlite::Result<StoredPolicy> {
    // One read transaction: the version and the rows it describes agree.
    let tx = conn.transaction()?;
    let version = version(&tx)?;
    let entries = tx
        .prepare_cached("SELECT list, value, note FROM policy_entries ORDER BY list, value")?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .filter_map(|(list, value, note)| {
            PolicyList::parse(&list).map(|list| PolicyEntry { list, value, note })
        })
        .collect();
    let settings = tx
        .prepare_cached("SELECT name, value FROM relay_settings ORDER BY name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(StoredPolicy {
        version,
        entries,
        settings,
    })
}

fn change(
    conn: &mut Connection,
    edits: &[PolicyEdit],
    audit: &AuditRecord,
) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for edit in edits {
        match edit {
            PolicyEdit::Put(entry) => tx
                .prepare_cached(
                    "INSERT INTO policy_entries (list, value, note) VALUES (?1, ?2, ?3)
                     ON CONFLICT (list, value) DO UPDATE SET note = excluded.note",
                )?
                .execute(params![entry.list.as_str(), entry.value, entry.note])?,
            PolicyEdit::Remove(list, value) => tx
                .prepare_cached("DELETE FROM policy_entries WHERE list = ?1 AND value = ?2")?
                .execute(params![list.as_str(), value])?,
            PolicyEdit::Set(name, value) => tx
                .prepare_cached(
                    "INSERT INTO relay_settings (name, value) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![name, value])?,
        };
    }
    tx.prepare_cached(
        "INSERT INTO policy_audit (at, actor, method, params) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        to_sql_int(audit.at),
        audit.actor,
        audit.method,
        audit.params
    ])?;
    let seq = tx.last_insert_rowid() as u64;
    tx.commit()?;
    Ok(seq)
}

fn audit_log(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<AuditRecord>> {
    conn.prepare_cached(
        "SELECT seq, at, actor, method, params FROM policy_audit ORDER BY seq DESC LIMIT ?1",
    )?
    .query_map([to_sql_int(limit as u64)], |r| {
        Ok(AuditRecord {
            seq: r.get::<_, i64>(0)? as u64,
            at: r.get::<_, i64>(1)?.max(0) as u64,
            actor: r.get(2)?,
            method: r.get(3)?,
            params: r.get(4)?,
        })
    })?
    .collect()
}

impl PolicyStore for SqliteStore {
    fn load_policy(&self) -> BoxFuture<'_, Result<StoredPolicy, StoreError>> {
        Box::pin(self.readers.run(load))
    }

    fn policy_version(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.readers.run(|conn| version(conn)))
    }

    fn change_policy(
        &self,
        edits: Vec<PolicyEdit>,
        audit: AuditRecord,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.writer.run(move |conn| change(conn, &edits, &audit)))
    }

    fn audit_log(&self, limit: usize) -> BoxFuture<'_, Result<Vec<AuditRecord>, StoreError>> {
        Box::pin(self.readers.run(move |conn| audit_log(conn, limit)))
    }

    fn remove_events(&self, removal: Removal) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.writer.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let removed = match removal {
                Removal::Author(pubkey) => delete_events(&tx, "pubkey = ?1", [&pubkey[..]])?,
                Removal::Event(id) => delete_events(&tx, "id = ?1", [&id[..]])?,
            };
            tx.commit()?;
            Ok(removed as u64)
        }))
    }
}
