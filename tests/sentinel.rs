//! Redis with failover: two nodes reach Redis through Sentinel; the master is killed under
//! a publish load on both nodes, Sentinel promotes the replica, the nodes follow it, and
//! every acknowledged event reaches the live subscriber on the other node (and on its own)
//! exactly once. And sentinels and a master that require passwords.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{
    cluster::{Cluster, readyz},
    support::{
        Client, DEADLINE, Relay, note,
        redis::{Login, SentinelGroup, SentinelLogins},
    },
};

/// A live subscriber and how many times it got each event.
struct Subscriber {
    client: Client,
    received: HashMap<String, usize>,
}

impl Subscriber {
    async fn open(client: Client) -> Self {
        let mut client = client;
        client.req("live", &[json!({"kinds": [1]})]).await;
        Self {
            client,
            received: HashMap::new(),
        }
    }

    /// Reads what has arrived (a bounded number of messages, so that a steady stream
    /// does not keep the caller here), waiting a little for it.
    async fn receive(&mut self) {
        for _ in 0..256 {
            let Ok(message) =
                tokio::time::timeout(Duration::from_millis(50), self.client.recv()).await
            else {
                return;
            };
            if message[0] == "EVENT" && message[1] == "live" {
                let id = message[2]["id"].as_str().unwrap_or_default().to_string();
                *self.received.entry(id).or_default() += 1;
            }
        }
    }
}

/// Reads both subscribers.
async fn receive(subscribers: &mut [Subscriber]) {
    for subscriber in subscribers {
        subscriber.receive().await;
    }
}

/// Publishes lock-step notes on `publisher` until `stop`; the ids acknowledged.
fn publish_until(
    mut publisher: Client,
    node: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let content = format!("node {node} through a failover {}", acknowledged.len());
            // A key of each node's own, so that neither shares the other's limits.
            let event = note(1 + 2 * node as u8, &content);
            let (ok, message) = publisher.publish(&event).await;
            assert!(ok, "refused on node {node} during the failover: {message}");
            acknowledged.push(event.id_hex());
        }
        acknowledged
    })
}

