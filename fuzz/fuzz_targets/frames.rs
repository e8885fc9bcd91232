//! Any bytes on a WebSocket connection decode into frames and whole messages without
//! panicking, and no whole message is larger than the bound.
#![no_main]

use std::{pin::pin, task::Context};

use actix_codec::Decoder;
use actix_http::ws::{Codec, Message, ProtocolError};
use bytes::BytesMut;
use futures_util::{Stream, stream};
use libfuzzer_sys::fuzz_target;
use starling::actors::frames::{Frame, Frames};

/// Most bytes a whole message may have in this target.
const MAX: usize = 4096;

// The input: a byte N, then N bytes saying where the rest is cut into reads, then the
// bytes a client sends.
fuzz_target!(|data: &[u8]| {
    let Some((&n, data)) = data.split_first() else {
        return;
    };
    let (cuts, bytes) = data.split_at(usize::from(n).min(data.len()));
    let mut codec = Codec::new().max_size(MAX);
    let mut buffer = BytesMut::new();
    let mut messages: Vec<Result<Message, ProtocolError>> = Vec::new();
    let mut rest = bytes;
    let mut cuts = cuts.iter();
    while !rest.is_empty() {
        let take = cuts.next().map_or(rest.len(), |c| usize::from(*c).clamp(1, rest.len()));
        buffer.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(frame)) => messages.push(Ok(frame_message(frame))),
                Ok(None) => break,
                Err(error) => {
                    messages.push(Err(error));
                    rest = &[];
                    break;
                }
            }
        }
    }
    let mut frames = pin!(Frames::new(stream::iter(messages), MAX));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    while let std::task::Poll::Ready(Some(item)) = frames.as_mut().poll_next(&mut cx) {
        if let Ok(Frame::Text(text)) = &item {
            assert!(text.len() <= MAX);
        }
        if let Ok(Frame::Binary(bytes)) = &item {
            assert!(bytes.len() <= MAX);
        }
    }
});

/// A decoded frame as the message actix-ws would hand on.
fn frame_message(frame: actix_http::ws::Frame) -> Message {
    use actix_http::ws::Frame as F;
    match frame {
        F::Text(bytes) => match bytestring_of(bytes) {
            Some(text) => Message::Text(text),
            None => Message::Nop,
        },
        F::Binary(bytes) => Message::Binary(bytes),
        F::Continuation(item) => Message::Continuation(item),
        F::Ping(bytes) => Message::Ping(bytes),
        F::Pong(bytes) => Message::Pong(bytes),
        F::Close(reason) => Message::Close(reason),
    }
}

fn bytestring_of(bytes: bytes::Bytes) -> Option<bytestring::ByteString> {
    bytestring::ByteString::try_from(bytes).ok()
}
