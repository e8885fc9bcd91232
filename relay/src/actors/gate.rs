//! Backpressure on reading: a connection stops reading its socket while too many of its
//! requests are in progress, so a client that floods the relay slows itself down (TCP does
//! the rest) instead of queueing unbounded work.

use std::{
    cell::RefCell,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
};

use futures_util::Stream;

struct State {
    in_progress: usize,
    limit: usize,
    reader: Option<Waker>,
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
        })))
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

/// A stream that pauses while its [`Gate`] is full.
pub struct Gated<S> {
    stream: S,
    gate: Gate,
}

impl<S: Stream + Unpin> Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
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
