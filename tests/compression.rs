//! permessage-deflate (RFC 7692): real clients that offer it (Python's websockets, Node's ws,
//! headless Chromium) get it, publish compressed and read compressed events back; a client
//! that does not offer it gets plain frames; a compression bomb is closed with 1009, bad
//! reserved bits with 1002; `--websocket-compression false` negotiates nothing.

use serde_json::{Value, json};

use crate::support::{Client, Relay, http::metric, note, raw_ws::RawSocket, ws_clients};

/// A note long enough to be compressed both ways (Node's ws compresses from 1 KiB).
fn long_note(n: u8) -> Value {
    let content = "compressible relay traffic, mostly JSON; ".repeat(60);
    serde_json::from_str(&note(n, &content).to_json()).expect("event JSON")
}

/// Checks one client's answer: it negotiated permessage-deflate, its event was accepted and
/// came back whole.
fn check(client: &str, answer: &Value, event: &Value) {
    let extensions = answer["extensions"].as_str().unwrap_or_default();
    assert!(
        extensions.contains("permessage-deflate"),
        "{client} negotiated no compression: {answer}"
    );
    assert_eq!(answer["ok"][2], json!(true), "{client}: {answer}");
    assert_eq!(&answer["event"], event, "{client}: {answer}");
}

async fn compressed_messages(relay: &Relay) -> f64 {
    metric(&relay.addr, "starling_compression_messages_total", &[]).await
}

#[tokio::test]
async fn python_node_and_chromium_negotiate_deflate_and_read_compressed_events() {
    let relay = Relay::start(&[]);
    let url = relay.url();
    let (python_event, node_event, browser_event) = (long_note(1), long_note(2), long_note(3));
    let python = {
        let (url, event) = (url.clone(), python_event.clone());
        tokio::task::spawn_blocking(move || ws_clients::python(&url, &event))
    };
    let node = {
        let (url, event) = (url.clone(), node_event.clone());
        tokio::task::spawn_blocking(move || ws_clients::node(&url, &event))
    };
    let browser = ws_clients::chromium(&url, &browser_event).await;
    check("chromium", &browser, &browser_event);
    check("python", &python.await.unwrap(), &python_event);
    check("node", &node.await.unwrap(), &node_event);

    // Each got its stored event compressed, and it came to less than it was.
    assert!(compressed_messages(&relay).await >= 3.0);
    let before = metric(&relay.addr, "starling_compression_input_bytes_total", &[]).await;
    let after = metric(&relay.addr, "starling_compression_output_bytes_total", &[]).await;
    assert!(after * 3.0 < before, "{before} bytes compressed to {after}");
}

#[tokio::test]
async fn a_client_without_the_extension_gets_plain_frames() {
    let relay = Relay::start(&[]);
    let event = long_note(4);
    let mut writer = Client::connect(&relay.url()).await;
    writer.send(json!(["EVENT", event])).await;
    assert_eq!(writer.recv().await[2], json!(true));

    let mut plain = RawSocket::connect(&relay.addr, None).await;
    assert_eq!(plain.extensions, None);
    let req = json!(["REQ", "s", {"ids": [event["id"]]}]).to_string();
    plain.send_frame(0x81, req.as_bytes()).await;
    let frame = plain.next_message().await.expect("the event");
    assert!(!frame.rsv1, "a compressed frame nobody negotiated");
    let message: Value = serde_json::from_str(&frame.text()).unwrap();
    assert_eq!(message[2], event);
    assert_eq!(compressed_messages(&relay).await, 0.0);

    // The same event to a client that offers deflate comes compressed.
    let mut deflating = RawSocket::connect(&relay.addr, Some("permessage-deflate")).await;
    assert_eq!(
        deflating.extensions.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    deflating.send_compressed(req.as_bytes()).await;
    let frame = deflating.next_message().await.expect("the event");
    assert!(frame.rsv1 && frame.payload.len() * 3 < frame.text().len());
    let message: Value = serde_json::from_str(&frame.text()).unwrap();
    assert_eq!(message[2], event);
    // A short answer stays plain (under --compression-min-bytes).
    let eose = deflating.next_message().await.expect("EOSE");
    assert!(!eose.rsv1);
    assert_eq!(eose.text(), r#"["EOSE","s"]"#);
    assert_eq!(compressed_messages(&relay).await, 1.0);
}

#[tokio::test]
async fn compression_can_be_turned_off() {
    let relay = Relay::start(&["--websocket-compression", "false"]);
    let socket = RawSocket::connect(&relay.addr, Some("permessage-deflate")).await;
    assert_eq!(socket.extensions, None);
    let document = crate::support::http::nip11_document(&relay.addr).await;
    assert_eq!(
        document["starling"]["limits"]["websocket_compression"],
        false
    );
}

#[tokio::test]
async fn a_compression_bomb_is_closed_with_1009_before_it_is_inflated() {
    let relay = Relay::start(&["--max-message-bytes", "65536"]);
    let mut bomb = RawSocket::connect(&relay.addr, Some("permessage-deflate")).await;
    let huge = format!(r##"["REQ","b",{{"#t":["{}"]}}]"##, "a".repeat(4 << 20));
    let mut compressed = Vec::new();
    starling::websocket::deflate::compress(huge.as_bytes(), &mut compressed);
    assert!(compressed.len() < 65536, "{}", compressed.len());
    bomb.send_frame(0xc1, &compressed).await;
    assert_eq!(bomb.close_code().await, Some(1009));
    let refused = metric(
        &relay.addr,
        "starling_compression_inflate_refused_total",
        &[],
    )
    .await;
    assert_eq!(refused, 1.0);
}

#[tokio::test]
async fn bad_reserved_bits_are_closed_with_1002() {
    let relay = Relay::start(&[]);
    let req = br#"["REQ","r",{}]"#;
    // RSV2, RSV3, RSV1 on a continuation, RSV1 on a ping, RSV1 without negotiation.
    for (offer, frames) in [
        (Some("permessage-deflate"), vec![(0xa1, &req[..])]),
        (Some("permessage-deflate"), vec![(0x91, &req[..])]),
        (
            Some("permessage-deflate"),
            vec![(0x01, &req[..4]), (0xc0, &req[4..])],
        ),
        (Some("permessage-deflate"), vec![(0xc9, &b"x"[..])]),
        (None, vec![(0xc1, &req[..])]),
    ] {
        let mut socket = RawSocket::connect(&relay.addr, offer).await;
        for (first, payload) in &frames {
            socket.send_frame(*first, payload).await;
        }
        assert_eq!(
            socket.close_code().await,
            Some(1002),
            "{offer:?} {frames:?}"
        );
    }
}
