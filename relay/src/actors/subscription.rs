//! The Subscription actor: one per `REQ`.
//!
//! It registers its filters in the thread's live index first, then queries the store, sends
//! the stored events and `EOSE`, and then forwards live events. Live events that arrive
//! while the stored ones are being sent are held back and sent after `EOSE`, except those
//! the stored results already held, so the client misses nothing and sees nothing twice.
//!
//! A connection keeps its subscriptions in a [`SubscriptionTable`] it shares with them, so
//! that one which ends by itself (an error, a client that does not read) leaves the table
//! and no longer counts against the connection's limit.

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    rc::Rc,
    sync::Arc,
};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, WrapFuture,
};
use tracing::Instrument;

use super::{gate::Permit, outbox::Outbox};
use crate::{
    live::{
        LiveEvent,
        thread::{register_here, unregister_here},
    },
    metrics::Metrics,
    nostr::{Filter, Reason, VerifiedEvent, message::relay},
    policy,
    store::EventStore,
};

/// Live events held back while stored events are sent; past this the subscription ends.
const MAX_HELD_BACK: usize = 10_000;

/// Queue depth at which sending stored events pauses until the client reads.
const STORED_HIGH_WATER: usize = 256 * 1024;

/// Ends the subscription (CLOSE, a replacing REQ, or the connection's end).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Why sending stored events ended early.
enum End {
    /// The query failed: tell the client with `CLOSED`.
    Failed(Reason),
    /// The outbox refused a frame: the connection is closing, or its client is not reading
    /// (which the connection learns from the outbox itself).
    Refused,
}

/// A connection's open subscriptions by the client's id for them, shared with the
/// subscriptions (all on the connection's thread).
#[derive(Clone, Default)]
pub struct SubscriptionTable(Rc<RefCell<HashMap<Arc<str>, OpenSubscription>>>);

/// A subscription in the table: its unique key and its address.
type OpenSubscription = (u64, Addr<Subscription>);

impl SubscriptionTable {
    /// How many are open.
    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }

    /// Records a subscription started under `key`.
    pub fn insert(&self, sub_id: Arc<str>, key: u64, subscription: Addr<Subscription>) {
        self.0.borrow_mut().insert(sub_id, (key, subscription));
    }

    /// Stops the subscription with this id, if one is open; whether there was one.
    pub fn stop(&self, sub_id: &str) -> bool {
        let removed = self.0.borrow_mut().remove(sub_id);
        removed
            .map(|(_, subscription)| subscription.do_send(Stop))
            .is_some()
    }

    /// Stops every subscription.
    pub fn stop_all(&self) {
        let all: Vec<_> = self.0.borrow_mut().drain().collect();
        for (_, (_, subscription)) in all {
            subscription.do_send(Stop);
        }
    }

    /// Forgets the subscription under `sub_id` if it is still the one of `key` (not a newer
    /// one with the same id).
    fn forget(&self, sub_id: &str, key: u64) {
        let mut table = self.0.borrow_mut();
        if table.get(sub_id).is_some_and(|(k, _)| *k == key) {
            table.remove(sub_id);
        }
    }
}

enum Phase {
    /// Sending stored events; live ones wait here.
    Stored(Vec<Arc<VerifiedEvent>>),
    /// `EOSE` sent; live events go straight out.
    Live,
}

/// One open subscription of a connection.
pub struct Subscription {
    key: u64,
    sub_id: Arc<str>,
    filters: Arc<[Filter]>,
    table: SubscriptionTable,
    outbox: Outbox,
    store: Arc<dyn EventStore>,
    phase: Phase,
    /// Counts the stored query against the connection's requests in progress.
    permit: Option<Permit>,
    metrics: Arc<Metrics>,
    span: tracing::Span,
}

/// What a subscription needs from its connection.
pub struct SubscriptionParts {
    /// Unique key in the live index.
    pub key: u64,
    /// The client's id for it.
    pub sub_id: Arc<str>,
    /// Filters, with limits already clamped.
    pub filters: Arc<[Filter]>,
    /// The owning connection's subscriptions, which this one leaves when it stops.
    pub table: SubscriptionTable,
    /// The connection's outbound queue.
    pub outbox: Outbox,
    /// The store to query.
    pub store: Arc<dyn EventStore>,
    /// Held until `EOSE`.
    pub permit: Permit,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
    /// The `req` span, child of the connection's.
    pub span: tracing::Span,
}

