//! What a session of the store is: the settings each new connection is given, and the
//! start-up check that whatever stands between the relay and PostgreSQL keeps a session
//! on one server backend.
//!
//! The store's sessions hold state: the settings below, and the prepared statements each
//! pooled connection caches. A pooler that hands a client's next transaction to another
//! backend (PgBouncer's `pool_mode = transaction` or `statement`) loses both, so the relay
//! refuses one at start-up; PgBouncer in `pool_mode = session` works.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio_postgres::{Client, Config, SimpleQueryMessage};

use super::tls::PgTls;

/// Settings of every session the store opens, as statements run once a connection is made
/// (not as start-up options, which poolers such as PgBouncer refuse): the statement
/// timeout; no parallel workers and no JIT compilation, whose start-up costs more than a
/// relay's small indexed queries take (a generic plan, not knowing its limit, can look
/// costly enough to trigger JIT on every execution); and generic plans for prepared
/// statements: the store's writes and index probes have one good plan whatever the values,
/// and planning them anew for each execution cost as much as running them. Statements
/// whose plan depends on the values run with custom plans.
pub fn session_settings(statement_timeout: Duration) -> String {
    format!(
        "SET statement_timeout = {}; SET max_parallel_workers_per_gather = 0; SET jit = off; \
         SET plan_cache_mode = force_generic_plan",
        statement_timeout.as_millis()
    )
}

/// Fails when the server at `config` moves a session to another backend between
/// transactions. Two connections: the first reads its backend's process id, the second
/// opens a transaction (so that a transaction pooler must give it a backend of its own,
/// the one the first just released if it can), then the first reads its id again.
pub async fn check_session_pooling(config: &Config, tls: &PgTls) -> anyhow::Result<()> {
    let (first, second) = (connect(config, tls).await?, connect(config, tls).await?);
    let before = backend_pid(&first).await?;
    second.batch_execute("BEGIN").await?;
    let during = backend_pid(&second).await?;
    let after = backend_pid(&first).await?;
    second.batch_execute("ROLLBACK").await?;
    if before != after || before == during {
        bail!(
            "DATABASE_URL leads to a pooler that moves a session to another PostgreSQL \
             backend between transactions (PgBouncer's pool_mode = transaction or statement); \
             the store's sessions hold settings and prepared statements: use pool_mode = \
             session, or connect to PostgreSQL directly"
        );
    }
    Ok(())
}

async fn connect(config: &Config, tls: &PgTls) -> anyhow::Result<Client> {
    let (client, connection) = config
        .connect(tls.clone())
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(connection);
    Ok(client)
}

async fn backend_pid(client: &Client) -> anyhow::Result<String> {
    let messages = client.simple_query("SELECT pg_backend_pid()").await?;
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .context("reading the backend's process id")
}
