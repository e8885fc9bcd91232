//! Backpressure on reading: a connection stops reading its socket while too many of its
//! requests are in progress, so a client that floods the relay slows itself down (TCP does
//! the rest) instead of queueing unbounded work. A connection can also pause its reading
//! for a while ([`Gate::pause`]): that is how a penalized client is slowed.

use std::{
    cell::RefCell,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use std::future::Future;

use futures_util::Stream;
use tokio::time::{Instant, Sleep};

struct State {
    in_progress: usize,
    limit: usize,
    reader: Option<Waker>,
    /// No reading before this instant.
    paused_until: Option<Instant>,
}

/// Counts a connection's requests in progress. Clones share the count.
#[derive(Clone)]
pub struct Gate(Rc<RefCell<State>>);

/// One request in progress; dropping it lets the connection read again.
pub struct Permit(Gate);

impl Gate {
    /// A gate that lets at most `limit` requests be in progress before reading pauses.
    pub fn new(limit: usize) -> Self {
        Self(Rc::new(RefCell::new(State {
            in_progress: 0,
            limit,
            reader: None,
            paused_until: None,
        })))
    }

    /// Stops reading for `pause` (from now), however many requests are in progress.
    pub fn pause(&self, pause: Duration) {
        self.0.borrow_mut().paused_until = Some(Instant::now() + pause);
    }

    /// Records a request in progress until the returned permit is dropped.
    pub fn enter(&self) -> Permit {
        self.0.borrow_mut().in_progress += 1;
        Permit(self.clone())
    }

    /// Wraps the connection's message stream so that it yields nothing while the gate is full.
    pub fn guard<S>(&self, stream: S) -> Gated<S> {
        Gated {
            stream,
            gate: self.clone(),
            sleep: None,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.0.0.borrow_mut();
        state.in_progress -= 1;
        if state.in_progress < state.limit
            && let Some(reader) = state.reader.take()
        {
            reader.wake();
        }
    }
}

/// A stream that pauses while its [`Gate`] is full or paused.
pub struct Gated<S> {
    stream: S,
    gate: Gate,
    /// The timer of a pause.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S: Stream + Unpin> Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let paused_until = self.gate.0.borrow().paused_until;
        if let Some(until) = paused_until {
            if Instant::now() < until {
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                sleep.as_mut().reset(until);
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            self.gate.0.borrow_mut().paused_until = None;
        }
        {
            let mut state = self.gate.0.borrow_mut();
            if state.in_progress >= state.limit {
                state.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        Pin::new(&mut self.stream).poll_next(cx)
    }
}
