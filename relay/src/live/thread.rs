//! One live index per worker thread: the actor owning that thread's [`FilterIndex`], the
//! messages it takes, and how an actor on the thread reaches it.
//!
//! Every subscription of a thread registers in the thread's index, so registering and
//! matching take no locks and no message crosses threads but the event itself. The index is
//! generic over the subscriber actor `A`, so this module knows nothing of subscriptions; the
//! thread-local holds the address of whichever indexes were started on this thread (in the
//! relay, one).

use std::{any::Any, cell::RefCell, sync::Arc};

use actix::{Actor, Addr, Context, Handler, Message};

use super::index::FilterIndex;
use crate::nostr::{Filter, VerifiedEvent};

/// A new event for a subscriber whose filters it matches.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LiveEvent(pub Arc<VerifiedEvent>);

/// Tells a subscriber to stop: the index it was registered in has forgotten it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Dismissed;

/// An actor that can receive live events from a thread's index, and be dismissed by it.
pub trait Subscriber:
    Actor<Context = Context<Self>> + Handler<LiveEvent> + Handler<Dismissed>
{
}

impl<A: Actor<Context = Context<A>> + Handler<LiveEvent> + Handler<Dismissed>> Subscriber for A {}

/// Registers a subscriber's filters under its key.
struct Register<A: Subscriber> {
    key: u64,
    filters: Arc<[Filter]>,
    target: Addr<A>,
}

impl<A: Subscriber> Message for Register<A> {
    type Result = ();
}

/// Removes the subscriber registered under a key.
#[derive(Message)]
#[rtype(result = "()")]
struct Unregister(u64);

/// Removes the subscriber registered under a key and sends it [`Dismissed`].
#[derive(Message)]
#[rtype(result = "()")]
struct Dismiss(u64);

/// A new event for every matching subscriber of this thread.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Deliver(pub Arc<VerifiedEvent>);

/// The actor owning one worker thread's index of subscribers of type `A`.
pub struct LiveIndex<A: Subscriber> {
    index: FilterIndex<Addr<A>>,
}

impl<A: Subscriber> Actor for LiveIndex<A> {
    type Context = Context<Self>;
}

impl<A: Subscriber> Handler<Register<A>> for LiveIndex<A> {
    type Result = ();
    fn handle(&mut self, msg: Register<A>, _: &mut Context<Self>) {
        self.index.insert(msg.key, msg.filters, msg.target);
    }
}

impl<A: Subscriber> Handler<Unregister> for LiveIndex<A> {
    type Result = ();
    fn handle(&mut self, msg: Unregister, _: &mut Context<Self>) {
        self.index.remove(msg.0);
    }
}

impl<A: Subscriber> Handler<Dismiss> for LiveIndex<A> {
    type Result = ();
    fn handle(&mut self, msg: Dismiss, _: &mut Context<Self>) {
        if let Some(target) = self.index.remove(msg.0) {
            target.do_send(Dismissed);
        }
    }
}

impl<A: Subscriber> Handler<Deliver> for LiveIndex<A> {
    type Result = ();
    fn handle(&mut self, msg: Deliver, _: &mut Context<Self>) {
        for target in self.index.matches(&msg.0.event) {
            target.do_send(LiveEvent(Arc::clone(&msg.0)));
        }
    }
}

thread_local! {
    /// The indexes started on this thread, each an `Addr<LiveIndex<A>>` for its own `A`.
    static THIS_THREAD: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// This thread's index of `A` subscribers, if it was started.
fn this_thread<A: Subscriber>() -> Option<Addr<LiveIndex<A>>> {
    THIS_THREAD.with(|indexes| {
        indexes
            .borrow()
            .iter()
            .find_map(|index| index.downcast_ref::<Addr<LiveIndex<A>>>().cloned())
    })
}

/// Starts this thread's index of `A` subscribers unless it runs already; returns it when it
/// was started now, so that the caller can attach it to the fan-out. Call it inside an actix
/// arbiter.
pub fn start_here<A: Subscriber>() -> Option<Addr<LiveIndex<A>>> {
    if this_thread::<A>().is_some() {
        return None;
    }
    let index = LiveIndex::<A> {
        index: FilterIndex::default(),
    }
    .start();
    THIS_THREAD.with(|indexes| indexes.borrow_mut().push(Box::new(index.clone())));
    Some(index)
}

/// Registers a subscriber in this thread's index of `A` subscribers, if it was started. A
/// subscriber runs on its connection's thread, whose index the connection started, so it
/// reaches its index this way without holding an address of it.
pub fn register_here<A: Subscriber>(key: u64, filters: Arc<[Filter]>, target: Addr<A>) {
    if let Some(index) = this_thread::<A>() {
        index.do_send(Register {
            key,
            filters,
            target,
        });
    }
}

/// Removes the subscriber under `key` from this thread's index of `A` subscribers.
pub fn unregister_here<A: Subscriber>(key: u64) {
    if let Some(index) = this_thread::<A>() {
        index.do_send(Unregister(key));
    }
}

/// Stops the subscriber under `key` of this thread's index of `A` subscribers: the index
/// forgets it and sends it [`Dismissed`]. Whoever stops subscribers this way needs no
/// address of them (a connection's table holds none, saving each subscription a mailbox
/// sender); a subscriber registered from this thread before the call is reached, since the
/// index takes its messages in order.
pub fn dismiss_here<A: Subscriber>(key: u64) {
    if let Some(index) = this_thread::<A>() {
        index.do_send(Dismiss(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        live::probe::{Probe, Received},
        nostr::{Keys, VerifiedEvent},
    };

    fn event(kind: u16, content: &str) -> Arc<VerifiedEvent> {
        let event = Keys::from_secret([9; 32])
            .unwrap()
            .sign(1, kind, vec![], content);
        Arc::new(VerifiedEvent::trusted(event))
    }

    #[actix::test]
    async fn one_index_a_thread_delivers_to_the_subscribers_registered_in_it() {
        let index = start_here::<Probe>().expect("the first start starts it");
        assert!(start_here::<Probe>().is_none(), "one index a thread");
        let probe = Probe::new(7, r#"{"kinds":[1]}"#).start();
        assert!(probe.send(Received).await.unwrap().is_empty());
        index.send(Deliver(event(1, "matches"))).await.unwrap();
        index.send(Deliver(event(2, "other kind"))).await.unwrap();
        assert_eq!(probe.send(Received).await.unwrap(), ["matches"]);
        unregister_here::<Probe>(7);
        index.send(Deliver(event(1, "after"))).await.unwrap();
        assert_eq!(probe.send(Received).await.unwrap(), ["matches"]);
    }

    #[actix::test]
    async fn a_dismissed_subscriber_leaves_the_index_and_stops() {
        let index = start_here::<Probe>().expect("the first start starts it");
        let probe = Probe::new(8, r#"{"kinds":[1]}"#).start();
        assert!(probe.send(Received).await.unwrap().is_empty());
        dismiss_here::<Probe>(8);
        // The index takes its messages in order: the dismissal is done once this is.
        index.send(Deliver(event(1, "after"))).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while probe.connected() {
            assert!(
                std::time::Instant::now() < deadline,
                "the probe did not stop"
            );
            tokio::task::yield_now().await;
        }
        assert!(
            probe.send(Received).await.is_err(),
            "a stopped probe answers nothing"
        );
    }
}
