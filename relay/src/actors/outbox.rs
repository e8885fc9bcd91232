//! The one outbound queue of a connection, and the task that drains it into the socket.
//!
//! Everything a connection sends — answers, stored events, live events, pings, the close
//! frame — goes through its [`Outbox`], so writes are never concurrent. The queue is bounded
//! in bytes: a push that would pass the bound fails and marks the outbox overflowed, which
//! is how a client that does not read is noticed (whoever pushed) and dropped by its
//! connection ([`Outbox::overflowed`]), and why memory never grows without bound.

use std::{
    cell::RefCell,
    collections::VecDeque,
    future::poll_fn,
    rc::Rc,
    sync::Arc,
    task::{Poll, Waker},
};

use actix_ws::{CloseReason, Session};
use bytes::Bytes;
use opentelemetry::KeyValue;

use crate::metrics::Metrics;

/// One item for the socket.
#[derive(Debug)]
pub enum Outgoing {
    /// A text frame: a relay message.
    Text(String),
    /// A ping from the relay.
    Ping,
    /// The answer to a client's ping.
    Pong(Bytes),
    /// The close frame; nothing follows it.
    Close(Option<CloseReason>),
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue would pass its byte bound: the client is not reading fast enough.
    Full,
    /// The connection is closing.
    Closed,
}

#[derive(Default)]
struct State {
    items: VecDeque<Outgoing>,
    bytes: usize,
    /// Text frames queued since the connection opened.
    frames: u64,
    closed: bool,
    /// A push found the queue full: the client is not reading. Nothing more is sent.
    overflowed: bool,
    /// The pump waiting for an item.
    pump: Option<Waker>,
    /// The owner waiting to learn of an overflow.
    owner: Option<Waker>,
    /// Producers waiting for the queue to drain below a mark.
    drained: Vec<Waker>,
}

/// A connection's outbound queue. Clones share the queue; it lives on one worker thread.
#[derive(Clone)]
pub struct Outbox {
    state: Rc<RefCell<State>>,
    max_bytes: usize,
}

impl Outbox {
    /// An empty queue that holds at most `max_bytes` of text.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            state: Rc::default(),
            max_bytes,
        }
    }

    /// Queues a text frame, or fails if that would pass the byte bound (the outbox is then
    /// overflowed for good) or the queue is closed.
    pub fn push(&self, text: String) -> Result<(), Refused> {
        let mut state = self.state.borrow_mut();
        if state.overflowed {
            return Err(Refused::Full);
        }
        if state.closed {
            return Err(Refused::Closed);
        }
        if state.bytes + text.len() > self.max_bytes {
            state.overflowed = true;
            state.closed = true;
            wake(&mut state.pump);
            wake(&mut state.owner);
            state.drained.drain(..).for_each(Waker::wake);
            return Err(Refused::Full);
        }
        state.bytes += text.len();
        state.frames += 1;
        state.items.push_back(Outgoing::Text(text));
        wake(&mut state.pump);
        Ok(())
    }

    /// Queues a control frame (ping or pong); they are small and not counted.
    pub fn push_control(&self, item: Outgoing) {
        let mut state = self.state.borrow_mut();
        if !state.closed {
            state.items.push_back(item);
            wake(&mut state.pump);
        }
    }

    /// Queues the close frame after what is already queued; later pushes fail.
    pub fn close(&self, reason: Option<CloseReason>) {
        let mut state = self.state.borrow_mut();
        if !state.closed {
            state.closed = true;
            state.items.push_back(Outgoing::Close(reason));
            wake(&mut state.pump);
            state.drained.drain(..).for_each(Waker::wake);
        }
    }

    /// Text frames queued since the connection opened.
    pub fn frames_queued(&self) -> u64 {
        self.state.borrow().frames
    }

    /// Bytes of text queued and not yet handed to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.state.borrow().bytes
    }

    /// Resolves once a push has found the queue full: the client is not reading and must be
    /// dropped. The connection owning the outbox waits on this.
    pub async fn overflowed(&self) {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if state.overflowed {
                Poll::Ready(())
            } else {
                state.owner = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Waits until fewer than `mark` bytes are queued, or the queue is closed. Producers of
    /// bulk output (stored events) call this between frames so that they never overflow a
    /// client that is reading.
    pub async fn drained_below(&self, mark: usize) {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if state.closed || state.bytes < mark {
                Poll::Ready(())
            } else {
                state.drained.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    async fn next(&self) -> Option<Outgoing> {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if state.overflowed {
                return Poll::Ready(None);
            }
            match state.items.pop_front() {
                Some(item) => {
                    if let Outgoing::Text(text) = &item {
                        state.bytes -= text.len();
                        if !state.drained.is_empty() {
                            state.drained.drain(..).for_each(Waker::wake);
                        }
                    }
                    Poll::Ready(Some(item))
                }
                None if state.closed => Poll::Ready(None),
                None => {
                    state.pump = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Writes queued items to the socket until the close frame, an overflow (what is queued
    /// is dropped) or a failed write, counting relay messages by type.
    pub async fn pump(self, mut session: Session, metrics: Arc<Metrics>) {
        while let Some(item) = self.next().await {
            let written = match item {
                Outgoing::Text(text) => {
                    metrics
                        .messages_sent
                        .add(1, &[KeyValue::new("type", message_type(&text))]);
                    session.text(text).await
                }
                Outgoing::Ping => session.ping(b"").await,
                Outgoing::Pong(payload) => session.pong(&payload).await,
                Outgoing::Close(reason) => {
                    let _ = session.close(reason).await;
                    return;
                }
            };
            if written.is_err() {
                break;
            }
        }
        self.close(None);
    }
}

/// The verb of a relay message: the first string of the array.
fn message_type(frame: &str) -> &'static str {
    const TYPES: [&str; 6] = ["EVENT", "OK", "EOSE", "CLOSED", "NOTICE", "COUNT"];
    let verb = frame
        .get(2..)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default();
    TYPES.into_iter().find(|t| *t == verb).unwrap_or("other")
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(w) = waker.take() {
        w.wake();
    }
}
