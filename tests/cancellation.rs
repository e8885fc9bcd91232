//! Cancelled work stops in the store: a `CLOSE`, a `REQ` that replaces a subscription and a
//! connection that ends each stop the query in progress (SQLite: interrupted by its progress
//! handler; PostgreSQL: the statement cancelled on the server), and its places are given back
//! once it has stopped.

use serde_json::json;

use crate::support::{
    Client, Relay, TempDir, eventually, http::metric, relay::Storage, table_lock::TableLock,
};

/// A filter whose query the [`Stalled`] store never finishes by itself.
fn stalling_filter() -> serde_json::Value {
    json!({"#t": ["never"]})
}

/// A relay on a store that never finishes a query of [`stalling_filter`] until it is
/// cancelled, and serves every other query as usual: on SQLite the tag table is a view over
/// an endless sequence (only the progress handler can stop a statement reading it); on
/// PostgreSQL a transaction holds the tag table locked (only a cancel ends a statement
/// waiting for it). No statement time limit comes to the rescue (an hour).
struct Stalled {
    relay: Relay,
    /// PostgreSQL: the tag table held locked, and a session watching the relay's statements.
    lock: Option<TableLock>,
}

impl Stalled {
    /// Starts a relay with `args` on the running test's backend, its tag lookups stalled.
    async fn start(args: &[&str]) -> Self {
        let storage = Storage::new(TempDir::new("stalled"));
        let lock = match &storage.database {
            None => {
                endless_tags(&storage);
                None
            }
            Some(database) => Some(TableLock::hold(&database.url, "event_tags").await),
        };
        let mut all = vec!["--database-statement-timeout-ms", "3600000"];
        all.extend_from_slice(args);
        let relay = Relay::start_on(storage, &all, &[]);
        Self { relay, lock }
    }

    /// Store queries the relay has running, by its own count.
    async fn running(&self) -> f64 {
        metric(
            &self.relay.addr,
            "starling_store_queries",
            &[("state", "running")],
        )
        .await
    }

    /// Page queries the store ended as cancelled.
    async fn cancelled(&self) -> f64 {
        metric(
            &self.relay.addr,
            "starling_store_operation_duration_seconds_count",
            &[("operation", "query"), ("outcome", "cancelled")],
        )
        .await
    }

    /// Waits until the stalled query runs in the store.
    async fn wait_running(&self) {
        eventually("the stalled query to run", || async {
            let running = match &self.lock {
                None => self.running().await == 1.0,
                Some(lock) => lock.waiting("event_tags").await == 1,
            };
            running.then_some(())
        })
        .await;
    }

    /// Waits until the stalled query has stopped in the store, ended as cancelled, and
    /// given its place back.
    async fn wait_stopped(&self) {
        eventually("the stalled query to stop", || async {
            if let Some(lock) = &self.lock
                && lock.waiting("event_tags").await != 0
            {
                return None;
            }
            (self.cancelled().await >= 1.0 && self.running().await == 0.0).then_some(())
        })
        .await;
    }
}

/// Replaces the embedded store's tag table with a view that never ends: a query naming a
/// tag reads an endless sequence whose rows match no filter.
fn endless_tags(storage: &Storage) {
    let dir = storage.dir.path().join("store");
    drop(starling::store::SqliteStore::open(&dir).expect("create the embedded store"));
    let conn =
        rusqlite::Connection::open(dir.join("starling.sqlite3")).expect("open the embedded store");
    conn.execute_batch(
        "DROP TABLE tags;
         CREATE VIEW tags AS
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)
             SELECT i AS event_seq, 't' AS name, CAST(i AS TEXT) AS value, i AS created_at,
                    X'00' AS event_id, 1 AS kind
             FROM n;",
    )
    .expect("make the tag table endless");
}

#[tokio::test]
async fn a_closed_subscription_interrupts_its_query_on_the_embedded_store() {
    let stalled = Stalled::start(&["--max-queries-per-connection", "1"]).await;
    let mut client = Client::connect(&stalled.relay.url()).await;
    client.send_req("stalled", &[stalling_filter()]).await;
    stalled.wait_running().await;
    client.send(json!(["CLOSE", "stalled"])).await;
    stalled.wait_stopped().await;
    // The connection's one query place is free again.
    assert!(
        client
            .req("next", &[json!({"kinds": [1]})])
            .await
            .is_empty()
    );
}

on_every_store! {
    async fn a_replacing_req_stops_the_query_it_replaces() {
        let stalled = Stalled::start(&["--max-queries-per-connection", "1"]).await;
        let mut client = Client::connect(&stalled.relay.url()).await;
        client.send_req("sub", &[stalling_filter()]).await;
        stalled.wait_running().await;
        // The new query runs only once the old one has given the connection's one place
        // back, which it does only once it has stopped in the store.
        client.send_req("sub", &[json!({"kinds": [1]})]).await;
        assert!(client.stored("sub").await.is_empty());
        stalled.wait_stopped().await;
    }

    async fn a_connection_that_ends_stops_its_query() {
        let stalled = Stalled::start(&[]).await;
        let mut client = Client::connect(&stalled.relay.url()).await;
        client.send_req("stalled", &[stalling_filter()]).await;
        stalled.wait_running().await;
        drop(client);
        stalled.wait_stopped().await;
        let mut other = Client::connect(&stalled.relay.url()).await;
        assert!(other.req("after", &[json!({"kinds": [1]})]).await.is_empty());
    }
}
