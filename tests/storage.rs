//! Operating the stores: migrations, export and import, a database outage, slow queries.

use std::{path::Path, process::Command};

use serde_json::json;

use crate::support::{
    Client, Relay, TempDir, eventually,
    http::request,
    keys, note, now,
    postgres::{PgServer, TestDatabase, shared},
    repository_file, tags,
};

fn starling(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_starling"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("STARLING_CONFIG")
        .env("RUST_LOG", "warn");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run starling")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn migrate_applies_each_migration_once() {
    let database = shared().create_empty_database();
    let env = [("DATABASE_URL", database.url.as_str())];
    let first = starling(&["migrate"], &env);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).contains(
            "applied 5 migration(s): 0001_events.sql, 0002_probe_indexes.sql, 0003_vanish.sql, 0004_policy.sql, 0005_tag_order.sql"
        ),
        "{}",
        text(&first.stdout)
    );
    let again = starling(&["migrate"], &env);
    assert!(again.status.success());
    assert!(
        text(&again.stdout).contains("applied 0 migration(s)"),
        "{}",
        text(&again.stdout)
    );
    let without_url = starling(&["migrate"], &[]);
    assert!(!without_url.status.success());
    assert!(text(&without_url.stderr).contains("DATABASE_URL"));
}

#[test]
fn a_database_of_the_first_schema_upgrades_with_its_events() {
    let database = shared().create_empty_database();
    let first = std::fs::read_to_string(repository_file("migrations/0001_events.sql"))
        .expect("first migration");
    database.execute(&first);
    database.execute(
        "CREATE TABLE starling_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
         INSERT INTO starling_migrations (version, name) VALUES (1, '0001_events.sql');
         INSERT INTO events (id, pubkey, created_at, kind, json) VALUES ('\\x01', '\\x02', 5, 7, '{}');
         INSERT INTO event_tags (event_seq, name, value, created_at)
         SELECT seq, 't', 'x', 5 FROM events;",
    );
    let upgrade = starling(&["migrate"], &[("DATABASE_URL", database.url.as_str())]);
    assert!(upgrade.status.success(), "{}", text(&upgrade.stderr));
    assert!(
        text(&upgrade.stdout).contains(
            "applied 4 migration(s): 0002_probe_indexes.sql, 0003_vanish.sql, 0004_policy.sql, 0005_tag_order.sql"
        ),
        "{}",
        text(&upgrade.stdout)
    );
    let tagged = database.query_count(
        "SELECT count(*) FROM event_tags t JOIN events e ON e.seq = t.event_seq
         WHERE e.id = $1 AND t.kind = 7 AND t.event_id = e.id",
        vec![1],
    );
    assert_eq!(tagged, 1, "the tag row carries its event's kind and id");
}

#[tokio::test]
async fn nodes_starting_together_on_an_empty_database_all_come_up() {
    let database = shared().create_empty_database();
    let url = database.url.clone();
    let starting: Vec<_> = (0..3)
        .map(|n| {
            let url = url.clone();
            std::thread::spawn(move || {
                Relay::start_in(
                    TempDir::new(&format!("node{n}")),
                    &[],
                    &[("DATABASE_URL", &url)],
                )
            })
        })
        .collect();
    let nodes: Vec<Relay> = starting
        .into_iter()
        .map(|t| t.join().expect("node started"))
        .collect();
    let event = note(1, "shared by every node");
    Client::connect(&nodes[0].url())
        .await
        .publish_ok(&event)
        .await;
    for node in &nodes {
        let found = Client::connect(&node.url())
            .await
            .req("q", &[json!({"ids": [event.id_hex()]})])
            .await;
        assert_eq!(found.len(), 1);
    }
    drop(database);
}

/// Publishes a mix of kinds to a relay and returns how many events it then stores.
async fn publish_mix(relay: &Relay) -> usize {
    let mut client = Client::connect(&relay.url()).await;
    let t = now() - 100;
    let doomed = note(2, "deleted later");
    let events = vec![
        note(1, "hello"),
        keys(1).sign(t, 0, vec![], "old profile"),
        keys(1).sign(t + 1, 0, vec![], "new profile"),
        keys(1).sign(
            t,
            30_023,
            tags(&[&["d", "post"], &["t", "rust"]]),
            "article with \"quotes\" and 🚀",
        ),
        keys(3).sign(t, 7, tags(&[&["e", &"ab".repeat(32)]]), "+"),
        doomed.clone(),
        keys(2).sign(t + 2, 5, tags(&[&["e", &doomed.id_hex()]]), ""),
    ];
    for event in &events {
        client.publish_ok(event).await;
    }
    client.req("all", &[json!({})]).await.len()
}

fn export(store_args: &[&str], env: &[(&str, &str)], file: &Path) -> String {
    let mut args = vec!["export", "--output", file.to_str().unwrap()];
    args.extend_from_slice(store_args);
    let out = starling(&args, env);
    assert!(out.status.success(), "export failed: {}", text(&out.stderr));
    std::fs::read_to_string(file).expect("exported file")
}

