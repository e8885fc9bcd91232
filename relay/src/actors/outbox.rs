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

use bytes::Bytes;
use opentelemetry::KeyValue;

use crate::{
    metrics::Metrics,
    websocket::{CloseReason, Session},
};

/// One item for the socket.
#[derive(Debug)]
enum Outgoing {
    /// A text frame: a relay message.
    Text(String),
    /// The relay's ping; its payload is the latest one queued.
    Ping,
    /// The answer to the client's latest ping.
    Pong,
    /// The close frame; nothing follows it.
    Close(Option<CloseReason>),
}

/// What a control frame costs in the byte bound besides its payload.
const CONTROL_FRAME_BYTES: usize = 16;

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
    /// The bound on `bytes` (kept here rather than in every clone: each subscription holds
    /// one, and its size counts in the subscription's).
    max_bytes: usize,
    /// Text frames queued since the connection opened.
    frames: u64,
    closed: bool,
    /// The payload of the relay's ping waiting in the queue, if one is.
    ping: Option<Bytes>,
    /// The payload of the pong waiting in the queue, if one is.
    pong: Option<Bytes>,
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
}

impl Outbox {
    /// An empty queue that holds at most `max_bytes` of text.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            state: Rc::new(RefCell::new(State {
                max_bytes,
                ..State::default()
            })),
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
        if state.bytes + text.len() > state.max_bytes {
            self.overflow(&mut state);
            return Err(Refused::Full);
        }
        state.bytes += text.len();
        state.frames += 1;
        state.items.push_back(Outgoing::Text(text));
        wake(&mut state.pump);
        Ok(())
    }

    /// Queues the relay's ping with `payload`. Control frames count in the byte bound; a
    /// ping still waiting to be sent takes the new payload instead of queueing another.
    pub fn push_ping(&self, payload: Bytes) -> Result<(), Refused> {
        self.push_control(payload, |state| &mut state.ping, Outgoing::Ping)
    }

    /// Queues the answer to the client's ping with `payload`. A pong still waiting to be
    /// sent answers the latest ping instead (RFC 6455 allows answering only the latest), so
    /// a client that pings without reading cannot make the queue grow.
    pub fn push_pong(&self, payload: Bytes) -> Result<(), Refused> {
        self.push_control(payload, |state| &mut state.pong, Outgoing::Pong)
    }

    fn push_control(
        &self,
        payload: Bytes,
        slot: impl Fn(&mut State) -> &mut Option<Bytes>,
        item: Outgoing,
    ) -> Result<(), Refused> {
        let mut state = self.state.borrow_mut();
        if state.overflowed {
            return Err(Refused::Full);
        }
        if state.closed {
            return Err(Refused::Closed);
        }
        let cost = payload.len() + CONTROL_FRAME_BYTES;
        let waiting = slot(&mut state)
            .as_ref()
            .map(|p| p.len() + CONTROL_FRAME_BYTES);
        let bytes = state.bytes - waiting.unwrap_or(0) + cost;
        if bytes > state.max_bytes {
            self.overflow(&mut state);
            return Err(Refused::Full);
        }
        state.bytes = bytes;
        *slot(&mut state) = Some(payload);
        if waiting.is_none() {
            state.items.push_back(item);
            wake(&mut state.pump);
        }
        Ok(())
    }

    /// Marks the queue overflowed for good and wakes whoever waits on it.
    fn overflow(&self, state: &mut State) {
        state.overflowed = true;
        state.closed = true;
        wake(&mut state.pump);
        wake(&mut state.owner);
        state.drained.drain(..).for_each(Waker::wake);
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

    /// Bytes queued (text and control frames) and not yet handed to the socket.
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

    /// The next frame for the socket, with the payload of a control frame.
    async fn next(&self) -> Option<(Outgoing, Bytes)> {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if state.overflowed {
                return Poll::Ready(None);
            }
            match state.items.pop_front() {
                Some(item) => {
                    let payload = match &item {
                        Outgoing::Text(text) => {
                            state.bytes -= text.len();
                            Bytes::new()
                        }
                        Outgoing::Ping | Outgoing::Pong => {
                            let slot = match item {
                                Outgoing::Ping => &mut state.ping,
                                _ => &mut state.pong,
                            };
                            let payload = slot.take().unwrap_or_default();
                            state.bytes -= payload.len() + CONTROL_FRAME_BYTES;
                            payload
                        }
                        Outgoing::Close(_) => Bytes::new(),
                    };
                    if !state.drained.is_empty() {
                        state.drained.drain(..).for_each(Waker::wake);
                    }
                    Poll::Ready(Some((item, payload)))
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
        let mut sent = SentCounts::default();
        while let Some((item, payload)) = self.next().await {
            let written = match item {
                Outgoing::Text(text) => {
                    sent.count(&text);
                    if sent.total >= SENT_COUNTS_FLUSH || self.state.borrow().items.is_empty() {
                        sent.flush(&metrics);
                    }
                    session.text(text).await
                }
                Outgoing::Ping => session.ping(&payload).await,
                Outgoing::Pong => session.pong(&payload).await,
                Outgoing::Close(reason) => {
                    let _ = session.close(reason).await;
                    return;
                }
            };
            if written.is_err() {
                break;
            }
        }
        sent.flush(&metrics);
        self.close(None);
    }
}

/// The relay messages a pump counts in `starling_messages_sent_total`, by type; "other"
/// last.
const MESSAGE_TYPES: [&str; 10] = [
    "EVENT", "OK", "EOSE", "CLOSED", "NOTICE", "COUNT", "AUTH", "NEG-MSG", "NEG-ERR", "other",
];

/// Messages counted before the pump adds them to the metric, at the latest.
const SENT_COUNTS_FLUSH: u32 = 64;

/// Messages sent and not yet added to the metric: adding one with its attribute costs a
/// hash of the attribute set, as much as the rest of sending a small event, so the pump adds
/// them in bunches, whenever its queue runs empty or [`SENT_COUNTS_FLUSH`] are waiting.
#[derive(Default)]
struct SentCounts {
    by_type: [u32; MESSAGE_TYPES.len()],
    total: u32,
}

impl SentCounts {
    fn count(&mut self, frame: &str) {
        self.by_type[message_type(frame)] += 1;
        self.total += 1;
    }

    fn flush(&mut self, metrics: &Metrics) {
        if self.total == 0 {
            return;
        }
        for (kind, count) in MESSAGE_TYPES.iter().zip(&mut self.by_type) {
            if *count > 0 {
                let label = [KeyValue::new("type", *kind)];
                metrics.messages_sent.add(u64::from(*count), &label);
                *count = 0;
            }
        }
        self.total = 0;
    }
}

/// The verb of a relay message (the first string of the array), as a place in
/// [`MESSAGE_TYPES`].
fn message_type(frame: &str) -> usize {
    let verb = frame
        .get(2..)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default();
    let last = MESSAGE_TYPES.len() - 1;
    MESSAGE_TYPES[..last]
        .iter()
        .position(|t| *t == verb)
        .unwrap_or(last)
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(w) = waker.take() {
        w.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_count_and_a_waiting_pong_answers_only_the_latest_ping() {
        let outbox = Outbox::new(120);
        outbox.push_pong(Bytes::from_static(b"one")).unwrap();
        outbox.push_pong(Bytes::from_static(b"second")).unwrap();
        outbox.push_ping(Bytes::from_static(b"12345678")).unwrap();
        assert_eq!(outbox.state.borrow().items.len(), 2);
        assert_eq!(outbox.queued_bytes(), 6 + 8 + 2 * CONTROL_FRAME_BYTES);
        outbox.push("x".repeat(60)).unwrap();
        // Pings without end would pass the bound: the client is not reading.
        assert_eq!(
            outbox.push_pong(Bytes::from(vec![0; 40])),
            Err(Refused::Full)
        );
        assert_eq!(outbox.push("y".to_string()), Err(Refused::Full));
        assert!(outbox.state.borrow().overflowed);
    }
}
