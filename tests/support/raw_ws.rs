//! A WebSocket client written from RFC 6455 for tests that must send what ordinary clients
//! never do (reserved bits, bad opcodes, compression bombs, hand-made fragments) and see each
//! frame the relay sends as it is, RSV1 included.

use std::time::Duration;

use starling::websocket::{deflate, frame};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::DEADLINE;

/// One frame from the relay, as sent.
#[derive(Debug, Clone)]
pub struct RawFrame {
    /// FIN.
    pub fin: bool,
    /// RSV1: compressed.
    pub rsv1: bool,
    /// The opcode's four bits.
    pub opcode: u8,
    /// The payload as sent (compressed if `rsv1`).
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// The text of a text frame, inflated if compressed.
    pub fn text(&self) -> String {
        let bytes = if self.rsv1 {
            deflate::inflate(self.payload.clone(), 64 << 20).expect("inflate the relay's frame")
        } else {
            self.payload.clone()
        };
        String::from_utf8(bytes).expect("UTF-8 text")
    }
}

/// A connection, its handshake done.
pub struct RawSocket {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The `Sec-WebSocket-Extensions` the relay answered, if any.
    pub extensions: Option<String>,
}

impl RawSocket {
    /// Connects to `addr` (`host:port`) offering `extensions` (if any).
    pub async fn connect(addr: &str, extensions: Option<&str>) -> Self {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let offer = extensions
            .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0; 4096];
            let n = tokio::time::timeout(DEADLINE, stream.read(&mut chunk))
                .await
                .expect("handshake in time")
                .expect("read");
            assert!(n > 0, "connection closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "Sec-WebSocket-Accept of RFC 6455's example key: {head}"
        );
        let extensions = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_string())
        });
        buf.drain(..end);
        Self {
            stream,
            buf,
            extensions,
        }
    }

    /// Sends one masked frame with the given first byte (FIN, RSV bits, opcode).
    pub async fn send_frame(&mut self, first: u8, payload: &[u8]) {
        let _ = self.stream.write_all(&encode(first, payload)).await;
    }

    /// Sends bytes as they are.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Sends a text message compressed (RSV1) in one frame.
    pub async fn send_compressed(&mut self, text: &[u8]) {
        let mut body = Vec::new();
        deflate::compress(text, &mut body);
        self.send_frame(0xc1, &body).await;
    }

    /// The next frame from the relay, or `None` once the connection is closed.
    pub async fn next_frame(&mut self) -> Option<RawFrame> {
        loop {
            if let Some(frame) = self.parse() {
                return Some(frame);
            }
            let mut chunk = [0; 65536];
            let read = tokio::time::timeout(DEADLINE, self.stream.read(&mut chunk))
                .await
                .expect("a frame in time");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next data frame, skipping pings and the relay's AUTH challenge.
    pub async fn next_message(&mut self) -> Option<RawFrame> {
        loop {
            let frame = self.next_frame().await?;
            let auth = frame.opcode == 1 && frame.text().starts_with("[\"AUTH\"");
            if !(auth || frame.opcode == 9) {
                return Some(frame);
            }
        }
    }

    /// The close code the relay closes with, skipping what comes before; `None` if the
    /// connection ended without a close frame.
    pub async fn close_code(&mut self) -> Option<u16> {
        while let Some(frame) = self.next_frame().await {
            if frame.opcode == 8 {
                return Some(frame.close_code().unwrap_or(1005));
            }
        }
        None
    }

    /// Whether the relay ends the TCP connection (after its close frame) within the deadline.
    pub async fn ends(&mut self) -> bool {
        let mut chunk = [0; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    fn parse(&mut self) -> Option<RawFrame> {
        let [first, second, ..] = self.buf[..] else {
            return None;
        };
        assert_eq!(second & 0x80, 0, "server frames are not masked");
        let (len, at) = match second & 0x7f {
            126 => (
                u16::from_be_bytes([*self.buf.get(2)?, *self.buf.get(3)?]) as usize,
                4,
            ),
            127 => {
                let bytes: [u8; 8] = self.buf.get(2..10)?.try_into().ok()?;
                (u64::from_be_bytes(bytes) as usize, 10)
            }
            short => (short as usize, 2),
        };
        if self.buf.len() < at + len {
            return None;
        }
        let payload = self.buf[at..at + len].to_vec();
        self.buf.drain(..at + len);
        Some(RawFrame {
            fin: first & 0x80 != 0,
            rsv1: first & 0x40 != 0,
            opcode: first & 0x0f,
            payload,
        })
    }
}

/// A masked client frame.
pub fn encode(first: u8, payload: &[u8]) -> Vec<u8> {
    frame::client_frame(first, [0x37, 0xfa, 0x21, 0x3d], payload)
}
