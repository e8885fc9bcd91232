//! Hostile clients cost themselves, not others: forged floods are closed, a poison event
//! fails alone, clients that do not read are dropped, cancelled queries stop in the store,
//! and the node's caps and budgets hold. No answer carries the database's own words.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};

use crate::support::{
    Client, DEADLINE, Relay, TempDir,
    client::{Received, raw_upgrade},
    eventually,
    http::{metric, request},
    keys, note, now,
    relay::Storage,
    table_lock::TableLock,
};

/// A forged event: its id is right, its signature belongs to another event.
fn forged(n: u64) -> starling::nostr::Event {
    let mut event = keys(7).sign(now(), 1, vec![], &format!("forged {n}"));
    event.sig[0] ^= 0x55;
    event
}

#[tokio::test]
async fn a_flood_of_forged_signatures_gets_its_connection_closed() {
    let relay = Relay::start(&["--max-strikes-per-connection", "5"]);
    let mut forger = Client::connect(&relay.url()).await;
    let mut honest = Client::connect(&relay.url()).await;
    for n in 0..50 {
        let event = serde_json::from_str::<serde_json::Value>(&forged(n).to_json()).unwrap();
        if !forger.try_send(json!(["EVENT", event])).await {
            break;
        }
    }
    let close = loop {
        match forger.next().await {
            Received::Json(msg) => assert!(
                msg[0] == "OK"
                    && msg[2] == false
                    && msg[3].as_str().unwrap().starts_with("invalid:"),
                "{msg}"
            ),
            Received::Close(close) => break close,
            Received::Ended => panic!("the connection ended without a close frame"),
        }
    };
    let close = close.expect("a close frame with a reason");
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason.as_str(), "too many invalid messages");
    honest.publish_ok(&note(1, "still welcome")).await;
    let forged_strikes = metric(
        &relay.addr,
        "starling_strikes_total",
        &[("reason", "forged")],
    )
    .await;
    assert!(
        forged_strikes >= 6.0,
        "{forged_strikes} forged strikes counted"
    );
    let addr = relay.addr.clone();
    eventually("the abusive connection to be counted as closed", || {
        let addr = addr.clone();
        async move {
            let closed = metric(
                &addr,
                "starling_connections_closed_total",
                &[("reason", "abuse")],
            )
            .await;
            (closed == 1.0).then_some(())
        }
    })
    .await;
}

/// Reads what the relay sends `client`, each message checked by `expected`, until the
/// connection closes; returns the close frame.
async fn close_after(
    client: &mut Client,
    expected: impl Fn(&serde_json::Value) -> bool,
) -> tokio_tungstenite::tungstenite::protocol::CloseFrame {
    loop {
        match client.next().await {
            Received::Json(msg) => assert!(expected(&msg), "{msg}"),
            Received::Close(close) => return close.expect("a close frame with a reason"),
            Received::Ended => panic!("the connection ended without a close frame"),
        }
    }
}

#[tokio::test]
async fn a_client_that_keeps_asking_for_what_the_rules_refuse_is_closed() {
    let relay = Relay::start(&[
        "--members-only",
        "both",
        "--max-strikes-per-connection",
        "5",
    ]);
    let mut client = Client::connect(&relay.url()).await;
    for n in 0..20 {
        if !client
            .try_send(json!(["REQ", format!("r{n}"), {"kinds": [1]}]))
            .await
        {
            break;
        }
    }
    let close = close_after(&mut client, |msg| {
        msg[0] == "CLOSED" && msg[2].as_str().unwrap().starts_with("auth-required:")
    })
    .await;
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason.as_str(), "too many invalid messages");
    let refused = metric(
        &relay.addr,
        "starling_strikes_total",
        &[("reason", "refused")],
    )
    .await;
    assert!(refused >= 6.0, "{refused} refused strikes counted");
}

#[tokio::test]
async fn a_client_that_keeps_publishing_what_the_rules_refuse_is_closed() {
    let banned = starling::nostr::hex::encode(&keys(5).pubkey());
    let relay = Relay::start(&[
        "--banned-pubkeys",
        &banned,
        "--max-strikes-per-connection",
        "5",
    ]);
    let mut client = Client::connect(&relay.url()).await;
    for n in 0..20 {
        let event = keys(5).sign(now(), 1, vec![], &format!("banned {n}"));
        let event: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
        if !client.try_send(json!(["EVENT", event])).await {
            break;
        }
    }
    let close = close_after(&mut client, |msg| {
        msg[0] == "OK" && msg[2] == false && msg[3].as_str().unwrap().starts_with("blocked:")
    })
    .await;
    assert_eq!(close.code, CloseCode::Policy);
    let mut honest = Client::connect(&relay.url()).await;
    honest.publish_ok(&note(1, "still welcome")).await;
}

