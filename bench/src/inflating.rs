//! A subscriber's socket that counts the bytes the relay sends and, when the connection
//! offers permessage-deflate, inflates the relay's compressed frames before tungstenite
//! (which knows no extension) reads them.
//!
//! The stream sits under tokio-tungstenite: the handshake passes through unchanged (with the
//! offer added to the request), then each frame from the relay is parsed, a compressed one
//! (RSV1) inflated with Starling's own `websocket::deflate` and handed on as a plain frame.
//! It offers no context takeover, so each message inflates on its own.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
};

use anyhow::Context as _;
use bytes::{Buf, BufMut, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        client::IntoClientRequest,
        handshake::client::{Request, Response},
    },
};

/// What the bench offers: permessage-deflate with no context takeover on either side.
pub const OFFER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Largest message inflated.
const MAX_MESSAGE: usize = 64 << 20;

/// A subscriber's connection through an [`Inflating`] stream.
pub type Ws = WebSocketStream<Inflating>;

/// Connects to `url` (ws://), offering permessage-deflate if `compress`, counting the bytes
/// read from the socket after the handshake in `read`.
pub async fn connect(url: &str, compress: bool, read: Arc<AtomicU64>) -> anyhow::Result<Ws> {
    let stream = TcpStream::connect(crate::load::address(url)?).await?;
    stream.set_nodelay(true)?;
    let request = request(url, compress)?;
    let stream = Inflating {
        socket: stream,
        raw: BytesMut::new(),
        plain: BytesMut::new(),
        upgraded: false,
        read,
    };
    let (ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    ensure_agreed(url, &response, compress)?;
    Ok(ws)
}

/// The handshake request for `url`, offering permessage-deflate if `compress`.
pub fn request(url: &str, compress: bool) -> anyhow::Result<Request> {
    let mut request = url.into_client_request()?;
    if compress {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Extensions", OFFER.parse()?);
    }
    Ok(request)
}

/// Fails unless the relay agreed to permessage-deflate exactly when it was offered.
pub fn ensure_agreed(url: &str, response: &Response, offered: bool) -> anyhow::Result<()> {
    let agreed = response.headers().contains_key("sec-websocket-extensions");
    anyhow::ensure!(
        agreed == offered,
        "{url}: permessage-deflate offered: {offered}, agreed: {agreed}"
    );
    Ok(())
}

/// The socket, with the relay's frames made plain.
pub struct Inflating {
    socket: TcpStream,
    /// Bytes read and not yet made plain.
    raw: BytesMut,
    /// Plain bytes for tungstenite.
    plain: BytesMut,
    /// The HTTP response has been passed on: what follows is frames.
    upgraded: bool,
    read: Arc<AtomicU64>,
}

impl Inflating {
    /// Moves what is complete in `raw` to `plain`.
    fn convert(&mut self) -> io::Result<()> {
        if !self.upgraded {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(());
            };
            self.plain.put(self.raw.split_to(end + 4));
            self.upgraded = true;
            self.read
                .fetch_add(self.raw.len() as u64, Ordering::Relaxed);
        }
        while let Some((first, at, len)) = header(&self.raw) {
            if self.raw.len() < at + len {
                break;
            }
            if first & 0x40 == 0 {
                self.plain.put(self.raw.split_to(at + len));
                continue;
            }
            self.raw.advance(at);
            let payload = self.raw.split_to(len);
            let inflated = starling::websocket::deflate::inflate(payload.to_vec(), MAX_MESSAGE)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let first = first & !0x40;
            self.plain.put_u8(first);
            starling::websocket::frame::write_length(&mut self.plain, 0, inflated.len());
            self.plain.put_slice(&inflated);
        }
        Ok(())
    }
}

/// A server frame's first byte, header length and payload length, once the header is whole.
fn header(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let [first, second, ..] = *buf else {
        return None;
    };
    match second & 0x7f {
        126 => Some((
            first,
            4,
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
        )),
        127 => Some((
            first,
            10,
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
        )),
        short => Some((first, 2, short as usize)),
    }
}

impl AsyncRead for Inflating {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.plain.is_empty() {
                let n = self.plain.len().min(out.remaining());
                out.put_slice(&self.plain.split_to(n));
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut buf = ReadBuf::new(&mut chunk);
            let this = &mut *self;
            ready!(Pin::new(&mut this.socket).poll_read(cx, &mut buf))?;
            let filled = buf.filled();
            if filled.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if this.upgraded {
                this.read.fetch_add(filled.len() as u64, Ordering::Relaxed);
            }
            this.raw.extend_from_slice(filled);
            this.convert()?;
        }
    }
}

impl AsyncWrite for Inflating {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}