fn import(store_args: &[&str], env: &[(&str, &str)], file: &Path) -> String {
    let mut args = vec!["import", file.to_str().unwrap()];
    args.extend_from_slice(store_args);
    let out = starling(&args, env);
    assert!(out.status.success(), "import failed: {}", text(&out.stderr));
    text(&out.stderr)
}

#[tokio::test]
async fn export_and_import_round_trip_between_stores() {
    let relay = Relay::start(&[]);
    let stored = publish_mix(&relay).await;
    let storage = relay.kill();
    let work = TempDir::new("transfer");
    let sqlite_dir = storage.dir.path().join("store");
    let sqlite = ["--data-dir", sqlite_dir.to_str().unwrap()];

    let from_sqlite = export(&sqlite, &[], &work.path().join("a.jsonl"));
    assert_eq!(from_sqlite.lines().count(), stored);

    let database: TestDatabase = shared().create_empty_database();
    let pg = [("DATABASE_URL", database.url.as_str())];
    let report = import(&[], &pg, &work.path().join("a.jsonl"));
    assert!(
        report.contains(&format!(
            "imported {stored} events; 0 already stored; 0 refused"
        )),
        "{report}"
    );
    let from_postgres = export(&[], &pg, &work.path().join("b.jsonl"));
    assert_eq!(
        from_postgres, from_sqlite,
        "PostgreSQL gives back what SQLite exported"
    );

    let again = import(&[], &pg, &work.path().join("b.jsonl"));
    assert!(
        again.contains(&format!("imported 0 events; {stored} already stored")),
        "{again}"
    );

    let fresh = TempDir::new("fresh-sqlite");
    let fresh_args = ["--data-dir", fresh.path().to_str().unwrap()];
    import(&fresh_args, &[], &work.path().join("b.jsonl"));
    assert_eq!(
        export(&fresh_args, &[], &work.path().join("c.jsonl")),
        from_sqlite
    );
}

#[test]
fn import_reports_every_line_it_refuses() {
    let work = TempDir::new("import-refusals");
    let good = note(1, "fine");
    let mut tampered = note(1, "tampered");
    tampered.content.push('!');
    let expired = keys(1).sign(now() - 10, 1, tags(&[&["expiration", "1000"]]), "old");
    let ephemeral = keys(1).sign(now(), 20_000, vec![], "typing");
    let lines = [
        good.to_json(),
        "not json".into(),
        tampered.to_json(),
        String::new(),
        expired.to_json(),
        ephemeral.to_json(),
    ];
    let file = work.path().join("mixed.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let store = ["--data-dir", work.path().to_str().unwrap()];
    let report = import(&store, &[], &file);
    assert!(
        report.contains("imported 1 events; 0 already stored; 4 refused"),
        "{report}"
    );
    for line in [2, 3, 5, 6] {
        assert!(
            report.contains(&format!("line {line}: invalid:")),
            "line {line} not reported: {report}"
        );
    }
}

#[tokio::test]
async fn a_database_outage_is_answered_with_errors_and_survived() {
    let mut server = PgServer::throwaway();
    server
        .admin("CREATE DATABASE starling")
        .expect("create database");
    let url = server.url("starling");
    let relay = Relay::start_in(
        TempDir::new("outage"),
        &["--database-connect-timeout-seconds", "1"],
        &[("DATABASE_URL", &url)],
    );
    let mut client = Client::connect(&relay.url()).await;
    let before = note(1, "before the outage");
    client.publish_ok(&before).await;

    server.stop();
    let (accepted, message) = client.publish(&note(1, "during the outage")).await;
    assert!(!accepted);
    assert!(message.starts_with("error:"), "{message}");
    client.send_req("during", &[json!({})]).await;
    client.expect_closed("during", "error:").await;
    assert_eq!(
        request(&relay.addr, "GET", "/healthz", &[]).await.status,
        200
    );

    server.start();
    let after = note(1, "after the outage");
    let url = relay.url();
    eventually("the relay to store events again", || {
        let (url, after) = (url.clone(), after.clone());
        async move {
            Client::connect(&url)
                .await
                .publish(&after)
                .await
                .0
                .then_some(())
        }
    })
    .await;
    let found = client.req("after", &[json!({"kinds": [1]})]).await;
    let mut stored = Client::ids(&found);
    stored.sort();
    let mut expected = vec![after.id_hex(), before.id_hex()];
    expected.sort();
    assert_eq!(
        stored, expected,
        "only the events answered OK true are stored"
    );
}

#[tokio::test]
async fn a_slow_query_times_out_without_holding_up_others() {
    let database = shared().create_database();
    // A million rows, and no index a count over all of them could use.
    database.execute(
        "DROP INDEX events_by_time, events_by_author, events_by_kind;
         INSERT INTO events (id, pubkey, created_at, kind, json)
         SELECT decode(lpad(to_hex(i), 64, '0'), 'hex'), '\\x00', i, 1, '{}'
         FROM generate_series(1, 1000000) AS i",
    );
    let relay = Relay::start_in(
        TempDir::new("slow-query"),
        &["--skip-migrations", "--database-statement-timeout-ms", "50"],
        &[("DATABASE_URL", &database.url)],
    );
    let mut heavy = Client::connect(&relay.url()).await;
    let mut light = Client::connect(&relay.url()).await;
    heavy
        .send(json!(["COUNT", "heavy", {"kinds": [1], "since": 0}]))
        .await;
    heavy.send(json!(["REQ", "heavy2", {"since": 0, "until": 1}, {"kinds": [1], "since": 0, "limit": 5000}])).await;
    assert!(
        light
            .req("light", &[json!({"ids": ["00".repeat(32)]})])
            .await
            .is_empty()
    );
    for _ in 0..2 {
        let answer = heavy.recv().await;
        assert_eq!(answer[0], "CLOSED", "{answer}");
        assert!(
            answer[2]
                .as_str()
                .unwrap()
                .starts_with("error: the query took too long"),
            "{answer}"
        );
    }
}

/// PgBouncer in session mode keeps each session on one backend and works; in transaction
/// mode it would lose the store's session settings and prepared statements, and the relay
/// says so at start-up instead of failing later.
#[tokio::test]
async fn pgbouncer_works_in_session_mode_and_transaction_mode_is_refused() {
    use crate::support::{pgbouncer::PgBouncer, postgres};
    let database = postgres::database();
    let session = PgBouncer::start(&database.url, "session");
    let relay = Relay::start(&["--database-url", &session.url]);
    let mut client = crate::support::Client::connect(&relay.url()).await;
    let event = crate::support::note(1, "through PgBouncer");
    client.publish_ok(&event).await;
    let stored = client
        .req("pgbouncer", &[serde_json::json!({"ids": [event.id_hex()]})])
        .await;
    assert_eq!(stored.len(), 1);

    let migrated = starling(&["migrate"], &[("DATABASE_URL", &session.url)]);
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));
    assert!(
        text(&migrated.stdout).contains("applied 0 migration(s)"),
        "{}",
        text(&migrated.stdout)
    );

    let transaction = PgBouncer::start(&database.url, "transaction");
    for extra in [&[][..], &["--skip-migrations"][..]] {
        let mut args = vec!["--database-url", transaction.url.as_str()];
        args.extend_from_slice(extra);
        let refused = Relay::refused_at_start(&args);
        assert!(refused.contains("pool_mode = session"), "{refused}");
    }
    let migrate = starling(&["migrate"], &[("DATABASE_URL", &transaction.url)]);
    assert!(!migrate.status.success(), "{}", text(&migrate.stdout));
    assert!(
        text(&migrate.stderr).contains("pool_mode = session"),
        "{}",
        text(&migrate.stderr)
    );
}

