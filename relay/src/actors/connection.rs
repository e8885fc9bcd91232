//! The Connection actor: one per WebSocket.
//!
//! It reads the client's frames (paused by its [`Gate`] while too much is in progress),
//! answers what it can at once, hands events to the node's ingest path and starts a
//! [`Subscription`] actor per `REQ`. Everything it sends goes through its [`Outbox`].
//!
//! Architecture invariant: nothing here awaits the store inside the message handler; store
//! work runs as a spawned future whose result comes back to the actor, so a slow database
//! slows one request, never the socket.

use std::{
    collections::HashMap,
    io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message,
    StreamHandler, WrapFuture,
};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, MessageStream, ProtocolError, Session};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{
    gate::Gate,
    live_index::LiveIndex,
    outbox::{Outbox, Outgoing, Refused},
    subscription::{Stop, Subscription, SubscriptionParts},
    writer::WriteResult,
};
use opentelemetry::KeyValue;

use crate::{
    node::Node,
    nostr::{
        ClientMessage, Event, Filter, KindClass, MessageError, Prefix, Reason, message::relay,
    },
    policy,
    store::WriteOutcome,
};

/// Source of unique subscription keys for the live indexes.
static NEXT_SUBSCRIPTION_KEY: AtomicU64 = AtomicU64::new(1);

/// The node is stopping: close with code 1001 (going away).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// The client is not reading: drop the connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SlowClient;

/// A subscription ended by itself (error, or its client stopped reading).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscriptionEnded {
    /// The client's id for it.
    pub sub_id: Arc<str>,
    /// Its key, to tell it from a newer subscription with the same id.
    pub key: u64,
}

/// Who is on the other end of a connection.
pub struct Peer {
    /// `ip:port`, for logs.
    pub addr: String,
    /// The IP address, the key of per-address limits.
    pub ip: String,
    /// The connection slot held for this address (when connections per IP are limited).
    pub slot: Option<String>,
}

impl Peer {
    /// The limiter key of this address's connection slots.
    pub fn slot_key(ip: &str) -> String {
        format!("connections:{ip}")
    }
}

/// How long a connection slot lasts unless refreshed, in ping intervals.
pub const SLOT_LIFETIME_IN_PINGS: u32 = 3;

/// One client's WebSocket connection.
pub struct Connection {
    node: Arc<Node>,
    outbox: Outbox,
    pump: JoinHandle<()>,
    gate: Gate,
    index: Option<Addr<LiveIndex>>,
    subscriptions: HashMap<Arc<str>, (u64, Addr<Subscription>)>,
    peer: Peer,
    /// Key in the node's list of open connections.
    key: Option<u64>,
    /// The `connection` span every span and log line of this connection belongs to.
    span: tracing::Span,
    /// Start of the current minute of REQs, and how many came in it.
    reqs: (Instant, u64),
    opened: Instant,
    last_seen: Instant,
    received: u64,
    close_reason: &'static str,
}

impl Connection {
    /// Starts the actor for an upgraded WebSocket on the current worker thread.
    pub fn start(node: Arc<Node>, session: Session, stream: MessageStream, peer: Peer) {
        let max = node.config.max_message_bytes;
        let outbox = Outbox::new(node.config.max_outbound_bytes);
        let pump = actix_web::rt::spawn(outbox.clone().pump(session, Arc::clone(&node.metrics)));
        let gate = Gate::new(node.config.max_pending_per_connection);
        let frames = gate.guard(
            stream
                .max_frame_size(max)
                .aggregate_continuations()
                .max_continuation_size(max),
        );
        let span = tracing::info_span!(
            "connection",
            peer = %peer.addr,
            node = %node.node_id,
            trace_id = tracing::field::Empty
        );
        if let Some(id) = crate::telemetry::trace_id(&span) {
            span.record("trace_id", id.as_str());
        }
        Connection::create(move |ctx| {
            ctx.add_stream(frames);
            let now = Instant::now();
            Connection {
                node,
                outbox,
                pump,
                gate,
                index: None,
                subscriptions: HashMap::new(),
                peer,
                key: None,
                span,
                reqs: (now, 0),
                opened: now,
                last_seen: now,
                received: 0,
                close_reason: "client went away",
            }
        });
    }

