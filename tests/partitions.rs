//! The cluster under partial failure, with real network partitions: node B runs in a
//! network namespace of its own, reaching Redis and PostgreSQL over links the test cuts
//! silently (packets vanish, nothing closes) and heals, while node A runs beside them. No
//! acknowledged event may be lost for a live subscriber on either node, none delivered
//! twice, and `/readyz` and the metrics must say what is going on.
//!
//! Network namespaces need root and iproute2; without them these tests print why and skip.

use std::{collections::HashMap, net::SocketAddr};

use serde_json::{Value, json};

use crate::{
    cluster::readyz,
    support::{
        Client, DEADLINE, Relay, TempDir,
        http::metric,
        netns::{Namespace, forward},
        note, now,
        postgres::{TestDatabase, database},
        redis::{RedisServer, unique_cluster},
        relay::Storage,
    },
};

fn hex_pubkey(n: u8) -> String {
    starling::nostr::hex::encode(&crate::support::keys(n).pubkey())
}

/// Links of node B's namespace.
const CLIENTS: usize = 0;
const REDIS: usize = 1;
const POSTGRES: usize = 2;

/// Two nodes: A beside the servers, B in its own namespace.
struct Partitioned {
    namespace: Namespace,
    a: Relay,
    b: Relay,
    _database: TestDatabase,
    _redis: RedisServer,
}

/// The `host:port` of a `postgres://` or `redis://` URL.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").expect("a URL").1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().expect("an authority").to_string()
}

/// Where `url` points, as a socket address.
fn target(url: &str) -> SocketAddr {
    use std::net::ToSocketAddrs;
    authority(url)
        .to_socket_addrs()
        .expect("resolve a server")
        .next()
        .expect("an address")
}

/// Starts the two nodes, or says why this machine cannot run the test.
fn start() -> Option<Partitioned> {
    let namespace = match Namespace::create(3) {
        Ok(namespace) => namespace,
        Err(why) => {
            eprintln!("SKIPPED: partition tests need network namespaces: {why}");
            return None;
        }
    };
    let database = database();
    let redis = RedisServer::throwaway();
    let cluster = unique_cluster();
    let to_redis = forward(namespace.link(REDIS).host_ip, target(redis.url()));
    let to_postgres = forward(namespace.link(POSTGRES).host_ip, target(&database.url));
    let args = |node: &'static str| {
        vec![
            "--cluster".to_string(),
            cluster.clone(),
            "--node-id".into(),
            node.into(),
            "--bus-timeout-seconds".into(),
            "2".into(),
            "--database-connect-timeout-seconds".into(),
            "2".into(),
        ]
    };
    let a_args = args("a");
    let a = Relay::start_in(
        TempDir::new("a"),
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("DATABASE_URL", &database.url), ("REDIS_URL", redis.url())],
    );
    let b_database = database
        .url
        .replacen(&authority(&database.url), &to_postgres.to_string(), 1);
    let b_redis = format!("redis://{to_redis}/");
    let b_args = args("b");
    let b = Relay::start_in_namespace(
        Storage {
            dir: TempDir::new("b"),
            database: None,
        },
        &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("DATABASE_URL", &b_database), ("REDIS_URL", &b_redis)],
        &namespace.name,
        namespace.link(CLIENTS).ns_ip,
    );
    Some(Partitioned {
        namespace,
        a,
        b,
        _database: database,
        _redis: redis,
    })
}

