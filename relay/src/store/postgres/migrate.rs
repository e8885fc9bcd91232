//! Schema migrations for PostgreSQL: the numbered SQL files of `migrations/`, applied in
//! order, each in its own transaction, recorded in `starling_migrations`.
//!
//! Several nodes may start at once: a session-level advisory lock makes them take turns, and
//! each applies only what the ones before it did not.

use tokio_postgres::Client;

/// Advisory lock key held while migrating ("starling" in ASCII).
const LOCK_KEY: i64 = 0x7374_6172_6c69_6e67;

/// Every migration: version, name and SQL. Versions are the files' numbers.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_events.sql",
        include_str!("../../../../migrations/0001_events.sql"),
    ),
    (
        2,
        "0002_probe_indexes.sql",
        include_str!("../../../../migrations/0002_probe_indexes.sql"),
    ),
    (
        3,
        "0003_vanish.sql",
        include_str!("../../../../migrations/0003_vanish.sql"),
    ),
    (
        4,
        "0004_policy.sql",
        include_str!("../../../../migrations/0004_policy.sql"),
    ),
    (
        5,
        "0005_tag_order.sql",
        include_str!("../../../../migrations/0005_tag_order.sql"),
    ),
];

/// Applies pending migrations; returns the names of those applied now.
pub async fn run(client: &mut Client) -> Result<Vec<&'static str>, tokio_postgres::Error> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = apply_pending(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let applied = result?;
    unlocked?;
    Ok(applied)
}

async fn apply_pending(client: &mut Client) -> Result<Vec<&'static str>, tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS starling_migrations (
                 version    INTEGER PRIMARY KEY,
                 name       TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let done: Vec<i32> = client
        .query("SELECT version FROM starling_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| !done.contains(v)) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO starling_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tx.commit().await?;
        applied.push(*name);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    #[test]
    fn every_file_in_migrations_is_listed_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations directory")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|(_, name, _)| *name).collect();
        assert_eq!(files, listed);
        for (n, (version, name, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version as usize, n + 1);
            assert!(name.starts_with(&format!("{version:04}_")));
        }
    }
}
