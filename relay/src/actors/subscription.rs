//! The Subscription actor: one per `REQ`.
//!
//! It registers its filters in the thread's live index first, then queries the store, sends
//! the stored events and `EOSE`, and then forwards live events. Live events that arrive
//! while the stored ones are being sent are held back and sent after `EOSE`, except those
//! the stored results already held, so the client misses nothing and sees nothing twice.

use std::{collections::HashSet, sync::Arc};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, WrapFuture,
};
use tracing::Instrument;

use super::{
    connection::{Connection, SlowClient, SubscriptionEnded},
    gate::Permit,
    live_index::{Register, Unregister, send_to_local_index},
    outbox::{Outbox, Refused},
};
use crate::{
    metrics::Metrics,
    nostr::{Filter, Reason, VerifiedEvent, message::relay},
    policy,
    store::EventStore,
};

/// Live events held back while stored events are sent; past this the subscription ends.
const MAX_HELD_BACK: usize = 10_000;

/// Queue depth at which sending stored events pauses until the client reads.
const STORED_HIGH_WATER: usize = 256 * 1024;

/// A new event matching this subscription.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LiveEvent(pub Arc<VerifiedEvent>);

/// Ends the subscription (CLOSE, a replacing REQ, or the connection's end).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Why sending stored events ended early.
enum End {
    /// The query failed: tell the client with `CLOSED`.
    Failed(Reason),
    /// The outbox refused a frame.
    Refused(Refused),
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
    connection: Addr<Connection>,
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
    /// The owning connection.
    pub connection: Addr<Connection>,
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
            connection: parts.connection,
            outbox: parts.outbox,
            store: parts.store,
            phase: Phase::Stored(Vec::new()),
            permit: Some(parts.permit),
            metrics: parts.metrics,
            span: parts.span,
        }
    }

    /// Stops after a refused push; a full queue means the client is not reading.
    fn refused(&self, why: Refused, ctx: &mut Context<Self>) {
        if why == Refused::Full {
            self.connection.do_send(SlowClient);
        }
        ctx.stop();
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
            if let Err(why) = self.outbox.push(relay::event(&self.sub_id, &event.json)) {
                return self.refused(why, ctx);
            }
        }
    }
}

impl Actor for Subscription {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.metrics.subscriptions_open.add(1, &[]);
        send_to_local_index(Register {
            key: self.key,
            filters: Arc::clone(&self.filters),
            target: ctx.address(),
        });
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
                        .map_err(End::Refused)?;
                }
                outbox.push(relay::eose(&sub_id)).map_err(End::Refused)?;
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
                    Err(End::Refused(why)) => sub.refused(why, ctx),
                }),
        );
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.metrics.subscriptions_open.add(-1, &[]);
        send_to_local_index(Unregister(self.key));
        self.connection.do_send(SubscriptionEnded {
            sub_id: Arc::clone(&self.sub_id),
            key: self.key,
        });
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
                if let Err(why) = self.outbox.push(relay::event(&self.sub_id, &msg.0.json)) {
                    self.refused(why, ctx);
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