#[tokio::test]
async fn authenticating_when_asked_costs_one_strike_and_keeps_the_connection() {
    // The default thresholds: NIP-42's first `auth-required:` is a strike, far from them.
    let relay = Relay::start(&["--members-only", "read"]);
    let mut client = Client::connect(&relay.url()).await;
    client.send_req("feed", &[json!({"kinds": [1]})]).await;
    client.expect_closed("feed", "auth-required:").await;
    let challenge = client.challenge().await;
    let tags = vec![
        vec!["relay".to_string(), relay.url()],
        vec!["challenge".to_string(), challenge],
    ];
    let auth = keys(1).sign(now(), 22242, tags, "");
    let auth_json: serde_json::Value = serde_json::from_str(&auth.to_json()).unwrap();
    client.send(json!(["AUTH", auth_json])).await;
    assert!(client.ok_for(&auth.id_hex()).await.0, "authenticated");
    assert!(
        client
            .req("feed", &[json!({"kinds": [1]})])
            .await
            .is_empty()
    );
    let refused = metric(
        &relay.addr,
        "starling_strikes_total",
        &[("reason", "refused")],
    )
    .await;
    assert_eq!(refused, 1.0, "the first auth-required answer is one strike");
    let closed = metric(
        &relay.addr,
        "starling_connections_closed_total",
        &[("reason", "abuse")],
    )
    .await;
    assert_eq!(closed, 0.0);
}

#[tokio::test]
async fn a_flooding_client_closed_for_its_strikes_is_read_no_more() {
    let relay = Relay::start(&["--max-strikes-per-connection", "5"]);
    let mut socket = raw_upgrade(&relay.addr).await;
    // Masked text frames of 60,000 bytes that are not JSON (each one a strike), written
    // without reading until the socket breaks. A relay that kept reading (and discarding)
    // after closing the connection would take hundreds of megabytes a second.
    let payload = vec![b'x' ^ 1; 60_000];
    let mut frame = vec![
        0x81,
        0x80 | 126,
        (60_000u16 >> 8) as u8,
        60_000u16 as u8,
        1,
        1,
        1,
        1,
    ];
    frame.extend_from_slice(&payload);
    const CEILING: usize = 256 << 20;
    let mut sent = 0;
    while sent < CEILING && socket.write_all(&frame).await.is_ok() {
        sent += frame.len();
    }
    assert!(
        sent < CEILING,
        "the relay read {sent} bytes from a client it had closed"
    );
    // The close frame was sent before the socket was shut, and can still be read.
    let mut received = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(Ok(n)) = tokio::time::timeout(DEADLINE, socket.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
    }
    let reason = b"too many invalid messages";
    assert!(
        received.windows(reason.len()).any(|w| w == reason),
        "no close frame with its reason among {} bytes",
        received.len()
    );
}

#[tokio::test]
async fn an_address_past_its_strikes_is_slowed_and_counted() {
    let relay = Relay::start(&[
        "--max-strikes-per-ip",
        "3",
        "--max-strikes-per-connection",
        "0",
    ]);
    let mut client = Client::connect(&relay.url()).await;
    for _ in 0..4 {
        client.send_text("not json").await;
        assert_eq!(client.recv().await[0], "NOTICE");
    }
    let penalized = metric(&relay.addr, "starling_addresses_penalized_total", &[]).await;
    assert_eq!(penalized, 1.0, "the address passed 3 strikes once");
    // A slowed client is still served, one message at a time.
    assert!(client.req("after", &[json!({"limit": 1})]).await.is_empty());
}

