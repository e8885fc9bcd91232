//! A PostgreSQL table held locked by a transaction left open, so that the relay's
//! statements on it wait until they are cancelled: how the tests see a cancel reach the
//! server.

/// The session holding the lock (for as long as this lives), and one that watches the
/// relay's statements.
pub struct TableLock {
    locker: tokio_postgres::Client,
    watcher: tokio_postgres::Client,
}

impl TableLock {
    /// Locks `table` of the database at `url` in a transaction left open.
    pub async fn hold(url: &str, table: &str) -> Self {
        let connect = || async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("connect to the test database");
            tokio::spawn(connection);
            client
        };
        let locker = connect().await;
        locker
            .batch_execute(&format!(
                "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
            ))
            .await
            .expect("lock the table");
        Self {
            locker,
            watcher: connect().await,
        }
    }

    /// The relay's statements waiting for a lock whose text contains `fragment`.
    pub async fn waiting(&self, fragment: &str) -> i64 {
        self.watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'starling' AND wait_event_type = 'Lock'
                   AND datname = current_database() AND query LIKE '%' || $1 || '%'",
                &[&fragment],
            )
            .await
            .expect("read pg_stat_activity")
            .get(0)
    }

    /// Ends the transaction: the relay's statements run again.
    pub async fn release(&self) {
        self.locker
            .batch_execute("COMMIT")
            .await
            .expect("end the locking transaction");
    }
}