#[tokio::test]
async fn nodes_follow_the_master_sentinel_promotes() {
    let mut group = SentinelGroup::start();
    let first_master = group.master_port();
    let cluster = Cluster::start(2, &group.url()).await;
    let mut subscribers = [
        Subscriber::open(cluster.client(0).await).await,
        Subscriber::open(cluster.client(1).await).await,
    ];

    let stop = Arc::new(AtomicBool::new(false));
    let publishing = [
        publish_until(cluster.client(0).await, 0, Arc::clone(&stop)),
        publish_until(cluster.client(1).await, 1, Arc::clone(&stop)),
    ];
    let started = Instant::now();
    while subscribers.iter().any(|s| s.received.len() < 50) {
        assert!(
            started.elapsed() < DEADLINE,
            "no publish load before the failover"
        );
        receive(&mut subscribers).await;
    }

    group.master.stop();
    let killed = Instant::now();
    let mut promoted_after = None;
    let recovered_after = loop {
        assert!(
            killed.elapsed() < DEADLINE * 2,
            "the cluster did not recover"
        );
        receive(&mut subscribers).await;
        if promoted_after.is_none() && group.master_port() != first_master {
            promoted_after = Some(killed.elapsed());
        }
        let mut ready = promoted_after.is_some();
        for node in &cluster.nodes {
            ready &= readyz(node).await["status"] == "ready";
        }
        if ready {
            break killed.elapsed();
        }
    };
    assert_eq!(
        group.master_port(),
        Some(group.replica.port()),
        "the replica is the master"
    );
    eprintln!(
        "sentinel failover: replica promoted {:?} after the kill; both nodes ready on it {:?} after the kill",
        promoted_after.unwrap_or_default(),
        recovered_after
    );

    let seen_at_recovery: Vec<usize> = subscribers.iter().map(|s| s.received.len()).collect();
    let started = Instant::now();
    while subscribers
        .iter()
        .zip(&seen_at_recovery)
        .any(|(s, seen)| s.received.len() < seen + 50)
    {
        assert!(
            started.elapsed() < DEADLINE,
            "no live events after the failover"
        );
        receive(&mut subscribers).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for (node, publisher) in publishing.into_iter().enumerate() {
        let ids = publisher.await.expect("a publisher");
        assert!(!ids.is_empty(), "node {node} acknowledged nothing");
        acknowledged.push(ids);
    }

    let started = Instant::now();
    loop {
        let missing = subscribers.iter().enumerate().find_map(|(at, subscriber)| {
            acknowledged.iter().enumerate().find_map(|(from, ids)| {
                ids.iter()
                    .find(|id| !subscriber.received.contains_key(*id))
                    .map(|id| (id.clone(), from, at))
            })
        });
        let Some((id, from, at)) = missing else {
            break;
        };
        assert!(
            started.elapsed() < DEADLINE,
            "event {id} acknowledged by node {from} never reached the subscriber on node {at}"
        );
        receive(&mut subscribers).await;
    }
    // Anything delivered twice would arrive before an event published after all of them,
    // on each node.
    let markers = [
        note(2, "the last one on node 0"),
        note(2, "the last one on node 1"),
    ];
    for (node, marker) in markers.iter().enumerate() {
        cluster.client(node).await.publish_ok(marker).await;
    }
    let started = Instant::now();
    while subscribers.iter().any(|s| {
        markers
            .iter()
            .any(|m| !s.received.contains_key(&m.id_hex()))
    }) {
        assert!(
            started.elapsed() < DEADLINE,
            "the last events did not arrive"
        );
        receive(&mut subscribers).await;
    }
    for (at, subscriber) in subscribers.iter().enumerate() {
        let twice: Vec<_> = subscriber
            .received
            .iter()
            .filter(|(_, n)| **n > 1)
            .collect();
        assert!(
            twice.is_empty(),
            "delivered more than once on node {at}: {twice:?}"
        );
    }
    eprintln!(
        "{} events acknowledged on node 0 and {} on node 1, each delivered once on both nodes",
        acknowledged[0].len(),
        acknowledged[1].len()
    );
}

/// Passwords the test servers require, and the same percent-encoded for the URL.
const MASTER_PASSWORD: (&str, &str) = ("m@ster:pw/1", "m%40ster%3Apw%2F1");
const SENTINEL_PASSWORD: (&str, &str) = ("s3nt!n&l=pw", "s3nt!n%26l%3Dpw");

/// Sentinels and a master that require passwords (`requirepass`), or ACL users with the
/// `default` user off: the cluster works through them with the credentials in the URL, and
/// a missing or wrong credential is refused at start, naming where it goes.
#[tokio::test]
async fn sentinels_and_a_master_that_require_passwords() {
    for user in [None, Some(("relay", "watcher"))] {
        let login = |user: Option<&'static str>, password: &'static str| Login { user, password };
        let group = SentinelGroup::start_with(SentinelLogins {
            redis: Some(login(user.map(|u| u.0), MASTER_PASSWORD.0)),
            sentinel: Some(login(user.map(|u| u.1), SENTINEL_PASSWORD.0)),
        });
        let (master_user, sentinel_user) = match user {
            Some((master, sentinel)) => (master, format!("&sentinel_username={sentinel}")),
            None => ("", String::new()),
        };
        let with_master = |password: &str| {
            group
                .url()
                .replacen("://", &format!("://{master_user}:{password}@"), 1)
        };
        let url = format!(
            "{}?sentinel_password={}{sentinel_user}",
            with_master(MASTER_PASSWORD.1),
            SENTINEL_PASSWORD.1
        );
        let cluster = Cluster::start(2, &url).await;
        let mut subscriber = cluster.client(1).await;
        subscriber.req("live", &[json!({"kinds": [1]})]).await;
        let event = note(
            1,
            &format!("through sentinels with passwords, users {user:?}"),
        );
        cluster.client(0).await.publish_ok(&event).await;
        assert_eq!(subscriber.live_event("live").await["id"], event.id_hex());

        let no_sentinel_password =
            Relay::refused_at_start(&["--redis-url", &with_master(MASTER_PASSWORD.1)]);
        assert!(
            no_sentinel_password.contains("redis_url")
                && no_sentinel_password.contains("sentinel_password"),
            "{no_sentinel_password}"
        );
        let wrong_sentinel_password = Relay::refused_at_start(&[
            "--redis-url",
            &format!(
                "{}?sentinel_password=wrong{sentinel_user}",
                with_master(MASTER_PASSWORD.1)
            ),
        ]);
        assert!(
            wrong_sentinel_password.contains("redis_url")
                && wrong_sentinel_password.contains("sentinel_password"),
            "{wrong_sentinel_password}"
        );
        let wrong_master_password = Relay::refused_at_start(&[
            "--redis-url",
            &format!(
                "{}?sentinel_password={}{sentinel_user}",
                with_master("wrong"),
                SENTINEL_PASSWORD.1
            ),
        ]);
        assert!(
            wrong_master_password.contains("redis_url")
                && wrong_master_password.contains("before @"),
            "{wrong_master_password}"
        );
        if user.is_some() {
            // The users count: without them the passwords are the `default` user's, off.
            let without_users = url
                .replacen(&format!("://{master_user}:"), "://:", 1)
                .replace(&sentinel_user, "");
            let refused = Relay::refused_at_start(&["--redis-url", &without_users]);
            assert!(refused.contains("redis_url"), "{refused}");
        }
    }
}
