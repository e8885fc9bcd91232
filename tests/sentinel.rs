//! Redis with failover: two nodes reach Redis through Sentinel; the master is killed under
//! a publish load, Sentinel promotes the replica, the nodes follow it, and every
//! acknowledged event reaches the other node's live subscriber exactly once.

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
    support::{DEADLINE, note, redis::SentinelGroup},
};

#[tokio::test]
async fn nodes_follow_the_master_sentinel_promotes() {
    let mut group = SentinelGroup::start();
    let first_master = group.master_port();
    let cluster = Cluster::start(2, &group.url()).await;
    let mut subscriber = cluster.client(1).await;
    subscriber.req("live", &[json!({"kinds": [1]})]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut publisher = cluster.client(0).await;
    let publishing = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            let mut acknowledged = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let event = note(1, &format!("through a failover {}", acknowledged.len()));
                let (ok, message) = publisher.publish(&event).await;
                assert!(ok, "refused during the failover: {message}");
                acknowledged.push(event.id_hex());
            }
            acknowledged
        }
    });

    let mut received: HashMap<String, usize> = HashMap::new();
    let receive = async |subscriber: &mut crate::support::Client,
                         received: &mut HashMap<String, usize>| {
        if let Ok(message) =
            tokio::time::timeout(Duration::from_millis(100), subscriber.recv()).await
            && message[0] == "EVENT"
            && message[1] == "live"
        {
            let id = message[2]["id"].as_str().unwrap_or_default().to_string();
            *received.entry(id).or_default() += 1;
        }
    };
    let started = Instant::now();
    while received.len() < 50 {
        assert!(
            started.elapsed() < DEADLINE,
            "no publish load before the failover"
        );
        receive(&mut subscriber, &mut received).await;
    }

    group.master.stop();
    let killed = Instant::now();
    let mut promoted_after = None;
    let recovered_after = loop {
        assert!(
            killed.elapsed() < DEADLINE * 2,
            "the cluster did not recover"
        );
        receive(&mut subscriber, &mut received).await;
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

    let seen_at_recovery = received.len();
    let started = Instant::now();
    while received.len() < seen_at_recovery + 50 {
        assert!(
            started.elapsed() < DEADLINE,
            "no live events after the failover"
        );
        receive(&mut subscriber, &mut received).await;
    }
    stop.store(true, Ordering::Relaxed);
    let acknowledged = publishing.await.expect("the publisher");

    let started = Instant::now();
    while let Some(missing) = acknowledged.iter().find(|id| !received.contains_key(*id)) {
        assert!(
            started.elapsed() < DEADLINE,
            "acknowledged event {missing} never reached the other node ({} acknowledged)",
            acknowledged.len()
        );
        receive(&mut subscriber, &mut received).await;
    }
    // Anything delivered twice would arrive before an event published after all of them.
    let mut last = cluster.client(0).await;
    let marker = note(2, "the last one");
    last.publish_ok(&marker).await;
    let started = Instant::now();
    while !received.contains_key(&marker.id_hex()) {
        assert!(
            started.elapsed() < DEADLINE,
            "the last event did not arrive"
        );
        receive(&mut subscriber, &mut received).await;
    }
    let twice: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    eprintln!(
        "{} events acknowledged, each delivered once",
        acknowledged.len()
    );
}
