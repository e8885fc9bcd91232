//! Malformed input of every kind gets a protocol-correct answer, and the relay keeps
//! serving the client that sent it and everyone else.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    },
};

use crate::support::{Client, Relay, note};

fn starts_with(value: &Value, prefix: &str) -> bool {
    value.as_str().is_some_and(|s| s.starts_with(prefix))
}

async fn expect_notice(client: &mut Client, prefix: &str, sent: &str) {
    let msg = client.recv().await;
    assert_eq!(msg[0], "NOTICE", "for {sent}: {msg}");
    assert!(starts_with(&msg[1], prefix), "for {sent}: {msg}");
}

on_every_store! {
    async fn every_kind_of_bad_input_is_answered_and_the_relay_keeps_serving() {
        let relay = Relay::start(&[]);
        let mut bad = Client::connect(&relay.url()).await;
        let mut good = Client::connect(&relay.url()).await;
        good.req("all", &[json!({"kinds": [1]})]).await;

        for text in [
            "this is not json",
            "{\"an\":\"object\"}",
            "[]",
            "[42]",
            "[\"EVENT\"]",
            "[\"EVENT\",{},{}]",
            "[\"CLOSE\"]",
            "[\"REQ\",42,{}]",
            "[\"EVENT\",{\"id\":\"not hex\"}]",
        ] {
            bad.send_text(text).await;
            expect_notice(&mut bad, "invalid:", text).await;
        }
        bad.send_text("[\"HELLO\",1]").await;
        expect_notice(&mut bad, "unsupported:", "unknown verb").await;

        let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        bad.send_text(nested).await;
        expect_notice(&mut bad, "invalid:", "deep nesting").await;
        let nested_filter = format!(
            "[\"REQ\",\"deep\",{{\"#t\":{}{}}}]",
            "[".repeat(50_000),
            "]".repeat(50_000)
        );
        bad.send_text(nested_filter).await;
        bad.expect_closed("deep", "invalid:").await;

        bad.send_raw(Message::binary(b"[\"REQ\",\"b\",{}]".to_vec()))
            .await;
        expect_notice(&mut bad, "invalid:", "binary frame").await;
        bad.send_raw(Message::Frame(Frame::message(
            vec![b'[', 0xff, 0xfe, b']'],
            OpCode::Data(Data::Text),
            true,
        )))
        .await;
        expect_notice(&mut bad, "invalid:", "invalid UTF-8").await;

        let event: Value = serde_json::from_str(&note(1, "x").to_json()).unwrap();
        let mut wrong_type = event.clone();
        wrong_type["kind"] = json!("one");
        bad.send(json!(["EVENT", wrong_type])).await;
        let msg = bad.recv().await;
        assert_eq!(
            (msg[0].as_str(), &msg[1], &msg[2]),
            (Some("OK"), &event["id"], &json!(false)),
            "{msg}"
        );
        assert!(starts_with(&msg[3], "invalid:"), "{msg}");
        let mut bad_tags = event.clone();
        bad_tags["tags"] = json!([["e", 1]]);
        bad.send(json!(["EVENT", bad_tags])).await;
        let msg = bad.recv().await;
        assert!(
            msg[0] == "OK" && msg[2] == false && starts_with(&msg[3], "invalid:"),
            "{msg}"
        );

        for (text, prefix) in [
            (json!(["REQ", "s1"]), "invalid:"),
            (json!(["REQ", "s2", {"kinds": "1"}]), "invalid:"),
            (json!(["REQ", "s3", {"ids": ["ABC"]}]), "invalid:"),
            (json!(["REQ", "s4", {"unknown": 1}]), "unsupported:"),
            (json!(["REQ", "s5", []]), "invalid:"),
            (json!(["COUNT", "s6", {"kinds": [-1]}]), "invalid:"),
            (json!(["REQ", "x".repeat(65), {}]), "invalid:"),
        ] {
            bad.send(text.clone()).await;
            let msg = bad.recv().await;
            assert_eq!(msg[0], "CLOSED", "for {text}: {msg}");
            assert!(starts_with(&msg[2], prefix), "for {text}: {msg}");
        }

        let event = note(2, "after all that");
        bad.publish_ok(&event).await;
        assert_eq!(good.live_event("all").await["id"], event.id_hex());
        assert_eq!(
            bad.req("ok", &[json!({"ids": [event.id_hex()]})])
                .await
                .len(),
            1
        );
    }
}

#[tokio::test]
async fn a_frame_breaking_the_websocket_protocol_closes_its_connection_alone() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let relay = Relay::start(&[]);
    let mut bad = Client::connect(&relay.url()).await;
    let mut good = Client::connect(&relay.url()).await;
    // RSV1 means a compressed frame, which nobody negotiated.
    let mut frame = Frame::message(
        b"[\"REQ\",\"r\",{}]".to_vec(),
        OpCode::Data(Data::Text),
        true,
    );
    frame.header_mut().rsv1 = true;
    bad.send_raw(Message::Frame(frame)).await;
    match bad.next().await {
        crate::support::client::Received::Close(Some(close)) => {
            assert_eq!(close.code, CloseCode::Protocol, "{close:?}")
        }
        other => panic!("expected a close frame with code 1002, got {other:?}"),
    }
    let event = note(3, "still serving");
    good.publish_ok(&event).await;
    assert_eq!(
        good.req("after", &[json!({"ids": [event.id_hex()]})])
            .await
            .len(),
        1
    );
}
