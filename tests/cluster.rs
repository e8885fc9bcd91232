//! Several `starling` nodes sharing one PostgreSQL database and one Redis act as one relay.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use sha2::Digest;

use serde_json::{Value, json};

use crate::support::{
    Client, Relay, TempDir, eventually,
    http::{nip11_document, request},
    keys, note, now,
    postgres::{TestDatabase, database},
    redis::{self, RedisServer, unique_cluster},
    tags,
};

/// Nodes of one cluster and the database they share.
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Relay>,
    database: TestDatabase,
    name: String,
    redis_url: String,
    args: Vec<String>,
}

impl Cluster {
    /// Starts `n` nodes on a database of their own and the given Redis, and waits until
    /// every node sees the others.
    pub(crate) async fn start(n: usize, redis_url: &str) -> Self {
        Self::start_with(n, redis_url, &[]).await
    }

    /// Like [`Cluster::start`], with extra arguments for every node.
    pub(crate) async fn start_with(n: usize, redis_url: &str, args: &[&str]) -> Self {
        let mut cluster = Cluster {
            nodes: Vec::new(),
            database: database(),
            name: unique_cluster(),
            redis_url: redis_url.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        for i in 0..n {
            let node = cluster.start_node(i);
            cluster.nodes.push(node);
        }
        for node in &cluster.nodes {
            wait_ready(node, n).await;
        }
        cluster
    }

    fn start_node(&self, i: usize) -> Relay {
        let node_id = format!("node-{i}");
        let mut args = vec!["--cluster", &self.name, "--node-id", &node_id];
        args.extend(self.args.iter().map(String::as_str));
        Relay::start_in(
            TempDir::new(&node_id),
            &args,
            &[
                ("DATABASE_URL", &self.database.url),
                ("REDIS_URL", &self.redis_url),
            ],
        )
    }

    pub(crate) async fn client(&self, i: usize) -> Client {
        Client::connect(&self.nodes[i].url()).await
    }
}

pub(crate) async fn readyz(node: &Relay) -> Value {
    serde_json::from_str(&request(&node.addr, "GET", "/readyz", &[]).await.body)
        .expect("readyz JSON")
}

/// Waits until `node` is connected to the bus and sees `nodes` nodes.
async fn wait_ready(node: &Relay, nodes: usize) {
    eventually("the node to join the cluster", || async {
        let status = readyz(node).await;
        (status["status"] == "ready" && status["nodes"] == nodes).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_event_published_on_one_node_reaches_every_node() {
    let cluster = Cluster::start(3, redis::shared().url()).await;
    let mut b = cluster.client(1).await;
    let mut c = cluster.client(2).await;
    b.req("live", &[json!({"kinds": [1, 20_001]})]).await;
    c.req("live", &[json!({"kinds": [1, 20_001]})]).await;

    let mut a = cluster.client(0).await;
    let event = note(1, "from node A");
    a.publish_ok(&event).await;
    assert_eq!(b.live_event("live").await["id"], event.id_hex());
    assert_eq!(c.live_event("live").await["id"], event.id_hex());
    let stored = c.req("stored", &[json!({"ids": [event.id_hex()]})]).await;
    assert_eq!(stored.len(), 1);

    let ephemeral = keys(2).sign(now(), 20_001, vec![], "typing on A");
    a.publish_ok(&ephemeral).await;
    assert_eq!(b.live_event("live").await["id"], ephemeral.id_hex());
    assert_eq!(c.live_event("live").await["id"], ephemeral.id_hex());
}

#[tokio::test]
async fn every_node_reports_itself_and_the_cluster_size() {
    let cluster = Cluster::start(3, redis::shared().url()).await;
    for (i, node) in cluster.nodes.iter().enumerate() {
        let status = readyz(node).await;
        assert_eq!(status["node"], format!("node-{i}"));
        assert_eq!(status["bus"], "connected");
        let doc = nip11_document(&node.addr).await;
        assert_eq!(doc["starling"]["node"], format!("node-{i}"));
        assert_eq!(doc["starling"]["nodes"], 3);
    }
}

#[tokio::test]
async fn concurrent_replaceable_writes_on_two_nodes_converge_everywhere() {
    let cluster = Cluster::start(3, redis::shared().url()).await;
    let author = keys(5);
    let t = now() - 100;
    let versions: Vec<_> = (0..20u64)
        .map(|n| author.sign(t + n % 7, 0, vec![], &format!("profile {n}")))
        .collect();
    let (mine, theirs): (Vec<_>, Vec<_>) = versions
        .iter()
        .cloned()
        .enumerate()
        .partition(|(n, _)| n % 2 == 0);
    let (url_a, url_b) = (cluster.nodes[0].url(), cluster.nodes[1].url());
    let write = |url: String, events: Vec<(usize, starling::nostr::Event)>| async move {
        let mut client = Client::connect(&url).await;
        for (_, event) in events {
            client.publish(&event).await;
        }
    };
    tokio::join!(write(url_a, mine), write(url_b, theirs));
    let newest = versions
        .iter()
        .min_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.id.cmp(&b.id))
        })
        .unwrap();
    for i in 0..3 {
        let found = cluster
            .client(i)
            .await
            .req("p", &[json!({"kinds": [0]})])
            .await;
        assert_eq!(Client::ids(&found), vec![newest.id_hex()], "node {i}");
    }
}

#[tokio::test]
async fn a_deletion_on_one_node_hides_the_event_on_another() {
    let cluster = Cluster::start(2, redis::shared().url()).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    let doomed = note(1, "regrettable");
    b.publish_ok(&doomed).await;
    b.req("watch", &[json!({"kinds": [5]})]).await;
    let request = keys(1).sign(now(), 5, tags(&[&["e", &doomed.id_hex()]]), "");
    a.publish_ok(&request).await;
    assert_eq!(b.live_event("watch").await["id"], request.id_hex());
    assert!(
        b.req("gone", &[json!({"ids": [doomed.id_hex()]})])
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn after_a_redis_outage_subscribers_get_every_stored_event_once() {
    let mut redis = RedisServer::throwaway();
    let cluster = Cluster::start(2, redis.url()).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    b.req("all", &[json!({"kinds": [1]})]).await;
    let mut published = Vec::new();
    let publish = |content: String| note(1, &content);
    for n in 0..10 {
        let event = publish(format!("before {n}"));
        a.publish_ok(&event).await;
        published.push(event.id_hex());
    }

    redis.stop();
    eventually("node B to notice the outage", || async {
        (readyz(&cluster.nodes[1]).await["status"] == "degraded").then_some(())
    })
    .await;
    for n in 0..10 {
        let event = publish(format!("during {n}"));
        a.publish_ok(&event).await;
        published.push(event.id_hex());
    }
    redis.start();
    wait_ready(&cluster.nodes[1], 2).await;
    wait_ready(&cluster.nodes[0], 2).await;
    for n in 0..10 {
        let event = publish(format!("after {n}"));
        a.publish_ok(&event).await;
        published.push(event.id_hex());
    }
    let marker = keys(9).sign(now(), 1, vec![], "marker");
    a.publish_ok(&marker).await;

    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut marker_seen = false;
    while !(marker_seen && published.iter().all(|id| seen.contains_key(id))) {
        let id = b.live_event("all").await["id"]
            .as_str()
            .unwrap()
            .to_string();
        marker_seen |= id == marker.id_hex();
        *seen.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    drop(cluster.database);
}

#[tokio::test]
async fn a_killed_node_loses_no_acknowledged_event() {
    let mut cluster = Cluster::start(2, redis::shared().url()).await;
    let mut a = cluster.client(0).await;
    let events: Vec<_> = (0..50)
        .map(|n| note(3, &format!("acknowledged {n}")))
        .collect();
    for event in &events {
        a.publish_ok(event).await;
    }
    let killed = cluster.nodes.remove(0);
    killed.kill();
    let ids: Vec<String> = events.iter().map(|e| e.id_hex()).collect();
    let found = cluster
        .client(0)
        .await
        .req("all", &[json!({"ids": ids})])
        .await;
    assert_eq!(found.len(), events.len());
    let restarted = cluster.start_node(0);
    let found = Client::connect(&restarted.url())
        .await
        .req("all", &[json!({"ids": ids})])
        .await;
    assert_eq!(found.len(), events.len());
}

// A limit's window opens with the first event it counts and lasts a minute, so everything
// below falls in one window.
#[tokio::test]
async fn event_limits_hold_across_nodes() {
    let cluster = Cluster::start_with(
        2,
        redis::shared().url(),
        &[
            "--max-events-per-minute-per-pubkey",
            "3",
            "--max-events-per-minute-per-ip",
            "8",
        ],
    )
    .await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    a.publish_ok(&note(1, "one")).await;
    b.publish_ok(&note(1, "two")).await;
    a.publish_ok(&note(1, "three")).await;
    let (accepted, message) = b.publish(&note(1, "four")).await;
    assert!(
        !accepted && message.starts_with("rate-limited:"),
        "the per-author limit of 3 a minute was not enforced: {message}"
    );
    // Four events of this address are counted; four more are allowed, then none.
    let mut results = Vec::new();
    for author in 20..26u8 {
        let node = if author % 2 == 0 { &mut a } else { &mut b };
        results.push(node.publish(&note(author, "x")).await);
    }
    let accepted: Vec<bool> = results.iter().map(|(accepted, _)| *accepted).collect();
    assert_eq!(
        accepted,
        [true, true, true, true, false, false],
        "the per-address limit of 8 a minute was not enforced: {results:?}"
    );
    assert!(
        results
            .iter()
            .all(|(ok, m)| *ok || m.starts_with("rate-limited:")),
        "{results:?}"
    );
}

#[tokio::test]
async fn connection_limits_hold_across_nodes() {
    let cluster =
        Cluster::start_with(2, redis::shared().url(), &["--max-connections-per-ip", "3"]).await;
    let first = cluster.client(0).await;
    let _second = cluster.client(0).await;
    let _third = cluster.client(1).await;
    let refused = tokio_tungstenite::connect_async(cluster.nodes[1].url()).await;
    assert!(
        refused.is_err(),
        "a fourth connection from one address was accepted"
    );
    drop(first);
    let url = cluster.nodes[1].url();
    eventually("a slot to free up after a disconnect", || {
        let url = url.clone();
        async move { tokio_tungstenite::connect_async(url).await.ok().map(|_| ()) }
    })
    .await;
}

#[tokio::test]
async fn requests_per_connection_are_limited() {
    let relay = Relay::start(&["--max-reqs-per-minute-per-connection", "2"]);
    let mut client = Client::connect(&relay.url()).await;
    client.req("one", &[json!({})]).await;
    client.send(json!(["COUNT", "two", {}])).await;
    assert_eq!(client.recv().await[0], "COUNT");
    client.send_req("three", &[json!({})]).await;
    client.expect_closed("three", "rate-limited:").await;
}

/// The connections of one address share an allowance of their own: a new connection
/// brings no fresh burst.
#[tokio::test]
async fn requests_of_one_address_share_its_allowance() {
    let relay = Relay::start(&[
        "--max-reqs-per-minute-per-ip",
        "3",
        "--max-reqs-burst-per-ip",
        "3",
    ]);
    let mut first = Client::connect(&relay.url()).await;
    first.req("one", &[json!({})]).await;
    first.req("two", &[json!({})]).await;
    let mut second = Client::connect(&relay.url()).await;
    second.req("three", &[json!({})]).await;
    second.send_req("four", &[json!({})]).await;
    second.expect_closed("four", "rate-limited:").await;
}

/// A connection may send a burst of requests at once, then as many a minute as the limit
/// says, spread over the minute: not a whole minute's worth in its first second.
#[tokio::test]
async fn requests_past_the_burst_wait_for_the_pace() {
    let relay = Relay::start(&[
        "--max-reqs-per-minute-per-connection",
        "60",
        "--max-reqs-burst-per-connection",
        "3",
    ]);
    let mut client = Client::connect(&relay.url()).await;
    for sub in ["one", "two", "three"] {
        client.req(sub, &[json!({})]).await;
    }
    client.send_req("four", &[json!({})]).await;
    client.expect_closed("four", "rate-limited:").await;
    // One request a second comes back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        client.send_req("again", &[json!({"limit": 0})]).await;
        let answer = client.recv().await;
        if answer[0] == "EOSE" {
            break;
        }
        assert_eq!(answer[0], "CLOSED", "{answer}");
        assert!(
            Instant::now() < deadline,
            "the pace never let a request through"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletions naming 2,000 events each, written on three nodes at once, take a lock per
/// author, not per event: PostgreSQL's lock table (64 locks per connection by default)
/// never runs out, and every deletion is applied.
#[tokio::test]
async fn large_deletions_on_every_node_at_once_do_not_exhaust_locks() {
    const TARGETS: usize = 2000;
    let cluster = Cluster::start(3, redis::shared().url()).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(cluster.client(i).await);
    }
    let mut deletions = Vec::new();
    let mut doomed = Vec::new();
    for author in 1..=6u8 {
        let kept = keys(author).sign(now() - 10, 1, vec![], "doomed");
        clients[0].publish_ok(&kept).await;
        let mut targets: Vec<Vec<String>> = (0..TARGETS - 1)
            .map(|n| {
                let id = sha2::Sha256::digest(format!("{author}:{n}"));
                vec!["e".to_string(), starling::nostr::hex::encode(&id)]
            })
            .collect();
        targets.push(vec!["e".to_string(), kept.id_hex()]);
        deletions.push(keys(author).sign(now(), 5, targets, ""));
        doomed.push(kept.id_hex());
    }
    // Each node gets two of them, all sent before any answer is read.
    for (n, deletion) in deletions.iter().enumerate() {
        let json: Value = serde_json::from_str(&deletion.to_json()).unwrap();
        clients[n % 3].send(json!(["EVENT", json])).await;
    }
    // A connection's two deletions may be answered in either order.
    for (node, client) in clients.iter_mut().enumerate() {
        let ids: Vec<String> = deletions
            .iter()
            .skip(node)
            .step_by(3)
            .map(starling::nostr::Event::id_hex)
            .collect();
        for (accepted, message) in client.oks_for(&ids).await {
            assert!(accepted, "a deletion was refused: {message}");
        }
    }
    let left = clients[1].req("doomed", &[json!({"ids": doomed})]).await;
    assert!(left.is_empty(), "deleted events are still served: {left:?}");
}