    /// Queues a frame; a client that has stopped reading is dropped.
    fn send(&mut self, frame: String, ctx: &mut Context<Self>) {
        if self.outbox.push(frame) == Err(Refused::Full) {
            self.drop_slow_client(ctx);
        }
    }

    fn close(
        &mut self,
        code: CloseCode,
        description: &str,
        why: &'static str,
        ctx: &mut Context<Self>,
    ) {
        self.outbox.close(Some(CloseReason {
            code,
            description: Some(description.to_string()),
        }));
        self.close_reason = why;
        ctx.stop();
    }

    fn drop_slow_client(&mut self, ctx: &mut Context<Self>) {
        self.node.metrics.slow_clients_dropped.add(1, &[]);
        let queued = self.outbox.queued_bytes();
        self.span
            .in_scope(|| tracing::warn!(queued, "dropping a client that does not read"));
        self.pump.abort();
        self.outbox.close(None);
        self.close_reason = "slow client";
        ctx.stop();
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        match ClientMessage::parse(text) {
            Ok(ClientMessage::Event(event)) => {
                self.count_received("EVENT");
                self.on_event(*event, ctx)
            }
            Ok(ClientMessage::Req { sub_id, filters }) => {
                self.count_received("REQ");
                self.on_req(sub_id, filters, ctx)
            }
            Ok(ClientMessage::Count { sub_id, filters }) => {
                self.count_received("COUNT");
                self.on_count(sub_id, filters, ctx)
            }
            Ok(ClientMessage::Close { sub_id }) => {
                self.count_received("CLOSE");
                if let Some((_, sub)) = self.subscriptions.remove(sub_id.as_str()) {
                    sub.do_send(Stop);
                }
            }
            Err(MessageError::Notice(message)) => {
                self.count_received("invalid");
                self.send(relay::notice(&message), ctx)
            }
            Err(MessageError::Event { id, reason }) => {
                self.count_received("EVENT");
                self.count_event(None, Some(reason.prefix));
                self.send(relay::ok(&id, false, &reason.to_string()), ctx)
            }
            Err(MessageError::Closed { sub_id, reason }) => {
                self.count_received("invalid");
                self.send(relay::closed(&sub_id, &reason), ctx)
            }
        }
    }

    fn count_received(&self, kind: &'static str) {
        self.node
            .metrics
            .messages_received
            .add(1, &[KeyValue::new("type", kind)]);
    }

    /// Counts an event as accepted (`refused` is `None`) or refused for a reason.
    fn count_event(&self, kind: Option<u16>, refused: Option<Prefix>) {
        let class = KeyValue::new(
            "kind_class",
            kind.map_or("unknown", |k| KindClass::of(k).as_str()),
        );
        match refused {
            None => self.node.metrics.events_accepted.add(1, &[class]),
            Some(prefix) => {
                let reason = KeyValue::new("reason", prefix.as_str());
                self.node.metrics.events_refused.add(1, &[class, reason]);
            }
        }
    }

