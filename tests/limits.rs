//! Every configurable limit, enforced with the NIP-01 answer it calls for.

use serde_json::json;
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::{
        CloseFrame,
        frame::{
            Frame,
            coding::{CloseCode, Data, OpCode},
        },
    },
};

use crate::support::{Client, Relay, client::Received, keys, note, now, tags};

fn closed_with_size(received: Received) -> bool {
    matches!(
        received,
        Received::Close(Some(CloseFrame {
            code: CloseCode::Size,
            ..
        }))
    )
}

#[tokio::test]
async fn an_oversized_message_closes_the_connection_and_others_carry_on() {
    let relay = Relay::start(&["--max-message-bytes", "2048"]);
    let mut bystander = Client::connect(&relay.url()).await;
    bystander.req("b", &[json!({"kinds": [1]})]).await;

    let mut big = Client::connect(&relay.url()).await;
    big.send_text(format!(
        r##"["REQ","x",{{"#t":["{}"]}}]"##,
        "a".repeat(4096)
    ))
    .await;
    assert!(
        closed_with_size(big.next().await),
        "expected close code 1009"
    );

    let mut fragmented = Client::connect(&relay.url()).await;
    let part = "b".repeat(1500);
    fragmented
        .send_raw(Message::Frame(Frame::message(
            part.clone(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await;
    fragmented
        .send_raw(Message::Frame(Frame::message(
            part,
            OpCode::Data(Data::Continue),
            true,
        )))
        .await;
    assert!(
        closed_with_size(fragmented.next().await),
        "expected close code 1009 for fragments"
    );

    let mut writer = Client::connect(&relay.url()).await;
    let event = note(1, "still here");
    writer.publish_ok(&event).await;
    assert_eq!(bystander.live_event("b").await["id"], event.id_hex());
}

#[tokio::test]
async fn limits_subscriptions_per_connection() {
    let relay = Relay::start(&["--max-subscriptions", "2"]);
    let mut client = Client::connect(&relay.url()).await;
    client.req("one", &[json!({})]).await;
    client.req("two", &[json!({})]).await;
    client.send_req("three", &[json!({})]).await;
    client.expect_closed("three", "rate-limited:").await;
    client.req("two", &[json!({"kinds": [1]})]).await;
    client.send(json!(["CLOSE", "one"])).await;
    client.req("three", &[json!({})]).await;
}

#[tokio::test]
async fn limits_filters_per_request() {
    let relay = Relay::start(&["--max-filters", "2"]);
    let mut client = Client::connect(&relay.url()).await;
    client
        .send_req("many", &[json!({}), json!({}), json!({})])
        .await;
    client.expect_closed("many", "invalid:").await;
    client.send(json!(["COUNT", "c", {}, {}, {}])).await;
    client.expect_closed("c", "invalid:").await;
    client.req("two", &[json!({}), json!({})]).await;
}

#[tokio::test]
async fn limits_tags_content_and_future_timestamps() {
    let relay = Relay::start(&[
        "--max-event-tags",
        "2",
        "--max-content-length",
        "5",
        "--created-at-upper-limit",
        "60",
    ]);
    let mut client = Client::connect(&relay.url()).await;
    let refused = |r: (bool, String)| !r.0 && r.1.starts_with("invalid:");
    let three_tags = keys(1).sign(now(), 1, tags(&[&["t", "a"], &["t", "b"], &["t", "c"]]), "");
    assert!(refused(client.publish(&three_tags).await));
    client
        .publish_ok(&keys(1).sign(now(), 1, tags(&[&["t", "a"], &["t", "b"]]), ""))
        .await;
    assert!(refused(
        client
            .publish(&keys(1).sign(now(), 1, vec![], "123456"))
            .await
    ));
    client
        .publish_ok(&keys(1).sign(now(), 1, vec![], "日本語日本"))
        .await;
    assert!(refused(
        client
            .publish(&keys(1).sign(now() + 120, 1, vec![], "future"))
            .await
    ));
    client
        .publish_ok(&keys(1).sign(now() + 30, 1, vec![], "soon"))
        .await;
}

#[tokio::test]
async fn requires_the_configured_proof_of_work() {
    let relay = Relay::start(&["--min-pow-difficulty", "8"]);
    let mut client = Client::connect(&relay.url()).await;
    let author = keys(1);
    let created_at = now();
    let mine = |target: &str| {
        (0u64..)
            .map(|n| {
                author.sign(
                    created_at,
                    1,
                    tags(&[&["nonce", &n.to_string(), target]]),
                    "work",
                )
            })
            .find(|e| e.pow_difficulty() >= 8)
            .expect("a nonce")
    };
    client.publish_ok(&mine("8")).await;
    let (accepted, message) = client.publish(&mine("4")).await;
    assert!(!accepted && message.starts_with("pow:"), "{message}");
    let lazy = (0u64..)
        .map(|n| author.sign(created_at, 1, tags(&[&["n", &n.to_string()]]), "no work"))
        .find(|e| e.pow_difficulty() < 8)
        .expect("an event");
    let (accepted, message) = client.publish(&lazy).await;
    assert!(!accepted && message.starts_with("pow:"), "{message}");
}
