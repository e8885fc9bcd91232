//! A subscriber for the unit tests of the live index: it registers one filter in its
//! thread's index when it starts and remembers the contents of the events it receives.

use std::sync::Arc;

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Message};

use super::{
    LiveEvent,
    thread::{Dismissed, register_here},
};
use crate::nostr::Filter;

/// The test subscriber.
pub struct Probe {
    key: u64,
    filter: &'static str,
    received: Vec<String>,
}

impl Probe {
    /// A probe registering `filter` (JSON) under `key` once started.
    pub fn new(key: u64, filter: &'static str) -> Self {
        Self {
            key,
            filter,
            received: Vec::new(),
        }
    }
}

impl Actor for Probe {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let filters: Arc<[Filter]> = [Filter::parse(self.filter).expect("a filter")].into();
        register_here(self.key, filters, ctx.address());
    }
}

impl Handler<LiveEvent> for Probe {
    type Result = ();
    fn handle(&mut self, msg: LiveEvent, _: &mut Context<Self>) {
        self.received.push(msg.0.event.content.clone());
    }
}

impl Handler<Dismissed> for Probe {
    type Result = ();
    fn handle(&mut self, _: Dismissed, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// What the probe received so far. Its answer comes after every message sent to the probe
/// before it, so once it answers, the probe has started and registered.
#[derive(Message)]
#[rtype(result = "Vec<String>")]
pub struct Received;

impl Handler<Received> for Probe {
    type Result = Vec<String>;
    fn handle(&mut self, _: Received, _: &mut Context<Self>) -> Vec<String> {
        self.received.clone()
    }
}