impl Subscription {
    /// A subscription ready to start.
    pub fn new(parts: SubscriptionParts) -> Self {
        Self {
            key: parts.key,
            sub_id: parts.sub_id,
            filters: parts.filters,
            table: parts.table,
            outbox: parts.outbox,
            store: parts.store,
            phase: Phase::Stored(Vec::new()),
            permit: Some(parts.permit),
            metrics: parts.metrics,
            span: parts.span,
        }
    }

    fn end_with(&mut self, reason: Reason, ctx: &mut Context<Self>) {
        let _ = self.outbox.push(relay::closed(&self.sub_id, &reason));
        ctx.stop();
    }

    /// After `EOSE`: sends held-back events the stored results did not contain.
    fn go_live(&mut self, sent: HashSet<String>, ctx: &mut Context<Self>) {
        self.permit = None;
        let Phase::Stored(held) = std::mem::replace(&mut self.phase, Phase::Live) else {
            return;
        };
        for event in held {
            if sent.contains(&event.event.id_hex()) {
                continue;
            }
            self.metrics.deliveries.add(1, &[]);
            if self
                .outbox
                .push(relay::event(&self.sub_id, &event.json))
                .is_err()
            {
                return ctx.stop();
            }
        }
    }
}

impl Actor for Subscription {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.metrics.subscriptions_open.add(1, &[]);
        register_here(self.key, Arc::clone(&self.filters), ctx.address());
        let store = Arc::clone(&self.store);
        let filters = Arc::clone(&self.filters);
        let outbox = self.outbox.clone();
        let sub_id = Arc::clone(&self.sub_id);
        let query = tracing::debug_span!(parent: &self.span, "query");
        let streaming = tracing::debug_span!(parent: &self.span, "stream");
        let stream = async move {
            let rows = store
                .query(filters, policy::now())
                .instrument(query)
                .await
                .map_err(|e| End::Failed(Reason::error(e.to_string())))?;
            async {
                let mut sent = HashSet::with_capacity(rows.len());
                for json in rows {
                    outbox.drained_below(STORED_HIGH_WATER).await;
                    // Stored JSON is canonical: it begins with {"id":"<64 hex>".
                    sent.insert(json.get(7..71).unwrap_or_default().to_string());
                    outbox
                        .push(relay::event(&sub_id, &json))
                        .map_err(|_| End::Refused)?;
                }
                outbox
                    .push(relay::eose(&sub_id))
                    .map_err(|_| End::Refused)?;
                Ok::<_, End>(sent)
            }
            .instrument(streaming)
            .await
        };
        ctx.spawn(
            stream
                .into_actor(self)
                .map(|result, sub, ctx| match result {
                    Ok(sent) => sub.go_live(sent, ctx),
                    Err(End::Failed(reason)) => sub.end_with(reason, ctx),
                    Err(End::Refused) => ctx.stop(),
                }),
        );
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.metrics.subscriptions_open.add(-1, &[]);
        unregister_here::<Self>(self.key);
        self.table.forget(&self.sub_id, self.key);
    }
}

impl Handler<LiveEvent> for Subscription {
    type Result = ();

    fn handle(&mut self, msg: LiveEvent, ctx: &mut Context<Self>) {
        match &mut self.phase {
            Phase::Stored(held) if held.len() < MAX_HELD_BACK => held.push(msg.0),
            Phase::Stored(_) => self.end_with(
                Reason::error("too many new events while sending stored ones; subscribe again"),
                ctx,
            ),
            Phase::Live => {
                self.metrics.deliveries.add(1, &[]);
                if self
                    .outbox
                    .push(relay::event(&self.sub_id, &msg.0.json))
                    .is_err()
                {
                    ctx.stop();
                }
            }
        }
    }
}

impl Handler<Stop> for Subscription {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
