//! A client's WebSocket messages, whole: frames read from the request's payload, unmasked,
//! continuations joined up to the size bound, compressed messages inflated (within the same
//! bound), text checked to be UTF-8, and every way the stream can fail named as a
//! [`ReadError`] the connection can act on.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use actix_http::{
    Payload,
    ws::{CloseCode, CloseReason},
};
use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;
use tokio::sync::oneshot;

use super::{
    deflate::{self, InflateError},
    frame::{self, FrameError, OpCode},
};

/// One whole message from the client.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(ByteString),
    /// A binary message.
    Binary(Bytes),
    /// A ping, to be answered with a pong carrying its payload.
    Ping(Bytes),
    /// A pong, with the payload of the ping it answers.
    Pong(Bytes),
    /// The client closes the connection.
    Close(Option<CloseReason>),
}

/// Why the stream yielded no message.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A frame or a message is larger than the bound (close with 1009).
    #[error("message too big")]
    TooBig,
    /// A compressed message inflates past the bound (close with 1009, counted apart).
    #[error("compressed message inflates past the bound")]
    Bomb,
    /// A text message is not valid UTF-8 (the connection may go on).
    #[error("text message is not valid UTF-8")]
    NotUtf8,
    /// The socket failed or ended: the client went away.
    #[error("the client went away")]
    Gone,
    /// The client broke the WebSocket protocol (close with 1002).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

impl From<FrameError> for ReadError {
    fn from(error: FrameError) -> Self {
        match error {
            FrameError::TooBig => Self::TooBig,
            FrameError::ReservedBits => Self::Protocol("reserved bits"),
            FrameError::UnknownOpcode(_) => Self::Protocol("unknown opcode"),
            FrameError::Unmasked => Self::Protocol("unmasked frame"),
            FrameError::BadControl => Self::Protocol("bad control frame"),
            FrameError::BadLength => Self::Protocol("bad length"),
        }
    }
}

/// The data message being joined from its frames.
struct Partial {
    text: bool,
    compressed: bool,
    bytes: BytesMut,
}

/// Whole messages from a client's bytes as they arrive, with no I/O: what
/// [`MessageStream`] reads from the socket goes through one.
pub struct Assembler {
    buf: BytesMut,
    max_bytes: usize,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    deflate: bool,
    partial: Option<Partial>,
}

impl Assembler {
    /// Messages of at most `max_bytes` (inflated); RSV1 allowed if `deflate` was negotiated.
    pub fn new(max_bytes: usize, deflate: bool) -> Self {
        Self {
            buf: BytesMut::new(),
            max_bytes,
            deflate,
            partial: None,
        }
    }

    /// Adds bytes read from the client.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message in what was pushed, if all of it has arrived. After an error
    /// other than [`ReadError::NotUtf8`] the connection must be closed.
    pub fn next_message(&mut self) -> Result<Option<Message>, ReadError> {
        loop {
            let Some(header) = frame::parse(&self.buf, self.deflate, self.max_bytes)? else {
                return Ok(None);
            };
            if self.buf.len() < header.header_len + header.payload_len {
                self.buf
                    .reserve(header.header_len + header.payload_len - self.buf.len());
                return Ok(None);
            }
            self.buf.advance(header.header_len);
            let mut payload = self.buf.split_to(header.payload_len);
            frame::apply_mask(&mut payload, header.mask);
            if let Some(message) =
                self.take(header.opcode, header.fin, header.compressed, payload)?
            {
                return Ok(Some(message));
            }
        }
    }

