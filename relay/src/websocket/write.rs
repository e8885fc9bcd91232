//! What the relay sends: [`Session`] encodes frames (text compressed when permessage-deflate
//! was negotiated and the message is long enough; control frames never) into a channel, and
//! [`Body`] is the upgraded response's body that drains it into the socket.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use actix_http::ws::CloseReason;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use tokio::sync::{mpsc, oneshot};

use super::{
    frame::{self, MAX_CONTROL_PAYLOAD, OpCode},
    shared,
};
use crate::metrics::Metrics;

/// Frames encoded and not yet taken by the body, at most.
const CHANNEL_FRAMES: usize = 32;

/// The socket is closed: nothing more can be sent.
#[derive(Debug, thiserror::Error)]
#[error("the WebSocket is closed")]
pub struct Closed;

/// How text is compressed on a connection that negotiated permessage-deflate.
#[derive(Clone)]
pub(super) struct Compression {
    /// Shorter text is sent as it is.
    pub min_bytes: usize,
    pub metrics: Arc<Metrics>,
}

/// The sending half of a WebSocket: frames go to the response body in order.
pub struct Session {
    frames: mpsc::Sender<Bytes>,
    compression: Option<Compression>,
}

impl Session {
    /// A session writing to a new body.
    pub(super) fn new(compression: Option<Compression>) -> (Self, Body) {
        let (frames, receiver) = mpsc::channel(CHANNEL_FRAMES);
        let (gone, gone_receiver) = oneshot::channel();
        let body = Body {
            frames: receiver,
            gone: Some(gone),
            gone_receiver: Some(gone_receiver),
        };
        (
            Self {
                frames,
                compression,
            },
            body,
        )
    }

    /// Sends a text message.
    pub async fn text(&mut self, text: String) -> Result<(), Closed> {
        let frame = match &self.compression {
            Some(compression) if text.len() >= compression.min_bytes => {
                compressed_frame(&text, compression)
            }
            _ => {
                let mut out = BytesMut::with_capacity(text.len() + 10);
                frame::write_header(&mut out, false, OpCode::Text, text.len());
                out.put_slice(text.as_bytes());
                out.freeze()
            }
        };
        self.send(frame).await
    }

    /// Sends a ping (its payload cut to 125 bytes).
    pub async fn ping(&mut self, payload: &[u8]) -> Result<(), Closed> {
        self.send(control(OpCode::Ping, payload)).await
    }

    /// Sends a pong (its payload cut to 125 bytes).
    pub async fn pong(&mut self, payload: &[u8]) -> Result<(), Closed> {
        self.send(control(OpCode::Pong, payload)).await
    }

    /// Sends the close frame, with a code and reason (cut to fit a control frame) if given;
    /// the body ends after it.
    pub async fn close(mut self, reason: Option<CloseReason>) -> Result<(), Closed> {
        let mut payload = Vec::new();
        if let Some(reason) = reason {
            payload.extend_from_slice(&u16::from(reason.code).to_be_bytes());
            let mut description = reason.description.unwrap_or_default();
            let mut end = description.len().min(MAX_CONTROL_PAYLOAD - 2);
            while !description.is_char_boundary(end) {
                end -= 1;
            }
            description.truncate(end);
            payload.extend_from_slice(description.as_bytes());
        }
        self.send(control(OpCode::Close, &payload)).await
    }

    async fn send(&mut self, frame: Bytes) -> Result<(), Closed> {
        self.frames.send(frame).await.map_err(|_| Closed)
    }
}

/// A control frame with `payload` cut to 125 bytes.
fn control(opcode: OpCode, payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    let mut out = BytesMut::with_capacity(payload.len() + 2);
    frame::write_header(&mut out, false, opcode, payload.len());
    out.put_slice(payload);
    out.freeze()
}

/// A text frame with `text` compressed, counted in the compression metrics.
fn compressed_frame(text: &str, compression: &Compression) -> Bytes {
    let body = shared::compress_message(text);
    let metrics = &compression.metrics;
    metrics.compression_input_bytes.add(text.len() as u64, &[]);
    metrics.compression_output_bytes.add(body.len() as u64, &[]);
    metrics.messages_compressed.add(1, &[]);
    let mut out = BytesMut::with_capacity(body.len() + 10);
    frame::write_header(&mut out, true, OpCode::Text, body.len());
    out.put_slice(&body);
    out.freeze()
}

/// The upgraded response's body: the frames a [`Session`] sends, until the close frame (the
/// session is then gone) or the socket goes away.
pub struct Body {
    frames: mpsc::Receiver<Bytes>,
    /// Fired when the body is dropped, so that reading stops too.
    gone: Option<oneshot::Sender<()>>,
    gone_receiver: Option<oneshot::Receiver<()>>,
}

impl Body {
    /// The signal, for the reading half, that this body is gone.
    pub(super) fn gone_signal(&mut self) -> oneshot::Receiver<()> {
        self.gone_receiver
            .take()
            .unwrap_or_else(|| oneshot::channel().1)
    }
}

impl Stream for Body {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Poll::Ready(first) = self.frames.poll_recv(cx) else {
            return Poll::Pending;
        };
        let Some(first) = first else {
            return Poll::Ready(None);
        };
        // Join what else is waiting into one write.
        let mut joined: Option<BytesMut> = None;
        while let Poll::Ready(Some(next)) = self.frames.poll_recv(cx) {
            let buf = joined.get_or_insert_with(|| BytesMut::from(&first[..]));
            buf.put_slice(&next);
            if buf.len() > 64 * 1024 {
                break;
            }
        }
        Poll::Ready(Some(Ok(joined.map_or(first, BytesMut::freeze))))
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Some(gone) = self.gone.take() {
            let _ = gone.send(());
        }
    }
}
