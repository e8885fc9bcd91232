//! The Connection actor: one per WebSocket.
//!
//! It reads the client's messages ([`Frames`], paused by its [`Gate`] while too much is in
//! progress), asks [`policy`] what each may do, answers what it can at once, hands events to
//! [`ingest`] and starts a [`Subscription`] actor per `REQ`. Everything it sends goes
//! through its [`Outbox`]; a client that stops reading overflows it and is dropped.
//!
//! Architecture invariant: nothing here awaits the store inside the message handler; store
//! work runs as a spawned future whose result comes back to the actor, so a slow database
//! slows one request, never the socket.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, StreamHandler, WrapFuture,
};
use actix_ws::{CloseCode, CloseReason, MessageStream, Session};
use opentelemetry::KeyValue;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{
    frames::{Frame, FrameError, Frames},
    gate::Gate,
    outbox::{Outbox, Outgoing},
    subscription::{Subscription, SubscriptionParts, SubscriptionTable},
};
use crate::{
    ingest,
    node::{Node, Shutdown},
    nostr::{
        ClientMessage, Event, Filter, KindClass, MessageError, Prefix, Reason, message::relay,
    },
    policy::{self, AddressLease, EventRates, RequestAllowance},
};

/// Source of unique subscription keys for the live indexes.
static NEXT_SUBSCRIPTION_KEY: AtomicU64 = AtomicU64::new(1);

/// Who is on the other end of a connection.
pub struct Peer {
    /// `ip:port`, for logs.
    pub addr: String,
    /// The IP address, the key of per-address limits.
    pub ip: String,
    /// The connection's place among its address's (when connections per address are
    /// limited).
    pub lease: Option<AddressLease>,
}

/// One client's WebSocket connection.
pub struct Connection {
    node: Arc<Node>,
    outbox: Outbox,
    pump: JoinHandle<()>,
    gate: Gate,
    subscriptions: SubscriptionTable,
    peer: Peer,
    /// Key in the node's list of open connections.
    key: Option<u64>,
    /// The `connection` span every span and log line of this connection belongs to.
    span: tracing::Span,
    requests: RequestAllowance,
    opened: Instant,
    last_seen: Instant,
    received: u64,
    close_reason: &'static str,
}

impl Connection {
    /// Starts the actor for an upgraded WebSocket on the current worker thread.
    pub fn start(node: Arc<Node>, session: Session, stream: MessageStream, peer: Peer) {
        let config = node.config();
        let max = config.max_message_bytes;
        let outbox = Outbox::new(config.max_outbound_bytes);
        let pump = actix_web::rt::spawn(outbox.clone().pump(session, Arc::clone(node.metrics())));
        let gate = Gate::new(config.max_pending_per_connection);
        let frames = gate.guard(Frames::new(stream.max_frame_size(max), max));
        let span = tracing::info_span!(
            "connection",
            peer = %peer.addr,
            node = %node.id(),
            trace_id = tracing::field::Empty
        );
        if let Some(id) = crate::telemetry::trace_id(&span) {
            span.record("trace_id", id.as_str());
        }
        let now = Instant::now();
        let requests = RequestAllowance::new(config.max_reqs_per_minute_per_connection, now);
        Connection::create(move |ctx| {
            ctx.add_stream(frames);
            Connection {
                node,
                outbox,
                pump,
                gate,
                subscriptions: SubscriptionTable::default(),
                peer,
                key: None,
                span,
                requests,
                opened: now,
                last_seen: now,
                received: 0,
                close_reason: "client went away",
            }
        });
    }