/// Waits until `node`'s `/readyz` has `field` equal to `value`.
async fn until_readyz(node: &Relay, field: &str, value: &str) -> Value {
    let started = std::time::Instant::now();
    loop {
        let status = readyz(node).await;
        if status[field] == value {
            return status;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{} never said {field} = {value}: {status}",
            node.addr
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Waits until `node` is ready and sees both nodes.
async fn until_ready(node: &Relay) {
    let started = std::time::Instant::now();
    loop {
        let status = readyz(node).await;
        if status["status"] == "ready" && status["nodes"] == 2 {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{} is not ready: {status}",
            node.addr
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Publishing clients of both nodes and a live subscriber of B's (subscribers only read:
/// a client waiting for an OK skips what else comes).
struct Clients {
    to_a: Client,
    to_b: Client,
    on_b: Client,
}

impl Clients {
    /// Once both nodes are ready.
    async fn open(cluster: &Partitioned) -> Self {
        until_ready(&cluster.a).await;
        until_ready(&cluster.b).await;
        let mut on_b = Client::connect(&cluster.b.url()).await;
        on_b.req("live", &[json!({"kinds": [1]})]).await;
        Self {
            to_a: Client::connect(&cluster.a.url()).await,
            to_b: Client::connect(&cluster.b.url()).await,
            on_b,
        }
    }
}

/// Reads `sub`'s live events until every id in `expected` came, then until `marker`; fails
/// on a second copy of any.
async fn receives_each_once(client: &mut Client, sub: &str, expected: &[String], marker: &str) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    while !(seen.contains_key(marker) && expected.iter().all(|id| seen.contains_key(id))) {
        let id = client.live_event(sub).await["id"]
            .as_str()
            .expect("an id")
            .to_string();
        let copies = seen.entry(id.clone()).or_default();
        *copies += 1;
        assert_eq!(*copies, 1, "{id} was delivered twice");
    }
}

#[tokio::test]
async fn a_node_cut_off_from_redis_says_so_and_catches_up_on_every_event_once() {
    let Some(cluster) = start() else { return };
    until_ready(&cluster.a).await;
    until_ready(&cluster.b).await;
    // Subscribers only read (a client waiting for an OK skips what else comes).
    let mut on_a = Client::connect(&cluster.a.url()).await;
    let mut on_b = Client::connect(&cluster.b.url()).await;
    on_a.req("live", &[json!({"kinds": [1]})]).await;
    on_b.req("live", &[json!({"kinds": [1]})]).await;
    let mut to_a = Client::connect(&cluster.a.url()).await;
    let mut to_b = Client::connect(&cluster.b.url()).await;

    cluster.namespace.cut(REDIS);
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    for n in 0..10 {
        let event = note(1, &format!("on A while B is cut off {n}"));
        to_a.publish_ok(&event).await;
        from_a.push(event.id_hex());
    }
    let status = until_readyz(&cluster.b, "status", "degraded").await;
    assert_eq!(status["bus"], "disconnected", "{status}");
    assert!(metric(&cluster.b.addr, "starling_bus_link_timeouts_total", &[]).await >= 1.0);
    for n in 0..5 {
        let event = note(2, &format!("on B while it is cut off {n}"));
        to_b.publish_ok(&event).await;
        from_b.push(event.id_hex());
    }

    // A subscription opened on B now reads A's events from the store; when the bus brings
    // them after all (the catch-up), it must not send them again.
    let mut late = Client::connect(&cluster.b.url()).await;
    let stored = late
        .req(
            "late",
            &[json!({"kinds": [1], "authors": [hex_pubkey(1), hex_pubkey(3)]})],
        )
        .await;
    assert_eq!(stored.len(), from_a.len(), "B's store has A's events");

    cluster.namespace.heal(REDIS);
    until_ready(&cluster.b).await;
    let (marker_a, marker_b) = (note(3, "marker on A"), note(4, "marker on B"));
    to_a.publish_ok(&marker_a).await;
    to_b.publish_ok(&marker_b).await;
    receives_each_once(&mut on_b, "live", &from_a, &marker_a.id_hex()).await;
    receives_each_once(&mut on_a, "live", &from_b, &marker_b.id_hex()).await;
    let again = late.live_event("late").await;
    assert_eq!(
        again["id"],
        marker_a.id_hex(),
        "a stored event came again: {again}"
    );
    assert!(metric(&cluster.b.addr, "starling_catch_up_total", &[]).await >= 1.0);
}

#[tokio::test]
async fn a_node_cut_off_from_postgres_answers_error_and_recovers() {
    let Some(cluster) = start() else { return };
    let Clients {
        mut to_a,
        mut to_b,
        mut on_b,
    } = Clients::open(&cluster).await;

    cluster.namespace.cut(POSTGRES);
    let (accepted, message) = to_b.publish(&note(1, "while B's database is away")).await;
    assert!(
        !accepted && message.starts_with("error: "),
        "refused, not hung: {message}"
    );
    let status = until_readyz(&cluster.b, "store", "unreachable").await;
    assert_eq!(status["status"], "degraded", "{status}");
    // Events stored through A still reach B's subscribers over the bus.
    let through_a = note(2, "stored by A");
    to_a.publish_ok(&through_a).await;
    receives_each_once(&mut on_b, "live", &[], &through_a.id_hex()).await;

    cluster.namespace.heal(POSTGRES);
    let started = std::time::Instant::now();
    loop {
        let (accepted, message) = to_b.publish(&note(3, &format!("after {}", now()))).await;
        if accepted {
            break;
        }
        assert!(message.starts_with("error: "), "{message}");
        assert!(
            started.elapsed() < DEADLINE,
            "B never stored again: {message}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    until_readyz(&cluster.b, "store", "ok").await;
}

#[tokio::test]
async fn a_node_cut_off_from_both_refuses_then_rejoins_without_losses() {
    let Some(cluster) = start() else { return };
    let Clients {
        mut to_a,
        mut to_b,
        mut on_b,
    } = Clients::open(&cluster).await;

    cluster.namespace.cut(REDIS);
    cluster.namespace.cut(POSTGRES);
    let mut from_a = Vec::new();
    for n in 0..10 {
        let event = note(1, &format!("on A while B is alone {n}"));
        to_a.publish_ok(&event).await;
        from_a.push(event.id_hex());
    }
    let (accepted, message) = to_b.publish(&note(2, "B alone")).await;
    assert!(!accepted && message.starts_with("error: "), "{message}");
    let status = until_readyz(&cluster.b, "bus", "disconnected").await;
    assert_eq!(status["status"], "degraded", "{status}");

    cluster.namespace.heal(POSTGRES);
    cluster.namespace.heal(REDIS);
    until_ready(&cluster.b).await;
    let marker = note(3, "marker");
    to_a.publish_ok(&marker).await;
    receives_each_once(&mut on_b, "live", &from_a, &marker.id_hex()).await;
}