    fn on_event(&mut self, event: Event, ctx: &mut Context<Self>) {
        let id = event.id_hex();
        let kind = event.kind;
        let ingest = tracing::debug_span!(parent: &self.span, "ingest", event = %id, kind);
        if let Err(reason) = policy::check_event(&self.node.config, &event, policy::now()) {
            self.count_event(Some(kind), Some(reason.prefix));
            return self.send(relay::ok(&id, false, &reason.to_string()), ctx);
        }
        let permit = self.gate.enter();
        let node = Arc::clone(&self.node);
        let limits = self.limit_keys(&event);
        let ingest_span = ingest.clone();
        let outcome = async move {
            let validate = tracing::debug_span!(parent: &ingest_span, "validate");
            let verified = match node.verifier.verify(event).instrument(validate).await {
                Ok(verified) => Arc::new(verified),
                Err(error) => {
                    let reason = Reason::from(error);
                    return (false, reason.to_string(), Some(reason.prefix));
                }
            };
            // Limits are counted after the signature check, so that nobody can spend another
            // author's allowance with forged events.
            if !event_limits(&node, limits).await {
                node.metrics
                    .rate_limited
                    .add(1, &[KeyValue::new("limit", "events")]);
                let reason = Reason::new(Prefix::RateLimited, "too many events; slow down");
                return (false, reason.to_string(), Some(Prefix::RateLimited));
            }
            let store = tracing::debug_span!(parent: &ingest_span, "store");
            ok_message(
                async { node.ingest(verified).await }
                    .instrument(store)
                    .await,
            )
        }
        .instrument(ingest);
        ctx.spawn(
            outcome
                .into_actor(self)
                .map(move |(accepted, message, refused), conn, ctx| {
                    drop(permit);
                    conn.count_event(Some(kind), refused);
                    conn.send(relay::ok(&id, accepted, &message), ctx);
                }),
        );
    }

    /// The per-address and per-author limit keys an event counts against.
    fn limit_keys(&self, event: &Event) -> EventLimitKeys {
        EventLimitKeys {
            ip: format!("events:ip:{}", self.peer.ip),
            author: format!("events:pubkey:{}", crate::nostr::hex::encode(&event.pubkey)),
        }
    }

    /// Counts a REQ or COUNT against the per-connection limit.
    fn allow_request(&mut self) -> bool {
        let limit = self.node.config.max_reqs_per_minute_per_connection;
        if limit == 0 {
            return true;
        }
        if self.reqs.0.elapsed() >= Duration::from_secs(60) {
            self.reqs = (Instant::now(), 0);
        }
        self.reqs.1 += 1;
        self.reqs.1 <= limit
    }

    fn refuse_request(&mut self, sub_id: &str, ctx: &mut Context<Self>) {
        self.node
            .metrics
            .rate_limited
            .add(1, &[KeyValue::new("limit", "requests")]);
        let reason = Reason::new(Prefix::RateLimited, "too many requests; slow down");
        self.send(relay::closed(sub_id, &reason), ctx);
    }

    /// Checks the filter count and clamps each filter's limit to the configured maximum.
    fn prepare_filters(
        &self,
        sub_id: &str,
        mut filters: Vec<Filter>,
    ) -> Result<Arc<[Filter]>, String> {
        let config = &self.node.config;
        if filters.len() > config.max_filters {
            let reason = Reason::invalid(format!(
                "too many filters ({}, at most {})",
                filters.len(),
                config.max_filters
            ));
            return Err(relay::closed(sub_id, &reason));
        }
        for filter in &mut filters {
            filter.limit = Some(
                filter
                    .limit
                    .unwrap_or(config.default_limit)
                    .min(config.max_limit),
            );
        }
        Ok(filters.into())
    }

