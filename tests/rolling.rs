//! A rolling restart under load: three nodes behind a real HAProxy (health-checked on
//! `/readyz`), clients publishing and subscribing all along and reconnecting as real clients
//! do, each node stopped with SIGTERM and started again in turn. Every event answered
//! `OK true` must be stored and reach every subscriber (which resubscribes with `since`
//! after a reconnect), and no subscription may get an event twice.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::{connect_async, tungstenite::Message};

use crate::support::{
    Client, DEADLINE, Relay, TempDir,
    http::request,
    note, now,
    postgres::{database, free_port},
    proxies::Proxy,
    redis::{self, unique_cluster},
};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message, or `None` when the socket ended or `wait` passed.
async fn next_json(ws: &mut Socket, wait: Duration) -> Option<Option<Value>> {
    match tokio::time::timeout(wait, ws.next()).await {
        Err(_) => Some(None),
        Ok(Some(Ok(Message::Text(text)))) => Some(serde_json::from_str(&text).ok()),
        Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => None,
        Ok(Some(Ok(_))) => Some(None),
    }
}

/// A new connection through the balancer, as a client makes one: given up after 2 s (and
/// then tried again after a pause by the caller's loop).
async fn reconnect(url: &str) -> Option<Socket> {
    match tokio::time::timeout(Duration::from_secs(2), connect_async(url)).await {
        Ok(Ok((ws, _))) => Some(ws),
        _ => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// Publishes notes by `author` until `stop`, reconnecting through `url` whenever the
/// connection ends; records the ids answered `OK true`.
async fn publisher(url: String, author: u8, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<String>>>) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let Some(mut ws) = reconnect(&url).await else {
            continue;
        };
        'connected: while !stop.load(Ordering::Relaxed) {
            n += 1;
            let event = note(author, &format!("rolling {author} {n}"));
            let id = event.id_hex();
            let json: Value = serde_json::from_str(&event.to_json()).unwrap();
            if ws
                .send(Message::text(json!(["EVENT", json]).to_string()))
                .await
                .is_err()
            {
                break;
            }
            loop {
                match next_json(&mut ws, Duration::from_secs(5)).await {
                    None => break 'connected,
                    Some(Some(msg)) if msg[0] == "OK" && msg[1] == id.as_str() => {
                        if msg[2] == true {
                            acked.lock().unwrap().push(id);
                        }
                        break;
                    }
                    Some(Some(_)) => {}
                    Some(None) => break 'connected,
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What a subscriber saw: every id, and any id one subscription got twice.
#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    twice: Vec<String>,
}

/// Subscribes to kind 1 until `stop`, reconnecting through `url` and resubscribing from
/// the newest `created_at` it saw.
async fn subscriber(url: String, start: u64, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let mut since = start;
    let mut subscription = 0;
    while !stop.load(Ordering::Relaxed) {
        let Some(mut ws) = reconnect(&url).await else {
            continue;
        };
        subscription += 1;
        let sub = format!("s{subscription}");
        let req = json!(["REQ", sub, {"kinds": [1], "since": since}]);
        if ws.send(Message::text(req.to_string())).await.is_err() {
            continue;
        }
        let mut this_one = HashSet::new();
        while !stop.load(Ordering::Relaxed) {
            match next_json(&mut ws, Duration::from_millis(200)).await {
                None => break,
                Some(Some(msg)) if msg[0] == "EVENT" && msg[1] == sub.as_str() => {
                    let id = msg[2]["id"].as_str().unwrap_or_default().to_string();
                    since = since.max(msg[2]["created_at"].as_u64().unwrap_or(0));
                    let mut seen = seen.lock().unwrap();
                    if !this_one.insert(id.clone()) {
                        seen.twice.push(id.clone());
                    }
                    seen.ids.insert(id);
                }
                Some(_) => {}
            }
        }
    }
}

async fn ready(addr: &str) -> bool {
    let body = request(addr, "GET", "/readyz", &[]).await.body;
    let status: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    status["status"] == "ready" && status["nodes"] == 3
}

async fn until_ready(addr: &str) {
    let started = Instant::now();
    while !ready(addr).await {
        assert!(started.elapsed() < DEADLINE, "{addr} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_and_repeats_nothing() {
    let database = database();
    let cluster = unique_cluster();
    let env = [
        ("DATABASE_URL", database.url.as_str()),
        ("REDIS_URL", redis::shared().url()),
    ];
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let start_node = |i: usize, dir: TempDir| {
        let node = format!("node-{i}");
        let args = [
            "--cluster",
            &cluster,
            "--node-id",
            &node,
            "--drain-seconds",
            "1",
        ];
        Relay::start_on_port(
            crate::support::relay::Storage {
                dir,
                database: None,
            },
            &args,
            &env,
            ports[i],
        )
    };
    let mut nodes: Vec<Option<Relay>> = (0..3)
        .map(|i| Some(start_node(i, TempDir::new(&format!("node-{i}")))))
        .collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    for addr in &addrs {
        until_ready(addr).await;
    }
    let balancer = Proxy::haproxy_balancing(&addrs);
    let url = format!("ws://{}/", balancer.addrs[0]);

    let stop = Arc::new(AtomicBool::new(false));
    let stop_subscribers = Arc::new(AtomicBool::new(false));
    let start = now() - 1;
    let subscribers: Vec<_> = (0..3)
        .map(|_| {
            let seen = Arc::new(Mutex::new(Seen::default()));
            let task = tokio::spawn(subscriber(
                url.clone(),
                start,
                Arc::clone(&stop_subscribers),
                Arc::clone(&seen),
            ));
            (seen, task)
        })
        .collect();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let publishers: Vec<_> = (1..=2)
        .map(|author| {
            tokio::spawn(publisher(
                url.clone(),
                author,
                Arc::clone(&stop),
                Arc::clone(&acked),
            ))
        })
        .collect();

    for i in 0..3 {
        // Let some load through first.
        let before = acked.lock().unwrap().len();
        let started = Instant::now();
        while acked.lock().unwrap().len() < before + 20 {
            assert!(
                started.elapsed() < DEADLINE,
                "publishing stalled before restarting node {i} ({} acknowledged)",
                acked.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let node = nodes[i].take().expect("a running node");
        node.terminate();
        let (status, storage) = tokio::task::block_in_place(|| node.wait_for_exit());
        assert!(status.success(), "node {i} stopped badly: {status}");
        nodes[i] = Some(tokio::task::block_in_place(|| start_node(i, storage.dir)));
        until_ready(&addrs[i]).await;
    }
    let before = acked.lock().unwrap().len();
    let started = Instant::now();
    while acked.lock().unwrap().len() < before + 20 {
        assert!(
            started.elapsed() < DEADLINE,
            "publishing stalled after the restarts"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in publishers {
        task.await.unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 80,
        "only {} events were acknowledged",
        acked.len()
    );

    for (n, (seen, _)) in subscribers.iter().enumerate() {
        let started = Instant::now();
        loop {
            let missing: Vec<String> = {
                let seen = seen.lock().unwrap();
                acked
                    .iter()
                    .filter(|id| !seen.ids.contains(*id))
                    .cloned()
                    .collect()
            };
            if missing.is_empty() {
                break;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "subscriber {n} never got {} acknowledged events, e.g. {}",
                missing.len(),
                missing[0]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stop_subscribers.store(true, Ordering::Relaxed);
    for (n, (seen, task)) in subscribers.into_iter().enumerate() {
        task.await.unwrap();
        let twice = &seen.lock().unwrap().twice;
        assert!(
            twice.is_empty(),
            "subscriber {n} got events twice on one subscription: {twice:?}"
        );
    }
    let mut reader = Client::connect(&format!("ws://{}/", addrs[0])).await;
    for chunk in acked.chunks(100) {
        let stored = reader
            .req("stored", &[json!({"ids": chunk, "limit": chunk.len()})])
            .await;
        assert_eq!(
            stored.len(),
            chunk.len(),
            "every acknowledged event is stored"
        );
    }
}