/// A database that is down when the relay starts (with `--skip-migrations`, as a node
/// whose migrations a pipeline runs) does not stop the start: the relay serves, refuses
/// events with `error:`, and stores them once the database is up.
#[tokio::test]
async fn a_database_down_at_start_up_is_waited_for() {
    let mut server = PgServer::throwaway();
    server
        .admin("CREATE DATABASE starling")
        .expect("create database");
    let url = server.url("starling");
    let migrated = starling(&["migrate"], &[("DATABASE_URL", &url)]);
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));
    server.stop();

    let relay = Relay::start_in(
        TempDir::new("down-at-start"),
        &[
            "--skip-migrations",
            "--database-connect-timeout-seconds",
            "1",
        ],
        &[("DATABASE_URL", &url)],
    );
    let (accepted, message) = Client::connect(&relay.url())
        .await
        .publish(&note(1, "while the database is down"))
        .await;
    assert!(!accepted && message.starts_with("error:"), "{message}");
    let ready = request(&relay.addr, "GET", "/readyz", &[]).await;
    assert!(
        ready.body.contains("\"store\":\"unreachable\""),
        "{}",
        ready.body
    );

    server.start();
    let after = note(1, "once the database is up");
    let relay_url = relay.url();
    eventually("the relay to store events", || {
        let (relay_url, after) = (relay_url.clone(), after.clone());
        async move {
            Client::connect(&relay_url)
                .await
                .publish(&after)
                .await
                .0
                .then_some(())
        }
    })
    .await;
}

#[test]
fn an_import_into_postgresql_leaves_the_planner_statistics_current() {
    let database = shared().create_empty_database();
    let env = [("DATABASE_URL", database.url.as_str())];
    let work = TempDir::new("analyze");
    let file = work.path().join("events.jsonl");
    let lines: String = (0..20u8)
        .map(|n| crate::support::note(n, "analyzed").to_json() + "\n")
        .collect();
    std::fs::write(&file, lines).unwrap();
    let data = work.path().join("data");
    import(&["--data-dir", data.to_str().unwrap()], &env, &file);
    let analyzed = database.query_count(
        "SELECT count(*) FROM pg_stat_user_tables
         WHERE relname IN ('events', 'event_tags') AND last_analyze IS NOT NULL AND $1::bytea IS NOT NULL",
        vec![0],
    );
    assert_eq!(analyzed, 2, "both tables analyzed after the import");
}