    fn on_req(&mut self, sub_id: String, filters: Vec<Filter>, ctx: &mut Context<Self>) {
        if !self.allow_request() {
            return self.refuse_request(&sub_id, ctx);
        }
        let filters = match self.prepare_filters(&sub_id, filters) {
            Ok(filters) => filters,
            Err(closed) => return self.send(closed, ctx),
        };
        let sub_id: Arc<str> = sub_id.into();
        if let Some((_, replaced)) = self.subscriptions.remove(&sub_id) {
            replaced.do_send(Stop);
        } else if self.subscriptions.len() >= self.node.config.max_subscriptions {
            let reason = Reason::new(
                Prefix::RateLimited,
                format!(
                    "too many open subscriptions (at most {})",
                    self.node.config.max_subscriptions
                ),
            );
            return self.send(relay::closed(&sub_id, &reason), ctx);
        }
        if self.index.is_none() {
            return;
        }
        let key = NEXT_SUBSCRIPTION_KEY.fetch_add(1, Ordering::Relaxed);
        let sub = Subscription::new(SubscriptionParts {
            key,
            sub_id: Arc::clone(&sub_id),
            filters,
            connection: ctx.address(),
            outbox: self.outbox.clone(),
            store: Arc::clone(&self.node.store),
            permit: self.gate.enter(),
            metrics: Arc::clone(&self.node.metrics),
            span: tracing::debug_span!(parent: &self.span, "req", sub = %sub_id),
        })
        .start();
        self.subscriptions.insert(sub_id, (key, sub));
    }

    fn on_count(&mut self, sub_id: String, filters: Vec<Filter>, ctx: &mut Context<Self>) {
        if !self.allow_request() {
            return self.refuse_request(&sub_id, ctx);
        }
        let filters = match self.prepare_filters(&sub_id, filters) {
            Ok(filters) => filters,
            Err(closed) => return self.send(closed, ctx),
        };
        let permit = self.gate.enter();
        let store = Arc::clone(&self.node.store);
        let count = async move { store.count(filters, policy::now()).await };
        ctx.spawn(count.into_actor(self).map(move |result, conn, ctx| {
            drop(permit);
            let frame = match result {
                Ok(n) => relay::count(&sub_id, n),
                Err(e) => relay::closed(&sub_id, &Reason::error(e.to_string())),
            };
            conn.send(frame, ctx);
        }));
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let idle = Duration::from_secs(self.node.config.idle_timeout_seconds);
        if self.last_seen.elapsed() > idle {
            self.close(CloseCode::Normal, "idle timeout", "idle timeout", ctx);
        } else {
            self.outbox.push_control(Outgoing::Ping);
            if let Some(holder) = &self.peer.slot {
                let config = &self.node.config;
                let ttl = Duration::from_secs(config.ping_interval_seconds.max(1))
                    * SLOT_LIFETIME_IN_PINGS;
                let refresh = self.node.limiter.acquire(
                    &Peer::slot_key(&self.peer.ip),
                    holder,
                    config.max_connections_per_ip,
                    ttl,
                );
                actix_web::rt::spawn(refresh);
            }
        }
    }
}

/// The `OK` answer for an ingest result, and the refusal to count (none for a new event).
fn ok_message(result: WriteResult) -> (bool, String, Option<Prefix>) {
    match result {
        Ok(WriteOutcome::Stored) => (true, String::new(), None),
        Ok(WriteOutcome::Duplicate) => (
            true,
            "duplicate: already have this event".into(),
            Some(Prefix::Duplicate),
        ),
        Ok(WriteOutcome::Superseded) => (
            false,
            "duplicate: a newer version of this event is already stored".into(),
            Some(Prefix::Duplicate),
        ),
        Ok(WriteOutcome::Deleted) => (
            false,
            "blocked: this event was deleted by its author".into(),
            Some(Prefix::Blocked),
        ),
        Err(e) => (
            false,
            Reason::error(format!("could not store the event: {e}")).to_string(),
            Some(Prefix::Error),
        ),
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.index = Some(self.node.fanout.local_index());
        self.key = Some(self.node.register(ctx.address().recipient()));
        self.node.metrics.connections_opened.add(1, &[]);
        self.node.metrics.connections_open.add(1, &[]);
        let every = Duration::from_secs(self.node.config.ping_interval_seconds.max(1));
        ctx.run_interval(every, Self::heartbeat);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        for (_, (_, sub)) in self.subscriptions.drain() {
            sub.do_send(Stop);
        }
        self.outbox.close(None);
        if let Some(key) = self.key {
            self.node.unregister(key);
        }
        if let Some(holder) = &self.peer.slot {
            self.node
                .limiter
                .release(&Peer::slot_key(&self.peer.ip), holder);
        }
        self.node.metrics.connections_open.add(-1, &[]);
        let reason = KeyValue::new("reason", self.close_reason);
        self.node.metrics.connections_closed.add(1, &[reason]);
        self.span.in_scope(|| {
            tracing::info!(
                seconds = self.opened.elapsed().as_secs_f64(),
                received = self.received,
                sent = self.outbox.frames_queued(),
                reason = self.close_reason,
                "connection closed"
            )
        });
    }
}

