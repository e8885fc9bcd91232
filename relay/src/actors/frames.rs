//! A client's WebSocket messages, whole: continuation frames joined up to a size bound, and
//! every way the stream can fail named as a [`FrameError`] the connection can act on.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use actix_ws::{CloseReason, Item, Message, ProtocolError};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;

/// One whole message from the client.
#[derive(Debug, PartialEq)]
pub enum Frame {
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
#[derive(Debug)]
pub enum FrameError {
    /// A frame or a message of continuations is larger than the bound (close with 1009).
    TooBig,
    /// A text message is not valid UTF-8 (the connection may go on).
    NotUtf8,
    /// The socket failed or ended: the client went away.
    Gone,
    /// The client broke the WebSocket protocol (close with 1002).
    Protocol(ProtocolError),
}

/// Whole messages from a stream of WebSocket frames.
pub struct Frames<S> {
    frames: S,
    max_bytes: usize,
    /// The continuation being joined: whether it is text, and its parts so far.
    partial: Option<(bool, BytesMut)>,
}

impl<S> Frames<S> {
    /// Joins the frames of `frames` into messages of at most `max_bytes`.
    pub fn new(frames: S, max_bytes: usize) -> Self {
        Self {
            frames,
            max_bytes,
            partial: None,
        }
    }

    /// Adds a part of a continuation to the message being joined; an error when it has no
    /// start or grows past the bound.
    fn join(&mut self, item: Item) -> Result<(), FrameError> {
        let bytes = match item {
            Item::FirstText(bytes) => {
                self.partial = Some((true, BytesMut::new()));
                bytes
            }
            Item::FirstBinary(bytes) => {
                self.partial = Some((false, BytesMut::new()));
                bytes
            }
            Item::Continue(bytes) | Item::Last(bytes) => bytes,
        };
        let Some((_, joined)) = self.partial.as_mut() else {
            return Err(FrameError::Protocol(ProtocolError::ContinuationNotStarted));
        };
        if joined.len() + bytes.len() > self.max_bytes {
            self.partial = None;
            return Err(FrameError::TooBig);
        }
        joined.extend_from_slice(&bytes);
        Ok(())
    }

    /// The message the last part of a continuation completes.
    fn finish(&mut self, last: Bytes) -> Result<Frame, FrameError> {
        self.join(Item::Last(last))?;
        let (text, joined) = self
            .partial
            .take()
            .ok_or(FrameError::Protocol(ProtocolError::ContinuationNotStarted))?;
        let joined = joined.freeze();
        if !text {
            return Ok(Frame::Binary(joined));
        }
        ByteString::try_from(joined)
            .map(Frame::Text)
            .map_err(|_| FrameError::NotUtf8)
    }
}

impl<S> Stream for Frames<S>
where
    S: Stream<Item = Result<Message, ProtocolError>> + Unpin,
{
    type Item = Result<Frame, FrameError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let Some(next) = ready!(Pin::new(&mut self.frames).poll_next(cx)) else {
                return Poll::Ready(None);
            };
            let message = match next {
                Ok(message) => message,
                Err(error) => return Poll::Ready(Some(Err(classify(error)))),
            };
            let frame = match message {
                Message::Text(text) => Ok(Frame::Text(text)),
                Message::Binary(bytes) => Ok(Frame::Binary(bytes)),
                Message::Ping(bytes) => Ok(Frame::Ping(bytes)),
                Message::Pong(bytes) => Ok(Frame::Pong(bytes)),
                Message::Close(reason) => Ok(Frame::Close(reason)),
                Message::Nop => continue,
                Message::Continuation(Item::Last(bytes)) => self.finish(bytes),
                Message::Continuation(item) => match self.join(item) {
                    Ok(()) => continue,
                    Err(refused) => Err(refused),
                },
            };
            return Poll::Ready(Some(frame));
        }
    }
}
/// What a failure of the frame stream means for the connection.
fn classify(error: ProtocolError) -> FrameError {
    match error {
        ProtocolError::Overflow => FrameError::TooBig,
        ProtocolError::Io(e) if is_utf8_error(&e) => FrameError::NotUtf8,
        ProtocolError::Io(e) if e.kind() == io::ErrorKind::InvalidData => {
            FrameError::Protocol(ProtocolError::Io(e))
        }
        ProtocolError::Io(_) => FrameError::Gone,
        other => FrameError::Protocol(other),
    }
}

/// Whether an I/O error carries the UTF-8 error of a text frame that is not valid UTF-8.
fn is_utf8_error(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<std::str::Utf8Error>())
}

#[cfg(test)]
mod tests {
    use futures_util::{StreamExt, stream};

    use super::*;

    async fn frames(items: Vec<Result<Message, ProtocolError>>, max: usize) -> Vec<String> {
        let stream = Frames::new(stream::iter(items), max);
        stream
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(|item| match item {
                Ok(Frame::Text(text)) => format!("text {text}"),
                Ok(Frame::Binary(bytes)) => format!("binary {}", bytes.len()),
                Ok(other) => format!("{other:?}"),
                Err(error) => format!("error {error:?}"),
            })
            .collect()
    }

    fn part(item: Item) -> Result<Message, ProtocolError> {
        Ok(Message::Continuation(item))
    }

    #[tokio::test]
    async fn joins_continuations_up_to_the_bound() {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let got = frames(
            vec![
                part(Item::FirstText(b("he"))),
                part(Item::Continue(b("ll"))),
                part(Item::Last(b("o"))),
                Ok(Message::Text("plain".into())),
                part(Item::FirstBinary(b("ab"))),
                part(Item::Last(b("c"))),
                part(Item::FirstText(b("12345"))),
                part(Item::Continue(b("6"))),
            ],
            5,
        )
        .await;
        assert_eq!(
            got,
            ["text hello", "text plain", "binary 3", "error TooBig"]
        );
    }

    #[tokio::test]
    async fn names_each_failure() {
        let not_utf8 = ByteString::try_from(Bytes::from_static(&[0xff])).unwrap_err();
        let got = frames(
            vec![
                part(Item::FirstText(Bytes::from_static(&[0xe2, 0x82]))),
                part(Item::Last(Bytes::from_static(&[0x28]))),
                Err(ProtocolError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    not_utf8,
                ))),
                Err(ProtocolError::Overflow),
                Err(ProtocolError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "Received a frame with non-zero reserved bits",
                ))),
                Err(ProtocolError::Io(io::Error::other("connection reset"))),
                part(Item::Continue(Bytes::new())),
            ],
            100,
        )
        .await;
        assert_eq!(got[0], "error NotUtf8");
        assert_eq!(got[1], "error NotUtf8");
        assert_eq!(got[2], "error TooBig");
        assert!(got[3].starts_with("error Protocol("), "{}", got[3]);
        assert_eq!(got[4], "error Gone");
        assert!(got[5].starts_with("error Protocol("), "{}", got[5]);
    }
}