    /// Queues a frame. A client that has stopped reading overflows the outbox, which makes
    /// the connection drop it ([`Outbox::overflowed`]).
    fn send(&mut self, frame: String) {
        let _ = self.outbox.push(frame);
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
        self.node.metrics().slow_clients_dropped.add(1, &[]);
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
                self.on_req(sub_id, filters)
            }
            Ok(ClientMessage::Count { sub_id, filters }) => {
                self.count_received("COUNT");
                self.on_count(sub_id, filters, ctx)
            }
            Ok(ClientMessage::Close { sub_id }) => {
                self.count_received("CLOSE");
                self.subscriptions.stop(&sub_id);
            }
            Err(MessageError::Notice(message)) => {
                self.count_received("invalid");
                self.send(relay::notice(&message))
            }
            Err(MessageError::Event { id, reason }) => {
                self.count_received("EVENT");
                self.count_event(None, Some(reason.prefix));
                self.send(relay::ok(&id, false, &reason.to_string()))
            }
            Err(MessageError::Closed { sub_id, reason }) => {
                self.count_received("invalid");
                self.send(relay::closed(&sub_id, &reason))
            }
        }
    }

    fn count_received(&self, kind: &'static str) {
        self.node
            .metrics()
            .messages_received
            .add(1, &[KeyValue::new("type", kind)]);
    }

    /// Counts an event as accepted (`refused` is `None`) or refused for a reason.
    fn count_event(&self, kind: Option<u16>, refused: Option<Prefix>) {
        let metrics = self.node.metrics();
        let class = KeyValue::new(
            "kind_class",
            kind.map_or("unknown", |k| KindClass::of(k).as_str()),
        );
        match refused {
            None => metrics.events_accepted.add(1, &[class]),
            Some(prefix) => {
                let reason = KeyValue::new("reason", prefix.as_str());
                metrics.events_refused.add(1, &[class, reason]);
            }
        }
    }

    fn on_event(&mut self, event: Event, ctx: &mut Context<Self>) {
        let id = event.id_hex();
        let kind = event.kind;
        let span = tracing::debug_span!(parent: &self.span, "ingest", event = %id, kind);
        if let Err(reason) = policy::check_event(self.node.config(), &event, policy::now()) {
            self.count_event(Some(kind), Some(reason.prefix));
            return self.send(relay::ok(&id, false, &reason.to_string()));
        }
        let permit = self.gate.enter();
        let rates = EventRates::of(&self.peer.ip, &event.pubkey);
        let verdict =
            ingest::accept(Arc::clone(&self.node), event, rates, span.clone()).instrument(span);
        ctx.spawn(verdict.into_actor(self).map(move |verdict, conn, _| {
            drop(permit);
            conn.count_event(Some(kind), verdict.refused);
            conn.send(relay::ok(&id, verdict.accepted, &verdict.message));
        }));
    }

    /// Counts a REQ or COUNT against the per-connection limit; refuses it with `CLOSED` when
    /// the limit is reached.
    fn allow_request(&mut self, sub_id: &str) -> bool {
        if self.requests.allow(Instant::now()) {
            return true;
        }
        self.node
            .metrics()
            .rate_limited
            .add(1, &[KeyValue::new("limit", "requests")]);
        let reason = Reason::new(Prefix::RateLimited, "too many requests; slow down");
        self.send(relay::closed(sub_id, &reason));
        false
    }

    /// The filters of a REQ or COUNT as the policy allows them, or `CLOSED` sent.
    fn prepare(&mut self, sub_id: &str, filters: Vec<Filter>) -> Option<Arc<[Filter]>> {
        match policy::prepare_filters(self.node.config(), filters) {
            Ok(filters) => Some(filters),
            Err(reason) => {
                self.send(relay::closed(sub_id, &reason));
                None
            }
        }
    }

    fn on_req(&mut self, sub_id: String, filters: Vec<Filter>) {
        if !self.allow_request(&sub_id) {
            return;
        }
        let Some(filters) = self.prepare(&sub_id, filters) else {
            return;
        };
        let max_subscriptions = self.node.config().max_subscriptions;
        if !self.subscriptions.stop(&sub_id) && self.subscriptions.len() >= max_subscriptions {
            let reason = Reason::new(
                Prefix::RateLimited,
                format!("too many open subscriptions (at most {max_subscriptions})"),
            );
            return self.send(relay::closed(&sub_id, &reason));
        }
        let sub_id: Arc<str> = sub_id.into();
        let key = NEXT_SUBSCRIPTION_KEY.fetch_add(1, Ordering::Relaxed);
        let subscription = Subscription::new(SubscriptionParts {
            key,
            sub_id: Arc::clone(&sub_id),
            filters,
            table: self.subscriptions.clone(),
            outbox: self.outbox.clone(),
            store: Arc::clone(self.node.store()),
            permit: self.gate.enter(),
            metrics: Arc::clone(self.node.metrics()),
            span: tracing::debug_span!(parent: &self.span, "req", sub = %sub_id),
        })
        .start();
        self.subscriptions.insert(sub_id, key, subscription);
    }

    fn on_count(&mut self, sub_id: String, filters: Vec<Filter>, ctx: &mut Context<Self>) {
        if !self.allow_request(&sub_id) {
            return;
        }
        let Some(filters) = self.prepare(&sub_id, filters) else {
            return;
        };
        let permit = self.gate.enter();
        let store = Arc::clone(self.node.store());
        let count = async move { store.count(filters, policy::now()).await };
        ctx.spawn(count.into_actor(self).map(move |result, conn, _| {
            drop(permit);
            let frame = match result {
                Ok(n) => relay::count(&sub_id, n),
                Err(e) => relay::closed(&sub_id, &Reason::error(e.to_string())),
            };
            conn.send(frame);
        }));
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let idle = Duration::from_secs(self.node.config().idle_timeout_seconds);
        if self.last_seen.elapsed() > idle {
            self.close(CloseCode::Normal, "idle timeout", "idle timeout", ctx);
        } else {
            self.outbox.push_control(Outgoing::Ping);
            if let Some(lease) = &self.peer.lease {
                actix_web::rt::spawn(lease.refresh(&**self.node.limiter()));
            }
        }
    }

    fn on_frame_error(&mut self, error: FrameError, ctx: &mut Context<Self>) {
        match error {
            FrameError::NotUtf8 => {
                self.send(relay::notice("invalid: text frame is not valid UTF-8"))
            }
            FrameError::TooBig => {
                self.close(CloseCode::Size, "message too big", "message too big", ctx)
            }
            FrameError::Gone => {
                self.close_reason = "client went away";
                ctx.stop();
            }
            FrameError::Protocol(error) => {
                self.span
                    .in_scope(|| tracing::debug!(%error, "websocket protocol error"));
                self.close(CloseCode::Protocol, "protocol error", "protocol error", ctx);
            }
        }
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.node.start_live_index::<Subscription>();
        self.key = Some(self.node.connections().register(ctx.address().recipient()));
        let metrics = self.node.metrics();
        metrics.connections_opened.add(1, &[]);
        metrics.connections_open.add(1, &[]);
        let every = Duration::from_secs(self.node.config().ping_interval_seconds.max(1));
        ctx.run_interval(every, Self::heartbeat);
        let overflowed = self.outbox.clone();
        ctx.spawn(
            async move { overflowed.overflowed().await }
                .into_actor(self)
                .map(|(), conn, ctx| conn.drop_slow_client(ctx)),
        );
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.subscriptions.stop_all();
        self.outbox.close(None);
        if let Some(key) = self.key {
            self.node.connections().unregister(key);
        }
        if let Some(lease) = &self.peer.lease {
            lease.release(&**self.node.limiter());
        }
        let metrics = self.node.metrics();
        metrics.connections_open.add(-1, &[]);
        let reason = KeyValue::new("reason", self.close_reason);
        metrics.connections_closed.add(1, &[reason]);
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

impl StreamHandler<Result<Frame, FrameError>> for Connection {
    fn handle(&mut self, item: Result<Frame, FrameError>, ctx: &mut Context<Self>) {
        self.last_seen = Instant::now();
        match item {
            Ok(Frame::Text(text)) => {
                self.received += 1;
                self.on_text(&text, ctx);
            }
            Ok(Frame::Binary(_)) => {
                self.received += 1;
                self.send(relay::notice(
                    "invalid: binary messages are not supported; send JSON as text",
                ));
            }
            Ok(Frame::Ping(payload)) => self.outbox.push_control(Outgoing::Pong(payload)),
            Ok(Frame::Pong) => {}
            Ok(Frame::Close(reason)) => {
                self.outbox.close(reason.map(|r| CloseReason {
                    code: r.code,
                    description: None,
                }));
                self.close_reason = "client closed";
                ctx.stop();
            }
            Err(error) => self.on_frame_error(error, ctx),
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
