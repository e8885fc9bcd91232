//! Which backend a configuration selects, opened and ready.

use std::{sync::Arc, time::Duration};

use anyhow::Context;

use super::{EventStore, PgSettings, PgStore, SqliteStore};
use crate::config::Config;

/// Opens the store the configuration selects: PostgreSQL when a database URL is set
/// (applying pending migrations unless told not to), the embedded store otherwise.
pub async fn open(config: &Config) -> anyhow::Result<Arc<dyn EventStore>> {
    match PgSettings::from_config(config) {
        Some(settings) => {
            let store = PgStore::new(&settings)?;
            store.probe().await?;
            if !config.skip_migrations {
                let applied = store.migrate().await.context("applying migrations")?;
                tracing::info!(?applied, "PostgreSQL schema is up to date");
            }
            tracing::info!("using the PostgreSQL store");
            Ok(Arc::new(store))
        }
        None => {
            let timeout = Duration::from_millis(config.database_statement_timeout_ms.max(1));
            let store = SqliteStore::open(&config.data_dir)?.with_read_timeout(timeout);
            tracing::info!(data_dir = %config.data_dir.display(), "using the embedded store");
            Ok(Arc::new(store))
        }
    }
}
