//! The Subscription actor: one per `REQ`.
//!
//! It registers its filters in the thread's live index first, then reads the stored events
//! page by page ([`StoredEvents`]), each page admitted by the node in its turn and within
//! the connection's budgets ([`Node::read_page`]), sends them and `EOSE`, and then forwards
//! live events. Live events that arrive while the stored ones are being sent are held back
//! and sent after `EOSE`, except those the stored results already held, so the client
//! misses nothing and sees nothing twice. When the subscription stops (`CLOSE`, a replacing
//! `REQ`, the connection's end) its page in progress is cancelled in the store.
//!
//! A connection keeps its subscriptions in a [`SubscriptionTable`] it shares with them, so
//! that one which ends by itself (an error, a client that does not read) leaves the table
//! and no longer counts against the connection's limits.

use std::{cell::RefCell, collections::HashMap, rc::Rc, sync::Arc, time::Duration};

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use opentelemetry::KeyValue;
use tracing::Instrument;

use super::{gate::Permit, outbox::Outbox};
use crate::{
    hashing::FastSet,
    live::{
        LiveEvent,
        thread::{Dismissed, dismiss_here, register_here, unregister_here},
    },
    node::{Asker, Node, Refusal, SubscriptionPlace},
    nostr::{Event, Filter, Prefix, Reason, VerifiedEvent, message::relay},
    policy::{self, privacy::Readers},
    store::{Cancel, StoreError, StoredEvents},
};

/// Live events held back while stored events are sent; past this the subscription ends.
const MAX_HELD_BACK: usize = 10_000;

/// Queue depth at which sending stored events pauses until the client reads.
const STORED_HIGH_WATER: usize = 256 * 1024;

/// The answer to a query that ran past the store's time limit.
pub const TOO_LONG: &str = "the query took too long; narrow its filters";

/// Why sending stored events ended early.
enum End {
    /// Tell the client with `CLOSED`.
    Closed(Reason),
    /// The outbox refused a frame (the connection is closing, or its client is not reading,
    /// which the connection learns from the outbox itself), or the subscription went away.
    Quietly,
}

/// A connection's open subscriptions by the client's id for them, shared with the
/// subscriptions (all on the connection's thread). It holds no address of them: it stops
/// one through the thread's live index, which has its address anyway.
#[derive(Clone, Default)]
pub struct SubscriptionTable(Rc<RefCell<HashMap<Arc<str>, OpenSubscription>>>);

/// A subscription in the table: its unique key and the bytes its filters hold.
type OpenSubscription = (u64, usize);