impl StreamHandler<Result<AggregatedMessage, ProtocolError>> for Connection {
    fn handle(&mut self, item: Result<AggregatedMessage, ProtocolError>, ctx: &mut Context<Self>) {
        self.last_seen = Instant::now();
        match item {
            Ok(AggregatedMessage::Text(text)) => {
                self.received += 1;
                self.on_text(&text, ctx);
            }
            Ok(AggregatedMessage::Binary(_)) => {
                self.received += 1;
                self.send(
                    relay::notice("invalid: binary messages are not supported; send JSON as text"),
                    ctx,
                );
            }
            Ok(AggregatedMessage::Ping(payload)) => {
                self.outbox.push_control(Outgoing::Pong(payload))
            }
            Ok(AggregatedMessage::Pong(_)) => {}
            Ok(AggregatedMessage::Close(reason)) => {
                self.outbox.close(reason.map(|r| CloseReason {
                    code: r.code,
                    description: None,
                }));
                self.close_reason = "client closed";
                ctx.stop();
            }
            Err(ProtocolError::Io(e)) if e.kind() == io::ErrorKind::InvalidData => {
                self.send(relay::notice("invalid: text frame is not valid UTF-8"), ctx);
            }
            Err(ProtocolError::Overflow) => {
                self.close(CloseCode::Size, "message too big", "message too big", ctx)
            }
            Err(ProtocolError::Io(e)) if e.to_string().contains("continuation size") => {
                self.close(CloseCode::Size, "message too big", "message too big", ctx)
            }
            Err(ProtocolError::Io(_)) => {
                self.close_reason = "client went away";
                ctx.stop();
            }
            Err(e) => {
                tracing::debug!(peer = %self.peer.addr, error = %e, "websocket protocol error");
                self.close(CloseCode::Protocol, "protocol error", "protocol error", ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Shutdown> for Connection {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        self.close(CloseCode::Away, "server shutting down", "shutdown", ctx);
    }
}

impl Handler<SlowClient> for Connection {
    type Result = ();

    fn handle(&mut self, _: SlowClient, ctx: &mut Context<Self>) {
        if self.close_reason != "slow client" {
            self.drop_slow_client(ctx);
        }
    }
}

impl Handler<SubscriptionEnded> for Connection {
    type Result = ();

    fn handle(&mut self, msg: SubscriptionEnded, _: &mut Context<Self>) {
        if self
            .subscriptions
            .get(&msg.sub_id)
            .is_some_and(|(key, _)| *key == msg.key)
        {
            self.subscriptions.remove(&msg.sub_id);
        }
    }
}

/// The keys an event's per-minute limits are counted under.
struct EventLimitKeys {
    ip: String,
    author: String,
}

/// Counts an event against the per-address and per-author limits; whether both allow it.
async fn event_limits(node: &Node, keys: EventLimitKeys) -> bool {
    let config = &node.config;
    let minute = Duration::from_secs(60);
    let ip_ok = config.max_events_per_minute_per_ip == 0
        || node
            .limiter
            .hit(&keys.ip, config.max_events_per_minute_per_ip, minute)
            .await;
    let author_ok = config.max_events_per_minute_per_pubkey == 0
        || node
            .limiter
            .hit(
                &keys.author,
                config.max_events_per_minute_per_pubkey,
                minute,
            )
            .await;
    ip_ok && author_ok
}