/// Prepares `storage` so that its store refuses every event whose JSON holds "poison", as
/// a store refuses what it cannot hold: a check constraint on PostgreSQL, a trigger on
/// SQLite.
fn refuse_poison(storage: &Storage) {
    match &storage.database {
        Some(database) => database.execute(
            "ALTER TABLE events ADD CONSTRAINT no_poison CHECK (position('poison' IN json) = 0)",
        ),
        None => {
            let dir = storage.dir.path().join("store");
            drop(starling::store::SqliteStore::open(&dir).expect("create the embedded store"));
            let conn = rusqlite::Connection::open(dir.join("starling.sqlite3")).unwrap();
            conn.execute_batch(
                "CREATE TRIGGER no_poison BEFORE INSERT ON events
                 WHEN instr(NEW.json, 'poison') > 0
                 BEGIN SELECT RAISE(ABORT, 'poison refused by the store'); END;",
            )
            .unwrap();
        }
    }
}

/// The next `count` `OK` answers of `client`, in whatever order they come.
async fn answers(client: &mut Client, count: usize) -> Vec<(bool, String)> {
    let mut answers = Vec::with_capacity(count);
    while answers.len() < count {
        let msg = client.recv().await;
        if msg[0] == "OK" {
            answers.push((
                msg[2] == true,
                msg[3].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    answers
}

on_every_store! {
    async fn a_poison_event_fails_alone_and_its_answer_holds_no_database_text() {
        let storage = Storage::new(TempDir::new("poison"));
        refuse_poison(&storage);
        // At the default log level, without OTLP: the log must still tie each failure to
        // its connection.
        let relay = Relay::start_on(storage, &[], &[("RUST_LOG", "info")]);
        let mut poisoner = Client::connect(&relay.url()).await;
        let mut honest = Client::connect(&relay.url()).await;
        const EACH: usize = 100;
        let poison: Vec<_> = (0..EACH).map(|n| keys(3).sign(now(), 1, vec![], &format!("poison {n}"))).collect();
        let good: Vec<_> = (0..EACH).map(|n| keys(4).sign(now(), 1, vec![], &format!("good {n}"))).collect();
        // Both connections publish at once, so that their events share write batches.
        for (bad, fine) in poison.iter().zip(&good) {
            poisoner.send(json!(["EVENT", serde_json::from_str::<serde_json::Value>(&bad.to_json()).unwrap()])).await;
            honest.send(json!(["EVENT", serde_json::from_str::<serde_json::Value>(&fine.to_json()).unwrap()])).await;
        }
        for (accepted, message) in answers(&mut honest, EACH).await {
            assert!(accepted, "a good event was refused: {message}");
        }
        for (accepted, message) in answers(&mut poisoner, EACH).await {
            assert!(!accepted);
            assert_eq!(message, "error: could not store the event");
        }
        let ids: Vec<String> = good.iter().map(|e| e.id_hex()).collect();
        assert_eq!(honest.req("good", &[json!({"ids": ids})]).await.len(), EACH);
        let split = metric(&relay.addr, "starling_store_batches_split_total", &[]).await;
        assert!(split >= 1.0, "no batch mixed the two connections' events");
        // The database's own words went to the log, each failure with the event's id and
        // the id of its connection, which the connection's other lines carry too.
        drop(poisoner);
        let (connection, text) = first_closed_connection(&relay).await;
        let connection = connection.as_str();
        let failures: Vec<&str> = text.lines().filter(|l| l.contains("could not store an event")).collect();
        assert_eq!(failures.len(), EACH, "{text}");
        let database_text = if relay.storage.database.is_some() { "no_poison" } else { "poison refused by the store" };
        for line in &failures {
            assert!(line.contains(database_text), "{line}");
            assert_eq!(trace_id_of(line), Some(connection), "{line}");
        }
        for event in &poison {
            assert!(failures.iter().any(|l| l.contains(&event.id_hex())), "no line names {}", event.id_hex());
        }
    }
}

/// Waits for the relay to log a connection as closed; that connection's trace id, and the
/// whole log.
async fn first_closed_connection(relay: &Relay) -> (String, String) {
    let log = relay.storage.dir.path().join("relay.log");
    let closed = eventually("a connection to be logged as closed", || {
        let log = log.clone();
        async move {
            let text = std::fs::read_to_string(log).ok()?;
            text.lines()
                .find(|l| l.contains("connection closed"))
                .map(str::to_string)
        }
    })
    .await;
    let id = trace_id_of(&closed).expect("a trace id on the connection's line");
    (id.to_string(), std::fs::read_to_string(&log).unwrap())
}

on_every_store! {
    async fn a_failed_query_is_logged_with_its_connection_and_answered_without_database_text() {
        let storage = Storage::new(TempDir::new("broken-query"));
        // A tag query fails in the database: SQLite's tag table raises an error when read,
        // PostgreSQL's is gone.
        let database_text = match &storage.database {
            Some(database) => {
                database.execute("ALTER TABLE event_tags RENAME TO event_tags_gone");
                "event_tags"
            }
            None => {
                let dir = storage.dir.path().join("store");
                drop(starling::store::SqliteStore::open(&dir).expect("create the embedded store"));
                let conn = rusqlite::Connection::open(dir.join("starling.sqlite3")).unwrap();
                conn.execute_batch(
                    "DROP TABLE tags;
                     CREATE VIEW tags AS SELECT 0 AS event_seq, 't' AS name, 'x' AS value,
                         abs(-9223372036854775807 - 1) AS created_at, X'00' AS event_id,
                         1 AS kind;",
                )
                .unwrap();
                "integer overflow"
            }
        };
        // Logging warnings only, without OTLP.
        let relay = Relay::start_on(storage, &[], &[("RUST_LOG", "warn")]);
        for _ in 0..2 {
            let mut client = Client::connect(&relay.url()).await;
            client.send_req("broken", &[json!({"#t": ["x"]})]).await;
            let answer = client.recv().await;
            assert_eq!(answer, json!(["CLOSED", "broken", "error: could not read stored events"]));
        }
        let log = relay.storage.dir.path().join("relay.log");
        let text = std::fs::read_to_string(log).unwrap();
        let failures: Vec<&str> = text.lines().filter(|l| l.contains("could not read stored events")).collect();
        assert_eq!(failures.len(), 2, "{text}");
        for failure in &failures {
            assert!(failure.contains(database_text), "{failure}");
            assert!(failure.contains("connection{peer="), "{failure}");
        }
        let ids: Vec<_> = failures.iter().map(|l| trace_id_of(l).unwrap_or_else(|| panic!("no trace id: {l}"))).collect();
        assert_ne!(ids[0], ids[1], "each connection has an id of its own");
    }
}

/// The trace id a log line carries (`trace_id=` and 32 hex digits).
fn trace_id_of(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("trace_id=")?;
    let id = rest.get(..32)?;
    id.bytes().all(|b| b.is_ascii_hexdigit()).then_some(id)
}

#[tokio::test]
async fn a_client_that_pings_but_never_reads_is_dropped() {
    let relay = Relay::start(&[
        "--ping-interval-seconds",
        "1",
        "--idle-timeout-seconds",
        "2",
    ]);
    let mut socket = raw_upgrade(&relay.addr).await;
    // Masked pings with a 4-byte payload, written without ever reading, until the relay
    // gives up on this client and the socket breaks.
    let ping = [
        0x89,
        0x84,
        1,
        2,
        3,
        4,
        b'p' ^ 1,
        b'i' ^ 2,
        b'n' ^ 3,
        b'g' ^ 4,
    ];
    let pinging = async {
        loop {
            if socket.write_all(&ping).await.is_err() {
                return;
            }
            let dropped = metric(
                &relay.addr,
                "starling_connections_closed_total",
                &[("reason", "idle timeout")],
            )
            .await;
            if dropped >= 1.0 {
                return;
            }
        }
    };
    tokio::time::timeout(DEADLINE, pinging)
        .await
        .expect("the relay kept a client that never read");
    // What the relay sent ends: the connection is closed.
    let mut buf = vec![0u8; 1 << 16];
    let read_to_end = async { while socket.read(&mut buf).await.is_ok_and(|n| n > 0) {} };
    tokio::time::timeout(DEADLINE, read_to_end)
        .await
        .expect("the connection stayed open");
    let pings = metric(
        &relay.addr,
        "starling_strikes_total",
        &[("reason", "pings")],
    )
    .await;
    assert!(pings >= 1.0, "a ping flood should count as strikes");
}

#[tokio::test]
async fn pings_past_the_configured_burst_and_rate_are_strikes() {
    let relay = Relay::start(&[
        "--max-ping-burst",
        "2",
        "--max-pings-per-minute-per-connection",
        "1",
    ]);
    let mut client = Client::connect(&relay.url()).await;
    for n in 0..5u8 {
        client.send_raw(Message::Ping(vec![n].into())).await;
    }
    // Messages are handled in order: once this is answered, every ping was counted.
    assert!(
        client
            .req("witness", &[json!({"limit": 1})])
            .await
            .is_empty()
    );
    let pings = metric(
        &relay.addr,
        "starling_strikes_total",
        &[("reason", "pings")],
    )
    .await;
    assert_eq!(pings, 3.0, "two pings of five within the burst");
}

#[tokio::test]
async fn a_closed_subscription_stops_its_statement_on_postgres() {
    let storage = crate::support::relay::Storage {
        dir: TempDir::new("cancel"),
        database: Some(crate::support::postgres::database()),
    };
    let url = storage.database.as_ref().unwrap().url.clone();
    let relay = Relay::start_on(storage, &[], &[]);
    let lock = TableLock::hold(&url, "events").await;
    let waiting = || lock.waiting("created_at");
    let mut client = Client::connect(&relay.url()).await;
    client.send_req("blocked", &[json!({"kinds": [1]})]).await;
    eventually("the relay's statement to wait for the lock", || async {
        (waiting().await == 1).then_some(())
    })
    .await;
    client.send(json!(["CLOSE", "blocked"])).await;
    // The lock is still held: only a cancel can end the statement.
    eventually("the relay to cancel its statement", || async {
        (waiting().await == 0).then_some(())
    })
    .await;
    let running = metric(
        &relay.addr,
        "starling_store_queries",
        &[("state", "running")],
    )
    .await;
    assert_eq!(
        running, 0.0,
        "the cancelled statement's place was not given back"
    );
    lock.release().await;
    let event = note(1, "after the lock");
    client.publish_ok(&event).await;
    assert_eq!(
        client
            .req("free", &[json!({"ids": [event.id_hex()]})])
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn a_slow_read_on_the_embedded_store_stops_at_the_time_limit() {
    let storage = Storage::new(TempDir::new("sqlite-timeout"));
    let dir = storage.dir.path().join("store");
    drop(starling::store::SqliteStore::open(&dir).expect("create the embedded store"));
    let conn = rusqlite::Connection::open(dir.join("starling.sqlite3")).unwrap();
    conn.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)
         INSERT INTO events (id, pubkey, created_at, kind, json)
         SELECT randomblob(32), zeroblob(32), i, 1, '{}' FROM n;",
    )
    .unwrap();
    drop(conn);
    let relay = Relay::start_on(storage, &["--database-statement-timeout-ms", "1"], &[]);
    let mut client = Client::connect(&relay.url()).await;
    client.send(json!(["COUNT", "all", {"kinds": [1]}])).await;
    let answer = client.recv().await;
    assert_eq!(answer[0], "CLOSED", "{answer}");
    assert!(
        answer[2]
            .as_str()
            .unwrap()
            .starts_with("error: the query took too long"),
        "{answer}"
    );
    let light = client
        .req("light", &[json!({"ids": ["00".repeat(32)]})])
        .await;
    assert!(light.is_empty());
}

#[tokio::test]
async fn the_node_caps_its_connections_and_subscriptions() {
    let relay = Relay::start(&["--max-connections", "2", "--max-node-subscriptions", "2"]);
    let mut first = Client::connect(&relay.url()).await;
    let mut second = Client::connect(&relay.url()).await;
    let upgrade = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    let refused = request(&relay.addr, "GET", "/", &upgrade).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.body.starts_with("rate-limited:"),
        "{}",
        refused.body
    );
    first.req("a", &[json!({"kinds": [1]})]).await;
    second.req("b", &[json!({"kinds": [1]})]).await;
    second.send_req("c", &[json!({"kinds": [1]})]).await;
    second.expect_closed("c", "rate-limited:").await;
    first.send(json!(["CLOSE", "a"])).await;
    // The closed subscription gives its place back as it stops.
    let started = std::time::Instant::now();
    loop {
        second.send_req("d", &[json!({"kinds": [1]})]).await;
        let answer = second.recv().await;
        if answer[0] == "EOSE" {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "no place was freed: {answer}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_address_opening_connections_too_fast_is_refused_while_others_connect() {
    let relay = Relay::start(&[
        "--max-connections-per-minute-per-ip",
        "60",
        "--max-connections-burst-per-ip",
        "3",
    ]);
    let url = relay.url();
    // Three at once (closed at once: the limit is on opening, not on holding), then 429.
    for _ in 0..3 {
        drop(
            Client::connect_from(&url, &relay.addr, "127.0.0.1", &[])
                .await
                .expect("within the burst"),
        );
    }
    match Client::connect_from(&url, &relay.addr, "127.0.0.1", &[]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body =
                String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).to_string();
            assert!(body.starts_with("rate-limited:"), "{body}");
        }
        other => panic!(
            "a fourth connection at once was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    Client::connect_from(&url, &relay.addr, "127.0.0.2", &[])
        .await
        .expect("another address connects");
    let counted = metric(
        &relay.addr,
        "starling_rate_limited_total",
        &[("limit", "connection-rate")],
    )
    .await;
    assert_eq!(counted, 1.0);
}

#[tokio::test]
async fn filters_held_per_connection_are_bounded() {
    // Ten authors hold 416 bytes, forty 1,376.
    let relay = Relay::start(&["--max-filter-bytes-per-connection", "1500"]);
    let mut client = Client::connect(&relay.url()).await;
    let authors: Vec<String> = (1..=40u8)
        .map(|n| starling::nostr::hex::encode(&keys(n).pubkey()))
        .collect();
    client
        .req("small", &[json!({"authors": &authors[..10]})])
        .await;
    client
        .send_req("large", &[json!({"authors": authors})])
        .await;
    client.expect_closed("large", "rate-limited:").await;
    // Replacing a subscription frees what it held.
    client
        .req("small", &[json!({"authors": &authors[..20]})])
        .await;
}

#[tokio::test]
async fn a_connection_past_its_store_time_is_refused_while_others_are_served() {
    let relay = Relay::start(&["--query-ms-per-minute-per-connection", "1"]);
    let mut spender = Client::connect(&relay.url()).await;
    let refused = async {
        for n in 0..200 {
            let sub = format!("s{n}");
            spender
                .send_req(&sub, &[json!({"kinds": [1], "limit": 10})])
                .await;
            let answer = spender.recv().await;
            if answer[0] == "CLOSED" {
                return Some(answer);
            }
            spender.send(json!(["CLOSE", sub])).await;
        }
        None
    };
    let answer = refused.await.expect("the budget was never spent");
    assert!(
        answer[2].as_str().unwrap().starts_with("rate-limited:"),
        "{answer}"
    );
    let mut other = Client::connect(&relay.url()).await;
    assert!(
        other
            .req("fresh", &[json!({"kinds": [1]})])
            .await
            .is_empty()
    );
    let counted = metric(
        &relay.addr,
        "starling_rate_limited_total",
        &[("limit", "store-time")],
    )
    .await;
    assert_eq!(counted, 1.0);
}

#[tokio::test]
async fn a_connection_spending_its_store_time_fast_reads_in_short_slices() {
    // 1.2 s a minute: a connection that spent more than 20 ms, or spends more than 10 ms
    // a second, is heavy.
    let relay = Relay::start(&["--query-ms-per-minute-per-connection", "1200"]);
    let mut publisher = Client::connect(&relay.url()).await;
    for n in 0..600u32 {
        publisher
            .publish_ok(&note((n % 20) as u8 + 1, &format!("note {n}")))
            .await;
    }
    let pages = || {
        metric(
            &relay.addr,
            "starling_store_operation_duration_seconds_count",
            &[("operation", "query"), ("outcome", "ok")],
        )
    };
    let mut reader = Client::connect(&relay.url()).await;
    let filter = json!({"kinds": [1], "limit": 200});
    let before = pages().await;
    assert_eq!(
        reader
            .req("light", std::slice::from_ref(&filter))
            .await
            .len(),
        200
    );
    assert_eq!(
        pages().await - before,
        1.0,
        "a light reader's 200 events are one page"
    );
    // Reading everything again and again, the reader becomes heavy: its pages become
    // slices, and 200 events take several.
    let mut sliced = false;
    for n in 0..20 {
        assert_eq!(
            reader
                .req(&format!("all{n}"), &[json!({"kinds": [1], "limit": 600})])
                .await
                .len(),
            600
        );
        let before = pages().await;
        assert_eq!(
            reader
                .req(&format!("some{n}"), std::slice::from_ref(&filter))
                .await
                .len(),
            200
        );
        if pages().await - before > 1.0 {
            sliced = true;
            break;
        }
    }
    assert!(sliced, "a heavy reader's pages were never sliced");
}