    /// Takes one frame's payload: a message when it completes one.
    fn take(
        &mut self,
        opcode: OpCode,
        fin: bool,
        compressed: bool,
        payload: BytesMut,
    ) -> Result<Option<Message>, ReadError> {
        match opcode {
            OpCode::Ping => Ok(Some(Message::Ping(payload.freeze()))),
            OpCode::Pong => Ok(Some(Message::Pong(payload.freeze()))),
            OpCode::Close => close_reason(&payload).map(|reason| Some(Message::Close(reason))),
            OpCode::Text | OpCode::Binary if self.partial.is_some() => {
                Err(ReadError::Protocol("new message inside a fragmented one"))
            }
            OpCode::Text | OpCode::Binary => {
                let partial = Partial {
                    text: opcode == OpCode::Text,
                    compressed,
                    bytes: payload,
                };
                if !fin {
                    self.partial = Some(partial);
                    return Ok(None);
                }
                self.finish(partial).map(Some)
            }
            OpCode::Continue => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(ReadError::Protocol("continuation without a start"));
                };
                if partial.bytes.len() + payload.len() > self.max_bytes {
                    return Err(ReadError::TooBig);
                }
                partial.bytes.extend_from_slice(&payload);
                if !fin {
                    return Ok(None);
                }
                let partial = self
                    .partial
                    .take()
                    .ok_or(ReadError::Protocol("no message"))?;
                self.finish(partial).map(Some)
            }
        }
    }

    /// The message a last frame completes: inflated if compressed, checked if text.
    fn finish(&self, partial: Partial) -> Result<Message, ReadError> {
        let bytes = if partial.compressed {
            let inflated = deflate::inflate(partial.bytes.into(), self.max_bytes);
            Bytes::from(inflated.map_err(|error| match error {
                InflateError::TooBig => ReadError::Bomb,
                InflateError::Corrupt => ReadError::Protocol("invalid compressed data"),
            })?)
        } else {
            partial.bytes.freeze()
        };
        if !partial.text {
            return Ok(Message::Binary(bytes));
        }
        ByteString::try_from(bytes)
            .map(Message::Text)
            .map_err(|_| ReadError::NotUtf8)
    }
}

/// The code and reason of a close frame's payload (RFC 6455 §5.5.1, §7.4).
fn close_reason(payload: &[u8]) -> Result<Option<CloseReason>, ReadError> {
    let (code, reason) = match payload {
        [] => return Ok(None),
        [_] => return Err(ReadError::Protocol("close frame of one byte")),
        [high, low, reason @ ..] => (u16::from_be_bytes([*high, *low]), reason),
    };
    let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
    if !valid {
        return Err(ReadError::Protocol("invalid close code"));
    }
    let description =
        std::str::from_utf8(reason).map_err(|_| ReadError::Protocol("close reason not UTF-8"))?;
    Ok(Some(CloseReason {
        code: CloseCode::from(code),
        description: (!description.is_empty()).then(|| description.to_string()),
    }))
}

/// Whole messages from the bytes of an upgraded request.
pub struct MessageStream {
    payload: Payload,
    /// Fires when the response's body is gone: nothing can be sent, so reading stops.
    body_gone: Option<oneshot::Receiver<()>>,
    assembler: Assembler,
    /// The stream has ended (an error or a close frame was yielded, or the socket ended).
    done: bool,
}

impl MessageStream {
    /// Messages of at most `max_bytes` (inflated) from `payload`.
    pub(super) fn new(
        payload: Payload,
        body_gone: oneshot::Receiver<()>,
        max_bytes: usize,
        deflate: bool,
    ) -> Self {
        Self {
            payload,
            body_gone: Some(body_gone),
            assembler: Assembler::new(max_bytes, deflate),
            done: false,
        }
    }
}