impl SubscriptionTable {
    /// How many are open.
    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }

    /// Bytes the filters of the open subscriptions hold.
    pub fn filter_bytes(&self) -> usize {
        self.0.borrow().values().map(|(_, bytes)| bytes).sum()
    }

    /// Records a subscription opened under `key` (by [`Subscription::open`], which
    /// registered it in the live index), whose filters hold `bytes`.
    pub fn insert(&self, sub_id: Arc<str>, key: u64, bytes: usize) {
        self.0.borrow_mut().insert(sub_id, (key, bytes));
    }

    /// Stops the subscription with this id, if one is open; whether there was one.
    pub fn stop(&self, sub_id: &str) -> bool {
        let removed = self.0.borrow_mut().remove(sub_id);
        removed
            .map(|(key, _)| dismiss_here::<Subscription>(key))
            .is_some()
    }

    /// Stops every subscription.
    pub fn stop_all(&self) {
        let all: Vec<_> = self.0.borrow_mut().drain().collect();
        for (_, (key, _)) in all {
            dismiss_here::<Subscription>(key);
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

/// What a subscription holds while it sends stored events, and drops at `EOSE`.
struct Reading {
    /// Raised when the subscription stops, to stop its reading.
    cancel: Cancel,
    /// Counts the stored query against the connection's requests in progress.
    _permit: Permit,
    /// Live events that arrived meanwhile, sent after `EOSE`.
    held: Vec<Arc<VerifiedEvent>>,
}

/// How recent (by `created_at`) a stored event must be for the subscription to watch for it
/// arriving live after `EOSE`, and how long it watches: well past the bus's delay, and the
/// catch-up after a lost envelope.
const LATE_ARRIVALS: Duration = Duration::from_secs(60);

/// One open subscription of a connection.
///
/// It holds only what its live phase needs; what the reading of stored events needs is
/// boxed apart and dropped at `EOSE`. Its size counts in every open subscription's memory
/// (the actor's task holds it inline), so keep it small.
pub struct Subscription {
    key: u64,
    sub_id: Arc<str>,
    table: SubscriptionTable,
    outbox: Outbox,
    /// The subscription's place among the node's; the node with it.
    place: SubscriptionPlace,
    /// Who may read the private events its filters could match (none: they cannot).
    readers: Option<Readers>,
    /// Until `EOSE`: the reading of stored events.
    reading: Option<Box<Reading>>,
    /// After `EOSE`: the recent stored events already sent. One stored on another node can
    /// be read from the store before the bus brings it here, and must not go out twice; they
    /// are forgotten after [`LATE_ARRIVALS`].
    recent: Option<Box<FastSet<[u8; 32]>>>,
}

/// The actor's task holds the actor inline in a cell that tokio aligns to 128 bytes; at
/// 72 bytes or less the cell of a subscription takes 512 bytes, one more byte makes it 640.
const _: () = assert!(std::mem::size_of::<Subscription>() <= 72);

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
    /// Its place among the node's subscriptions.
    pub place: SubscriptionPlace,
    /// The connection as the node's query scheduler knows it.
    pub asker: Rc<Asker>,
    /// Held until `EOSE`.
    pub permit: Permit,
    /// The `req` span, child of the connection's (or the connection's, when request spans
    /// are off).
    pub span: tracing::Span,
    /// Who may read the private events the filters could match, if they could match any.
    pub readers: Option<Readers>,
}

impl Subscription {
    /// Starts a subscription: it registers its filters in the live index as it starts, then
    /// sends the stored events (in `parts.span`, which only that reading keeps) and goes
    /// live.
    pub fn open(parts: SubscriptionParts) {
        Self::create(|ctx| {
            register_here(parts.key, Arc::clone(&parts.filters), ctx.address());
            let cancel = Cancel::default();
            let subscription = Self {
                key: parts.key,
                sub_id: parts.sub_id,
                table: parts.table,
                outbox: parts.outbox,
                place: parts.place,
                readers: parts.readers,
                reading: Some(Box::new(Reading {
                    cancel: cancel.clone(),
                    _permit: parts.permit,
                    held: Vec::new(),
                })),
                recent: None,
            };
            let stored = subscription
                .send_stored(parts.filters, parts.asker, cancel, parts.span)
                .into_actor(&subscription)
                .map(|result, sub, ctx| match result {
                    Ok(plan) => sub.go_live(&plan, ctx),
                    Err(End::Closed(reason)) => sub.end_with(reason, ctx),
                    Err(End::Quietly) => ctx.stop(),
                });
            ctx.spawn(stored);
            subscription
        });
    }

    /// The reading of the stored events, in a span of its own under `req`.
    fn send_stored(
        &self,
        filters: Arc<[Filter]>,
        asker: Rc<Asker>,
        cancel: Cancel,
        req: tracing::Span,
    ) -> impl Future<Output = Result<StoredEvents, End>> + use<> {
        let plan = StoredEvents::new(filters);
        let span = crate::telemetry::or_parent(tracing::debug_span!(parent: &req, "stream"), &req);
        send_stored(
            Arc::clone(self.node()),
            asker,
            cancel,
            self.outbox.clone(),
            Arc::clone(&self.sub_id),
            (plan, self.readers.clone()),
            req,
        )
        .instrument(span)
    }

    fn node(&self) -> &Arc<Node> {
        self.place.node()
    }

    fn may_read(&self, event: &Event) -> bool {
        self.readers
            .as_ref()
            .is_none_or(|readers| readers.may_read(event))
    }

    fn end_with(&mut self, reason: Reason, ctx: &mut Context<Self>) {
        let _ = self.outbox.push(relay::closed(&self.sub_id, &reason));
        ctx.stop();
    }

    /// After `EOSE`: sends held-back events the stored results did not contain.
    fn go_live(&mut self, stored: &StoredEvents, ctx: &mut Context<Self>) {
        let Some(reading) = self.reading.take() else {
            return;
        };
        let since = crate::policy::now().saturating_sub(LATE_ARRIVALS.as_secs());
        let recent = stored.sent_since(crate::store::to_sql_int(since));
        if !recent.is_empty() {
            self.recent = Some(Box::new(recent));
            ctx.run_later(LATE_ARRIVALS, |subscription, _| subscription.recent = None);
        }
        for event in reading.held {
            if stored.sent(&event.event.id) || !self.may_read(&event.event) {
                continue;
            }
            self.node().metrics().deliveries.add(1, &[]);
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

/// Sends the stored events of `plan`, page by page, then `EOSE`.
async fn send_stored(
    node: Arc<Node>,
    asker: Rc<Asker>,
    cancel: Cancel,
    outbox: Outbox,
    sub_id: Arc<str>,
    (mut plan, readers): (StoredEvents, Option<Readers>),
    req: tracing::Span,
) -> Result<StoredEvents, End> {
    let now = policy::now();
    loop {
        while let Some(row) = plan.next_row() {
            if readers
                .as_ref()
                .is_some_and(|r| !r.may_read_json(&row.json))
            {
                continue;
            }
            outbox.drained_below(STORED_HIGH_WATER).await;
            outbox
                .push(relay::event(&sub_id, &row.json))
                .map_err(|_| End::Quietly)?;
        }
        plan.slice_pages(asker.is_heavy());
        let Some(request) = plan.wanted() else {
            break;
        };
        let filters = Arc::clone(plan.filters());
        let (rows, took) = node
            .read_page(&asker, filters, request, now, &cancel)
            .instrument(crate::telemetry::or_parent(
                tracing::debug_span!(parent: &req, "query"),
                &req,
            ))
            .await
            .map_err(|refusal| refused(&node, refusal))?;
        plan.timed(request, took);
        plan.fill(request, rows);
    }
    outbox
        .push(relay::eose(&sub_id))
        .map_err(|_| End::Quietly)?;
    Ok(plan)
}

/// How a refused read ends the subscription.
fn refused(node: &Node, refusal: Refusal) -> End {
    match refusal {
        Refusal::Cancelled => End::Quietly,
        Refusal::OverBudget => {
            let label = KeyValue::new("limit", "store-time");
            node.metrics().rate_limited.add(1, &[label]);
            End::Closed(Reason::new(
                Prefix::RateLimited,
                "this connection has used its store time; try again in a while",
            ))
        }
        Refusal::Store(StoreError::TimedOut) => End::Closed(Reason::error(TOO_LONG)),
        Refusal::Store(error) => {
            tracing::warn!(%error, "could not read stored events");
            End::Closed(Reason::error("could not read stored events"))
        }
    }
}

impl Actor for Subscription {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.node().metrics().subscriptions_open.add(1, &[]);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(reading) = &self.reading {
            reading.cancel.cancel();
        }
        self.node().metrics().subscriptions_open.add(-1, &[]);
        unregister_here::<Self>(self.key);
        self.table.forget(&self.sub_id, self.key);
    }
}

impl Handler<LiveEvent> for Subscription {
    type Result = ();

    fn handle(&mut self, msg: LiveEvent, ctx: &mut Context<Self>) {
        if !self.may_read(&msg.0.event) {
            return;
        }
        if let Some(reading) = &mut self.reading {
            if reading.held.len() < MAX_HELD_BACK {
                reading.held.push(msg.0);
            } else {
                self.end_with(
                    Reason::error("too many new events while sending stored ones; subscribe again"),
                    ctx,
                );
            }
            return;
        }
        if let Some(recent) = &mut self.recent
            && recent.remove(&msg.0.event.id)
        {
            return;
        }
        self.node().metrics().deliveries.add(1, &[]);
        if self
            .outbox
            .push(relay::event(&self.sub_id, &msg.0.json))
            .is_err()
        {
            ctx.stop();
        }
    }
}

impl Handler<Dismissed> for Subscription {
    type Result = ();

    fn handle(&mut self, _: Dismissed, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
