//! A Nostr client over a real WebSocket, with a deadline on every wait.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use starling::nostr::Event;
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, http, protocol::CloseFrame},
};

use super::DEADLINE;

/// What the relay sent, as a test sees it.
#[derive(Debug)]
pub enum Received {
    /// A text frame, parsed as JSON.
    Json(Value),
    /// A close frame.
    Close(Option<CloseFrame>),
    /// The connection ended without a close frame (or with an error).
    Ended,
}

/// One WebSocket connection to a relay.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The NIP-42 challenge the relay sent, once seen (`AUTH` messages are kept here, not
    /// returned by [`Client::next`]).
    challenge: Option<String>,
}

impl Client {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio::time::timeout(DEADLINE, connect_async(url))
            .await
            .expect("connect timed out")
            .expect("connect");
        Self {
            ws,
            challenge: None,
        }
    }

    /// Connects to `url` over a socket with a small receive buffer, so that a client that
    /// does not read fills up quickly.
    pub async fn connect_with_small_buffer(url: &str, addr: &str) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("set buffer size");
        let stream = socket
            .connect(addr.parse().expect("socket address"))
            .await
            .expect("connect");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("handshake");
        Self {
            ws,
            challenge: None,
        }
    }

    /// Connects to `url` (at `addr`) from the loopback address `source`, with extra request
    /// headers; the error is the relay's refusal (an HTTP status) or a failed connection.
    pub async fn connect_from(
        url: &str,
        addr: &str,
        source: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        let from = format!("{source}:0").parse().expect("source address");
        socket.bind(from).expect("bind the source address");
        let connecting = async {
            let stream = socket
                .connect(addr.parse().expect("socket address"))
                .await?;
            let mut request = url.into_client_request()?;
            for (name, value) in headers {
                let name = http::HeaderName::from_bytes(name.as_bytes()).expect("header name");
                request
                    .headers_mut()
                    .append(name, value.parse().expect("header value"));
            }
            let (ws, _) =
                tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await?;
            Ok(Self {
                ws,
                challenge: None,
            })
        };
        tokio::time::timeout(DEADLINE, connecting)
            .await
            .expect("connect timed out")
    }

    /// The next raw WebSocket message (pings included), or `None` when the connection ends.
    pub async fn next_raw(&mut self) -> Option<Message> {
        tokio::time::timeout(DEADLINE, self.ws.next())
            .await
            .expect("timed out waiting for the relay")
            .and_then(Result::ok)
    }

    /// Sends a raw WebSocket message.
    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// Sends a JSON value as a text frame; false when the relay has shut the socket (as it
    /// does right after closing a flooding client).
    pub async fn try_send(&mut self, value: Value) -> bool {
        self.ws.send(Message::text(value.to_string())).await.is_ok()
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.send_raw(Message::text(text.into())).await;
    }

    /// Sends a JSON value as a text frame.
    pub async fn send(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// The next thing the relay sends, skipping pings; fails the test after the deadline.
    pub async fn next(&mut self) -> Received {
        loop {
            let item = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("timed out waiting for the relay");
            match item {
                Some(Ok(Message::Text(text))) => {
                    let value: Value =
                        serde_json::from_str(&text).expect("relay sent invalid JSON");
                    if value[0] == "AUTH"
                        && let Some(challenge) = value[1].as_str()
                    {
                        self.challenge = Some(challenge.to_string());
                        continue;
                    }
                    return Received::Json(value);
                }
                Some(Ok(Message::Close(frame))) => return Received::Close(frame),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("unexpected message {other:?}"),
                Some(Err(_)) | None => return Received::Ended,
            }
        }
    }

    /// The NIP-42 challenge of this connection, waiting for it if it has not come yet.
    pub async fn challenge(&mut self) -> String {
        while self.challenge.is_none() {
            let item = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("timed out waiting for the AUTH challenge");
            match item {
                Some(Ok(Message::Text(text))) => {
                    let value: Value =
                        serde_json::from_str(&text).expect("relay sent invalid JSON");
                    assert_eq!(
                        value[0], "AUTH",
                        "expected the AUTH challenge first, got {value}"
                    );
                    self.challenge = value[1].as_str().map(str::to_string);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected the AUTH challenge, got {other:?}"),
            }
        }
        self.challenge.clone().unwrap_or_default()
    }

    /// The next JSON message; fails if the connection closes first.
    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Received::Json(value) => value,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Publishes an event and returns the `OK` answer's (accepted, message).
    pub async fn publish(&mut self, event: &Event) -> (bool, String) {
        let json: Value = serde_json::from_str(&event.to_json()).expect("event JSON");
        self.send(json!(["EVENT", json])).await;
        self.ok_for(&event.id_hex()).await
    }

    /// Publishes and asserts the event was accepted.
    pub async fn publish_ok(&mut self, event: &Event) {
        let (accepted, message) = self.publish(event).await;
        assert!(accepted, "event refused: {message}");
    }

    /// Waits for the `OK` about event `id`, skipping other messages.
    pub async fn ok_for(&mut self, id: &str) -> (bool, String) {
        loop {
            let msg = self.recv().await;
            if msg[0] == "OK" && msg[1] == id {
                return (
                    msg[2].as_bool().expect("OK flag"),
                    msg[3].as_str().expect("OK message").to_string(),
                );
            }
        }
    }

    /// Waits for the `OK`s about every event in `ids`, in whatever order they come (a
    /// connection's events are answered as they commit, not in the order sent), skipping
    /// other messages. Returns (accepted, message) per id, in the order of `ids`.
    pub async fn oks_for(&mut self, ids: &[String]) -> Vec<(bool, String)> {
        let mut answers = std::collections::HashMap::new();
        while answers.len() < ids.len() {
            let msg = self.recv().await;
            if let (Some("OK"), Some(id)) = (msg[0].as_str(), msg[1].as_str())
                && ids.iter().any(|wanted| wanted == id)
            {
                let answer = (
                    msg[2].as_bool().expect("OK flag"),
                    msg[3].as_str().expect("OK message").to_string(),
                );
                answers.insert(id.to_string(), answer);
            }
        }
        ids.iter()
            .map(|id| answers.remove(id).expect("an answer per id"))
            .collect()
    }

    /// Sends a REQ and collects the stored events until `EOSE`; fails on `CLOSED`.
    pub async fn req(&mut self, sub: &str, filters: &[Value]) -> Vec<Value> {
        self.send_req(sub, filters).await;
        self.stored(sub).await
    }

    /// Sends a REQ without waiting.
    pub async fn send_req(&mut self, sub: &str, filters: &[Value]) {
        let mut msg = vec![json!("REQ"), json!(sub)];
        msg.extend(filters.iter().cloned());
        self.send(Value::Array(msg)).await;
    }

    /// Collects `EVENT`s of `sub` until its `EOSE`.
    pub async fn stored(&mut self, sub: &str) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let msg = self.recv().await;
            match msg[0].as_str() {
                Some("EVENT") if msg[1] == sub => events.push(msg[2].clone()),
                Some("EOSE") if msg[1] == sub => return events,
                Some("CLOSED") if msg[1] == sub => panic!("subscription closed: {msg}"),
                _ => {}
            }
        }
    }

    /// Expects the next message to be `CLOSED` for `sub` with a reason starting with `prefix`.
    pub async fn expect_closed(&mut self, sub: &str, prefix: &str) {
        let msg = self.recv().await;
        assert_eq!(
            (msg[0].as_str(), msg[1].as_str()),
            (Some("CLOSED"), Some(sub)),
            "{msg}"
        );
        assert!(
            msg[2].as_str().is_some_and(|r| r.starts_with(prefix)),
            "{msg}"
        );
    }

    /// Waits for the next `EVENT` of `sub`, skipping other messages.
    pub async fn live_event(&mut self, sub: &str) -> Value {
        loop {
            let msg = self.recv().await;
            if msg[0] == "EVENT" && msg[1] == sub {
                return msg[2].clone();
            }
        }
    }

    /// Ids of a list of events.
    pub fn ids(events: &[Value]) -> Vec<String> {
        events
            .iter()
            .map(|e| e["id"].as_str().expect("id").to_string())
            .collect()
    }

    /// Sends a COUNT and returns the count.
    pub async fn count(&mut self, sub: &str, filters: &[Value]) -> u64 {
        let mut msg = vec![json!("COUNT"), json!(sub)];
        msg.extend(filters.iter().cloned());
        self.send(Value::Array(msg)).await;
        let answer = self.recv().await;
        assert_eq!(answer[0], "COUNT", "{answer}");
        assert_eq!(answer[1], sub);
        answer[2]["count"].as_u64().expect("count")
    }
}

/// A TCP connection to the relay at `addr` that has sent a WebSocket upgrade request and
/// nothing else: for tests that write frames by hand and read the bytes the relay sends.
pub async fn raw_upgrade(addr: &str) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let handshake = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    socket
        .write_all(handshake.as_bytes())
        .await
        .expect("send the upgrade");
    socket
}
