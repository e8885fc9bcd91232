//! Graceful shutdown: on SIGTERM a node says it is draining, keeps serving for the drain
//! period, closes its connections with code 1001, finishes its writes and exits 0, and no
//! event it answered `OK true` is lost.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::{Client, Relay, client::Received, eventually, http::request, note};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_loses_no_acknowledged_event() {
    let relay = Relay::start(&["--drain-seconds", "1"]);
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let url = relay.url();
    let counter = Arc::clone(&acknowledged);
    let publisher = tokio::spawn(async move {
        let mut client = Client::connect(&url).await;
        let mut ids = Vec::new();
        for n in 0.. {
            let event = note(1, &format!("published during shutdown {n}"));
            let json: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
            client.send(json!(["EVENT", json])).await;
            match client.next().await {
                Received::Json(msg) if msg[0] == "OK" => {
                    if msg[2] == true {
                        ids.push(event.id_hex());
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Received::Json(other) => panic!("unexpected {other}"),
                Received::Close(frame) => return (ids, frame.map(|f| f.code)),
                Received::Ended => return (ids, None),
            }
        }
        unreachable!()
    });
    eventually("the publisher to get going", || async {
        (acknowledged.load(Ordering::Relaxed) >= 20).then_some(())
    })
    .await;

    relay.terminate();
    let readyz = eventually("/readyz to say draining", || async {
        let response = request(&relay.addr, "GET", "/readyz", &[]).await;
        (response.status == 503).then_some(response.body)
    })
    .await;
    assert!(readyz.contains("draining"), "{readyz}");
    let refused = tokio_tungstenite::connect_async(relay.url()).await;
    assert!(
        refused.is_err(),
        "a new connection was accepted while draining"
    );

    let (ids, close) = publisher.await.unwrap();
    assert_eq!(close, Some(CloseCode::Away), "connections close with 1001");
    let (status, storage) = relay.wait_for_exit();
    assert!(status.success(), "exit status {status}");

    let relay = Relay::start_on(storage, &[], &[]);
    let stored = Client::connect(&relay.url())
        .await
        .count("all", &[json!({"ids": ids})])
        .await;
    assert_eq!(
        stored,
        ids.len() as u64,
        "an event answered OK true was lost"
    );
}
