//! Connection health: slow readers are dropped without hurting anyone else; silent
//! connections are closed; connections that answer pings stay.

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    Client, DEADLINE, Relay,
    client::{Received, raw_upgrade},
    eventually, keys, now,
};

// The healthy reader runs on its own worker thread, so that it keeps reading while the
// publisher waits for its answers, however busy the machine is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_dropped_and_nobody_else_suffers() {
    const EVENTS: usize = 600;
    // Room for a healthy reader's jitter (25 frames of 40 KB), far less than is published.
    let relay = Relay::start(&["--max-outbound-bytes", "1048576"]);
    let mut slow = Client::connect_with_small_buffer(&relay.url(), &relay.addr).await;
    slow.req("firehose", &[json!({"kinds": [1]})]).await;

    let mut healthy = Client::connect(&relay.url()).await;
    healthy.req("firehose", &[json!({"kinds": [1]})]).await;
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        while seen < EVENTS {
            healthy.live_event("firehose").await;
            seen += 1;
        }
        seen
    });

    let mut publisher = Client::connect(&relay.url()).await;
    let padding = "x".repeat(40_000);
    for n in 0..EVENTS {
        publisher
            .publish_ok(&keys(1).sign(now(), 1, vec![], &format!("{n} {padding}")))
            .await;
    }
    assert_eq!(
        reader.await.unwrap(),
        EVENTS,
        "the healthy reader missed events"
    );

    let mut received = 0;
    loop {
        match slow.next().await {
            Received::Json(msg) if msg[0] == "EVENT" => received += 1,
            Received::Json(_) => {}
            Received::Close(_) | Received::Ended => break,
        }
    }
    assert!(received < EVENTS, "the slow client was never dropped");
    let metrics = crate::support::http::request(&relay.addr, "GET", "/metrics", &[])
        .await
        .body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("starling_slow_clients_dropped_total{") && l.ends_with(" 1")),
        "the drop was not counted:\n{metrics}"
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let relay = Relay::start(&[
        "--ping-interval-seconds",
        "1",
        "--idle-timeout-seconds",
        "2",
    ]);
    let mut silent = raw_upgrade(&relay.addr).await;
    let mut buf = vec![0u8; 4096];
    let mut received = Vec::new();
    loop {
        let n = tokio::time::timeout(DEADLINE, silent.read(&mut buf))
            .await
            .expect("never closed")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    // The relay pings every second and closes after two silent seconds: a ping (with an
    // 8-byte payload to answer) comes first, so the connection was not closed before the
    // idle timeout.
    let ping = received.windows(2).position(|w| w == [0x89, 0x08]);
    let close = received.iter().position(|b| *b == 0x88);
    assert!(ping.is_some(), "the relay never pinged");
    assert!(close.is_some(), "no close frame was sent");
    assert!(ping < close, "closed before the first ping");
    assert!(
        received.windows(12).any(|w| w == b"idle timeout"),
        "the close frame does not say why: {text}"
    );
}

#[tokio::test]
async fn a_connection_that_answers_pings_stays_open() {
    let relay = Relay::start(&[
        "--ping-interval-seconds",
        "1",
        "--idle-timeout-seconds",
        "3",
    ]);
    let mut client = Client::connect(&relay.url()).await;
    client.challenge().await;
    // Pings come every second: five of them span more than the 3-second idle timeout.
    let mut pings = 0;
    while pings < 5 {
        match client.next_raw().await {
            Some(Message::Ping(_)) => pings += 1,
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("closed after {pings} pings despite answering them"),
        }
    }
    assert!(client.req("alive", &[json!({"limit": 1})]).await.is_empty());
}

#[tokio::test]
async fn many_connections_and_subscriptions_come_and_go() {
    let relay = Relay::start(&[]);
    let mut clients = Vec::new();
    for n in 0..50 {
        let mut client = Client::connect(&relay.url()).await;
        client.req(&format!("s{n}"), &[json!({"kinds": [1]})]).await;
        clients.push(client);
    }
    let mut writer = Client::connect(&relay.url()).await;
    let event = keys(9).sign(now(), 1, vec![], "to everyone");
    writer.publish_ok(&event).await;
    for (n, client) in clients.iter_mut().enumerate() {
        assert_eq!(
            client.live_event(&format!("s{n}")).await["id"],
            event.id_hex()
        );
    }
    drop(clients);
    let url = relay.url();
    eventually("the relay to serve after mass disconnect", || {
        let url = url.clone();
        async move {
            Some(
                Client::connect(&url)
                    .await
                    .req("after", &[json!({})])
                    .await
                    .len(),
            )
        }
    })
    .await;
}
