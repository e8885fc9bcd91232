//! The rules in PostgreSQL: [`PolicyStore`] for [`PgStore`]. Changes take an exclusive lock
//! on the audit table first, so that audit sequence numbers are handed out in commit order
//! and the largest committed one is always the newest version (see
//! `migrations/0004_policy.sql`).

use super::{PgStore, error::db};
use crate::store::{
    BoxFuture, StoreError,
    policy::{
        AuditRecord, PolicyEdit, PolicyEntry, PolicyList, PolicyStore, Removal, StoredPolicy,
    },
    to_sql_int,
};

const VERSION: &str = "SELECT COALESCE(MAX(seq), 0) FROM policy_audit";

impl PolicyStore for PgStore {
    fn load_policy(&self) -> BoxFuture<'_, Result<StoredPolicy, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            // One snapshot: the version and the rows it describes agree.
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(db)?;
            let version = tx.query_one(VERSION, &[]).await.map_err(db)?;
            let entries = tx
                .query(
                    "SELECT list, value, note FROM policy_entries ORDER BY list, value",
                    &[],
                )
                .await
                .map_err(db)?;
            let settings = tx
                .query("SELECT name, value FROM relay_settings ORDER BY name", &[])
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok(StoredPolicy {
                version: version.get::<_, i64>(0) as u64,
                entries: entries
                    .iter()
                    .filter_map(|r| {
                        PolicyList::parse(r.get(0)).map(|list| PolicyEntry {
                            list,
                            value: r.get(1),
                            note: r.get(2),
                        })
                    })
                    .collect(),
                settings: settings.iter().map(|r| (r.get(0), r.get(1))).collect(),
            })
        })
    }

    fn policy_version(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client.query_one(VERSION, &[]).await.map_err(db)?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn change_policy(
        &self,
        edits: Vec<PolicyEdit>,
        audit: AuditRecord,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db)?;
            tx.batch_execute("LOCK TABLE policy_audit IN EXCLUSIVE MODE")
                .await
                .map_err(db)?;
            for edit in &edits {
                match edit {
                    PolicyEdit::Put(entry) => tx
                        .execute(
                            "INSERT INTO policy_entries (list, value, note) VALUES ($1, $2, $3)
                             ON CONFLICT (list, value) DO UPDATE SET note = EXCLUDED.note",
                            &[&entry.list.as_str(), &entry.value, &entry.note],
                        )
                        .await
                        .map_err(db)?,
                    PolicyEdit::Remove(list, value) => tx
                        .execute(
                            "DELETE FROM policy_entries WHERE list = $1 AND value = $2",
                            &[&list.as_str(), value],
                        )
                        .await
                        .map_err(db)?,
                    PolicyEdit::Set(name, value) => tx
                        .execute(
                            "INSERT INTO relay_settings (name, value) VALUES ($1, $2)
                             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                            &[name, value],
                        )
                        .await
                        .map_err(db)?,
                };
            }
            let row = tx
                .query_one(
                    "INSERT INTO policy_audit (at, actor, method, params) VALUES ($1, $2, $3, $4)
                     RETURNING seq",
                    &[
                        &to_sql_int(audit.at),
                        &audit.actor,
                        &audit.method,
                        &audit.params,
                    ],
                )
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn audit_log(&self, limit: usize) -> BoxFuture<'_, Result<Vec<AuditRecord>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT seq, at, actor, method, params FROM policy_audit
                     ORDER BY seq DESC LIMIT $1",
                    &[&to_sql_int(limit as u64)],
                )
                .await
                .map_err(db)?;
            Ok(rows
                .iter()
                .map(|r| AuditRecord {
                    seq: r.get::<_, i64>(0) as u64,
                    at: r.get::<_, i64>(1).max(0) as u64,
                    actor: r.get(2),
                    method: r.get(3),
                    params: r.get(4),
                })
                .collect())
        })
    }

    fn remove_events(&self, removal: Removal) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            // Tag rows follow by trigger.
            let (sql, key) = match removal {
                Removal::Author(pubkey) => ("DELETE FROM events WHERE pubkey = $1", pubkey),
                Removal::Event(id) => ("DELETE FROM events WHERE id = $1", id),
            };
            client.execute(sql, &[&&key[..]]).await.map_err(db)
        })
    }
}