impl Stream for MessageStream {
    type Item = Result<Message, ReadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let mut ended = false;
        if let Some(gone) = this.body_gone.as_mut()
            && Pin::new(gone).poll(cx).is_ready()
        {
            this.body_gone = None;
            ended = true;
        }
        loop {
            match this.assembler.next_message() {
                Ok(Some(message)) => {
                    this.done = matches!(message, Message::Close(_));
                    return Poll::Ready(Some(Ok(message)));
                }
                Ok(None) => {}
                Err(ReadError::NotUtf8) => return Poll::Ready(Some(Err(ReadError::NotUtf8))),
                Err(error) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
            }
            if ended {
                this.done = true;
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => this.assembler.push(&bytes),
                Poll::Ready(Some(Err(_))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(ReadError::Gone)));
                }
                Poll::Ready(None) => ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        frame::client_frame(first, [9, 8, 7, 6], payload)
    }

    fn all(assembler: &mut Assembler) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match assembler.next_message() {
                Ok(Some(Message::Text(text))) => out.push(format!("text {text}")),
                Ok(Some(other)) => out.push(format!("{other:?}")),
                Ok(None) => return out,
                Err(error) => {
                    out.push(format!("error {error:?}"));
                    if !matches!(error, ReadError::NotUtf8) {
                        return out;
                    }
                }
            }
        }
    }

    #[test]
    fn joins_fragments_byte_by_byte_and_answers_control_frames_between_them() {
        let mut bytes = frame(0x01, b"he");
        bytes.extend(frame(0x89, b"p"));
        bytes.extend(frame(0x00, b"ll"));
        bytes.extend(frame(0x80, b"o"));
        bytes.extend(frame(0x82, b"ab"));
        let mut assembler = Assembler::new(100, false);
        let mut got = Vec::new();
        for byte in bytes {
            assembler.push(&[byte]);
            got.extend(all(&mut assembler));
        }
        assert_eq!(got, ["Ping(b\"p\")", "text hello", "Binary(b\"ab\")"]);
    }

    #[test]
    fn inflates_a_fragmented_compressed_message_within_the_bound() {
        let text = "[\"REQ\",\"s\",{}]".repeat(20);
        let mut compressed = Vec::new();
        deflate::compress(text.as_bytes(), &mut compressed);
        let (first, last) = compressed.split_at(compressed.len() / 2);
        let mut assembler = Assembler::new(1000, true);
        assembler.push(&frame(0x41, first));
        assembler.push(&frame(0x80, last));
        assert_eq!(all(&mut assembler), [format!("text {text}")]);
        let mut small = Assembler::new(100, true);
        small.push(&frame(0x41, first));
        small.push(&frame(0x80, last));
        assert_eq!(all(&mut small), ["error Bomb"]);
    }

    #[test]
    fn names_each_failure() {
        let cases: [(&[u8], bool, &str); 7] = [
            (&frame(0x81, &[0xff]), false, "error NotUtf8"),
            (&frame(0x81, &[0; 101]), false, "error TooBig"),
            (
                &frame(0x80, b"x"),
                false,
                "error Protocol(\"continuation without a start\")",
            ),
            (
                &frame(0xc1, b"x"),
                false,
                "error Protocol(\"reserved bits\")",
            ),
            (
                &frame(0x88, &[0x03]),
                false,
                "error Protocol(\"close frame of one byte\")",
            ),
            (
                &frame(0x88, &[0x03, 0xed]),
                false,
                "error Protocol(\"invalid close code\")",
            ),
            (
                &frame(0xc1, &[0xff; 8]),
                true,
                "error Protocol(\"invalid compressed data\")",
            ),
        ];
        for (bytes, deflate, want) in cases {
            let mut assembler = Assembler::new(100, deflate);
            assembler.push(bytes);
            assert_eq!(all(&mut assembler), [want], "{bytes:?}");
        }
        let mut assembler = Assembler::new(100, false);
        assembler.push(&frame(0x01, &[b'x'; 60]));
        assembler.push(&frame(0x80, &[b'x'; 60]));
        assert_eq!(all(&mut assembler), ["error TooBig"]);
        let mut assembler = Assembler::new(100, false);
        assembler.push(&frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e']));
        let close = all(&mut assembler);
        assert!(
            close[0].starts_with("Close(Some(CloseReason { code: Normal"),
            "{close:?}"
        );
    }
}
