//! The Autobahn testsuite's cases, reimplemented against the relay with a client written
//! from RFC 6455 ([`RawSocket`]): Autobahn's own `wstest` is Python 2 and cannot be
//! installed. The relay is not an echo server, so where a case expects its message echoed,
//! the message is a `REQ` of the case's size and the relay's `EOSE` (or `CLOSED`) for it
//! shows it was read whole.
//!
//! Covered: 1.1/1.2 (text and binary at every length boundary), 2.x (pings and pongs),
//! 3.x (reserved bits), 4.x (reserved opcodes), 5.x (fragmentation), 6.x (UTF-8 split across
//! frames; invalid UTF-8 is answered with a NOTICE, the relay's policy, not closed with
//! 1007), 7.x (close handshake, codes and reasons), 9.1/9.3 (large and fragmented messages
//! within `--max-message-bytes`), 12.x (compressed messages of many sizes, fragmented,
//! answered compressed) and 13.x (the permessage-deflate offers and parameters).

use serde_json::Value;

use crate::support::{
    Relay,
    raw_ws::{RawFrame, RawSocket},
};

/// Frames to send, each its first byte and its payload.
type Frames = Vec<(u8, &'static [u8])>;

/// A REQ of exactly `len` bytes (at least 24) with subscription id `s`.
fn req_of(len: usize) -> Vec<u8> {
    let head = r##"["REQ","s",{"#t":[""##;
    let tail = r#""]}]"#;
    let pad = len - head.len() - tail.len();
    format!("{head}{}{tail}", "a".repeat(pad)).into_bytes()
}

/// Whether `frame` answers the REQ `s` (`EOSE`, or `CLOSED` when a limit refused it).
fn answers_req(frame: &RawFrame) -> bool {
    let message: Value = serde_json::from_str(&frame.text()).unwrap_or_default();
    (message[0] == "EOSE" || message[0] == "CLOSED") && message[1] == "s"
}

async fn connect(relay: &Relay) -> RawSocket {
    RawSocket::connect(&relay.addr, None).await
}

async fn deflating(relay: &Relay) -> RawSocket {
    let socket = RawSocket::connect(&relay.addr, Some("permessage-deflate")).await;
    assert!(socket.extensions.is_some());
    socket
}

/// The next frame that is not the relay's AUTH challenge or ping.
async fn answer(socket: &mut RawSocket, case: &str) -> RawFrame {
    let frame = socket
        .next_message()
        .await
        .unwrap_or_else(|| panic!("{case}: connection closed"));
    assert!(frame.fin, "{case}: the relay sends whole messages");
    frame
}

async fn expect_req_answered(socket: &mut RawSocket, case: &str) {
    let frame = answer(socket, case).await;
    assert!(answers_req(&frame), "{case}: {frame:?}");
}

async fn expect_close(socket: &mut RawSocket, code: u16, case: &str) {
    assert_eq!(socket.close_code().await, Some(code), "{case}");
    assert!(
        socket.ends().await,
        "{case}: the relay keeps the TCP connection open"
    );
}

#[tokio::test]
async fn framing_1_and_pings_2() {
    let relay = Relay::start(&[]);
    let mut socket = connect(&relay).await;
    // 1.1.x: text at each length boundary, in one frame.
    for len in [125, 126, 127, 128, 65535, 65536] {
        socket.send_frame(0x81, &req_of(len)).await;
        expect_req_answered(&mut socket, &format!("1.1 len {len}")).await;
    }
    // 1.2.x: binary messages are read whole (and answered with a NOTICE).
    for len in [0, 125, 126, 65535, 65536] {
        socket.send_frame(0x82, &vec![0xfe; len]).await;
        let frame = answer(&mut socket, "1.2").await;
        assert!(
            frame.text().starts_with(r#"["NOTICE","invalid: binary"#),
            "1.2 len {len}"
        );
    }
    // 2.1-2.4: pings with no, text, binary and 125-byte payloads get their pongs.
    for payload in [
        &b""[..],
        b"Hello, world!",
        &[0x00, 0xff, 0xfe, 0xfd],
        &[0xfe; 125],
    ] {
        socket.send_frame(0x89, payload).await;
        let pong = answer(&mut socket, "2.x").await;
        assert_eq!(
            (pong.opcode, pong.payload.as_slice()),
            (0xa, payload),
            "2.x"
        );
    }
    // 2.6: a ping written a byte at a time.
    for byte in crate::support::raw_ws::encode(0x89, b"chopped") {
        socket.send_bytes(&[byte]).await;
    }
    let pong = answer(&mut socket, "2.6").await;
    assert_eq!(pong.payload, b"chopped");
    // 2.7/2.8: unsolicited pongs are ignored; 2.9: then a ping is answered.
    socket.send_frame(0x8a, b"").await;
    socket.send_frame(0x8a, b"unsolicited").await;
    socket.send_frame(0x89, b"after").await;
    let pong = answer(&mut socket, "2.9").await;
    assert_eq!(pong.payload, b"after");
    // 2.10: ten pings; the answer ends with the last one's pong.
    for n in 0..10 {
        socket
            .send_frame(0x89, format!("ping {n}").as_bytes())
            .await;
    }
    loop {
        let pong = answer(&mut socket, "2.10").await;
        assert_eq!(pong.opcode, 0xa);
        if pong.payload == b"ping 9" {
            break;
        }
    }
    // 2.5: a ping of 126 bytes.
    socket.send_frame(0x89, &[0; 126]).await;
    expect_close(&mut socket, 1002, "2.5").await;
}

#[tokio::test]
async fn reserved_bits_3_and_opcodes_4_close_with_1002() {
    let relay = Relay::start(&[]);
    let req = req_of(40);
    let cases: Vec<(&str, u8, &[u8])> = vec![
        ("3.1 text RSV1", 0xc1, &req),
        ("3.2 text RSV2", 0xa1, &req),
        ("3.3 text RSV1+RSV2", 0xe1, &req),
        ("3.4 text RSV3", 0x91, &req),
        ("3.5 binary RSV1+RSV3", 0xd2, b"\x00\x01"),
        ("3.6 ping RSV2+RSV3", 0xb9, b"x"),
        ("3.7 close all RSV", 0xf8, b""),
        ("4.1.1 opcode 3", 0x83, b""),
        ("4.1.2 opcode 4 with payload", 0x84, b"reserved"),
        ("4.1.5 opcode 7", 0x87, b""),
        ("4.2.1 opcode 0xB", 0x8b, b""),
        ("4.2.2 opcode 0xC with payload", 0x8c, b"reserved"),
        ("4.2.5 opcode 0xF", 0x8f, b""),
    ];
    for (case, first, payload) in cases {
        let mut socket = connect(&relay).await;
        // 3.2, 4.1.3 and the like: a valid message first; its answer may come before the
        // close or not at all (its query still running), nothing else may.
        socket.send_frame(0x81, &req).await;
        socket.send_frame(first, payload).await;
        socket.send_frame(0x89, b"after").await;
        loop {
            let frame = socket.next_frame().await.expect(case);
            if frame.opcode == 8 {
                assert_eq!(frame.close_code(), Some(1002), "{case}");
                break;
            }
            assert!(frame.opcode == 1, "{case}: {frame:?}");
        }
        assert!(socket.ends().await, "{case}");
    }
}

#[tokio::test]
async fn fragmentation_5_and_utf8_6() {
    let relay = Relay::start(&[]);
    let req = req_of(300);
    let mut socket = connect(&relay).await;
    // 5.3/5.4: a text message in two and in many fragments.
    socket.send_frame(0x01, &req[..100]).await;
    socket.send_frame(0x80, &req[100..]).await;
    expect_req_answered(&mut socket, "5.3").await;
    for (i, chunk) in req.chunks(7).enumerate() {
        let fin = if (i + 1) * 7 >= req.len() { 0x80 } else { 0 };
        let opcode = if i == 0 { 0x01 } else { 0x00 };
        socket.send_frame(fin | opcode, chunk).await;
    }
    expect_req_answered(&mut socket, "5.4").await;
    // 5.6/5.19: a ping between fragments is answered at once.
    socket.send_frame(0x01, &req[..100]).await;
    socket.send_frame(0x89, b"between").await;
    let pong = answer(&mut socket, "5.6").await;
    assert_eq!(pong.payload, b"between");
    socket.send_frame(0x80, &req[100..]).await;
    expect_req_answered(&mut socket, "5.6").await;
    // 6.2-6.4: valid UTF-8 split inside code points across fragments.
    let text = r##"["REQ","s",{"#t":["κόσμε €𝄞 ünïcödé"]}]"##.as_bytes();
    for split in 1..text.len() {
        socket.send_frame(0x01, &text[..split]).await;
        socket.send_frame(0x80, &text[split..]).await;
        expect_req_answered(&mut socket, &format!("6.2 split at {split}")).await;
    }
    // 6.3: invalid UTF-8 is answered with a NOTICE (the relay's policy for bad input).
    socket
        .send_frame(
            0x81,
            b"[\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80]",
        )
        .await;
    let notice = answer(&mut socket, "6.3").await;
    assert!(notice.text().contains("UTF-8"), "6.3: {}", notice.text());

    let cases: Vec<(&str, Frames)> = vec![
        ("5.1 fragmented ping", vec![(0x09, b"a"), (0x80, b"b")]),
        ("5.2 fragmented pong", vec![(0x0a, b"a"), (0x80, b"b")]),
        ("5.9 continuation without a start", vec![(0x80, b"x")]),
        (
            "5.10 unfinished continuation without a start",
            vec![(0x00, b"x")],
        ),
        (
            "5.15 a new text inside a fragmented one",
            vec![(0x01, b"a"), (0x81, b"b")],
        ),
        ("5.18 two starts", vec![(0x01, b"a"), (0x01, b"b")]),
    ];
    for (case, frames) in cases {
        let mut socket = connect(&relay).await;
        for (first, payload) in &frames {
            socket.send_frame(*first, payload).await;
        }
        expect_close(&mut socket, 1002, case).await;
    }
}

#[tokio::test]
async fn close_handshake_7() {
    let relay = Relay::start(&[]);
    // 7.1.1, 7.3.3, 7.7.x: the relay answers a close with the same code and ends.
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ] {
        let mut socket = connect(&relay).await;
        socket.send_frame(0x88, &code.to_be_bytes()).await;
        // 7.1.3: what follows a close is not read.
        socket.send_frame(0x81, &req_of(40)).await;
        expect_close(&mut socket, code, &format!("7.7 code {code}")).await;
    }
    // 7.3.1: an empty close is answered with an empty close.
    let mut socket = connect(&relay).await;
    socket.send_frame(0x88, b"").await;
    assert_eq!(socket.close_code().await, Some(1005), "7.3.1");
    // 7.3.4/7.3.5: a reason, up to 123 bytes.
    for reason in ["bye".to_string(), "r".repeat(123)] {
        let mut socket = connect(&relay).await;
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        socket.send_frame(0x88, &payload).await;
        expect_close(&mut socket, 1000, "7.3.4").await;
    }
    let mut too_long = 1000u16.to_be_bytes().to_vec();
    too_long.extend_from_slice(&[b'r'; 124]);
    let mut bad_reason = 1000u16.to_be_bytes().to_vec();
    bad_reason.extend_from_slice(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80");
    let mut cases = vec![
        ("7.3.2 one byte".to_string(), vec![0x03]),
        ("7.3.6 reason too long".to_string(), too_long),
        ("7.5.1 reason not UTF-8".to_string(), bad_reason),
    ];
    // 7.9.x, 7.13.x: codes nobody may send.
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        cases.push((format!("7.9 code {code}"), code.to_be_bytes().to_vec()));
    }
    for (case, payload) in cases {
        let mut socket = connect(&relay).await;
        socket.send_frame(0x88, &payload).await;
        expect_close(&mut socket, 1002, &case).await;
    }
}

#[tokio::test]
async fn limits_9() {
    let relay = Relay::start(&["--max-message-bytes", "1048576"]);
    let mut socket = connect(&relay).await;
    // 9.1.x: large text messages in one frame.
    for len in [64 << 10, 256 << 10, 1 << 20] {
        socket.send_frame(0x81, &req_of(len)).await;
        expect_req_answered(&mut socket, &format!("9.1 {len}")).await;
    }
    // 9.3.x: a 256 KiB message in fragments of 64 B to 64 KiB.
    let req = req_of(256 << 10);
    for size in [64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10] {
        let mut bytes = Vec::new();
        for (i, chunk) in req.chunks(size).enumerate() {
            let fin = if (i + 1) * size >= req.len() { 0x80 } else { 0 };
            let opcode = if i == 0 { 0x01 } else { 0x00 };
            bytes.extend(crate::support::raw_ws::encode(fin | opcode, chunk));
        }
        socket.send_bytes(&bytes).await;
        expect_req_answered(&mut socket, &format!("9.3 fragments of {size}")).await;
    }
    // Past the bound: 1009, in one frame or in fragments.
    socket.send_frame(0x81, &req_of((1 << 20) + 1)).await;
    expect_close(&mut socket, 1009, "9.x over the bound").await;
}

#[tokio::test]
async fn compression_12_and_13() {
    let relay = Relay::start(&["--compression-min-bytes", "64"]);
    let mut socket = deflating(&relay).await;
    // 12.x: compressed messages of many sizes, read and answered.
    for len in [24, 64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10] {
        socket.send_compressed(&req_of(len)).await;
        expect_req_answered(&mut socket, &format!("12 len {len}")).await;
    }
    // 12.x: a compressed message in fragments (RSV1 on the first only), and with a ping
    // between them.
    let mut compressed = Vec::new();
    starling::websocket::deflate::compress(&req_of(8 << 10), &mut compressed);
    let half = compressed.len() / 2;
    socket.send_frame(0x41, &compressed[..half]).await;
    socket.send_frame(0x89, b"mid").await;
    assert_eq!(answer(&mut socket, "12 ping").await.payload, b"mid");
    socket.send_frame(0x80, &compressed[half..]).await;
    expect_req_answered(&mut socket, "12 fragmented").await;
    // Uncompressed messages still pass on a compressing connection.
    socket.send_frame(0x81, &req_of(300)).await;
    expect_req_answered(&mut socket, "12 plain").await;
    // The relay's long answers come compressed: a NOTICE for a binary message.
    socket.send_frame(0x82, b"binary").await;
    let notice = answer(&mut socket, "12 answer").await;
    assert!(
        notice.rsv1 && notice.text().starts_with(r#"["NOTICE""#),
        "{notice:?}"
    );
    // Data that does not inflate is a protocol error.
    socket.send_frame(0xc1, &[0xff; 16]).await;
    expect_close(&mut socket, 1002, "12 corrupt").await;

    // 13.x: offers and their answers.
    let plain = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    let window = format!("{plain}; server_max_window_bits=15");
    let cases: Vec<(&str, Option<&str>)> = vec![
        ("permessage-deflate", Some(plain)),
        (
            "permessage-deflate; client_no_context_takeover",
            Some(plain),
        ),
        (
            "permessage-deflate; server_no_context_takeover",
            Some(plain),
        ),
        ("permessage-deflate; client_max_window_bits", Some(plain)),
        ("permessage-deflate; client_max_window_bits=8", Some(plain)),
        ("permessage-deflate; client_max_window_bits=15", Some(plain)),
        (
            "permessage-deflate; server_max_window_bits=15",
            Some(&window),
        ),
        ("permessage-deflate; server_max_window_bits=9", None),
        (
            "permessage-deflate; server_max_window_bits=9, permessage-deflate",
            Some(plain),
        ),
        ("permessage-deflate; mystery", None),
        ("x-webkit-deflate-frame", None),
    ];
    for (offer, expected) in cases {
        let mut socket = RawSocket::connect(&relay.addr, Some(offer)).await;
        assert_eq!(socket.extensions.as_deref(), expected, "13: {offer}");
        if expected.is_some() {
            for len in [64, 4 << 10] {
                socket.send_compressed(&req_of(len)).await;
                expect_req_answered(&mut socket, offer).await;
            }
        }
    }
}
