//! The Connection actor: one per WebSocket.
//!
//! It reads the client's messages ([`MessageStream`], paused by its [`Gate`] while too much is in
//! progress), asks [`policy`] what each may do, answers what it can at once, hands events to
//! [`ingest`] and starts a [`Subscription`] actor per `REQ`. Everything it sends goes
//! through its [`Outbox`]; a client that stops reading overflows it and is dropped, and one
//! that leaves the relay's pings unanswered is closed.
//!
//! What a client does wrong counts as strikes ([`policy::strikes`]): past
//! `max_strikes_per_connection` in a minute the connection is closed (1008), and the strikes
//! count against its address too, which is slowed once past `max_strikes_per_ip`.
//!
//! Architecture invariant: nothing here awaits the store inside the message handler; store
//! work runs as a spawned future whose result comes back to the actor, so a slow database
//! slows one request, never the socket.

use std::{
    rc::Rc,
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::{Duration, Instant},
};

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, StreamHandler, WrapFuture,
};
use opentelemetry::KeyValue;
use tokio::{sync::Semaphore, task::JoinHandle};
use tracing::Instrument;

mod auth;
mod negentropy;
mod reconciliations;
mod requests;

use super::{
    conduct::Conduct,
    gate::Gate,
    liveness::Liveness,
    outbox::Outbox,
    subscription::{Subscription, SubscriptionTable},
};
use crate::{
    ingest,
    node::{Admission, Asker, Node, Shutdown},
    nostr::{ClientMessage, Event, KindClass, MessageError, Prefix, message::relay},
    policy::{self, AddressLease, Allowance, EventRates, Strike, WorkBudget},
    store::Cancel,
    websocket::{CloseCode, CloseReason, Message, MessageStream, ReadError, Session},
};

/// Source of unique subscription keys for the live indexes.
static NEXT_SUBSCRIPTION_KEY: AtomicU64 = AtomicU64::new(1);

/// Who is on the other end of a connection.
pub struct Peer {
    /// `ip:port`, or `client via proxy-ip:port` behind a trusted proxy, for logs.
    pub addr: String,
    /// The connection's place on the node, with its number and client address.
    pub admission: Admission,
    /// The connection's place among its address's (when connections per address are
    /// limited).
    pub lease: Option<AddressLease>,
    /// The `Host` the client asked for, naming the relay when no `--public-url` does.
    pub host: Option<String>,
}

/// One client's WebSocket connection.
pub struct Connection {
    node: Arc<Node>,
    outbox: Outbox,
    pump: JoinHandle<()>,
    gate: Gate,
    subscriptions: SubscriptionTable,
    peer: Peer,
    /// The connection as the query scheduler knows it, shared with its subscriptions.
    asker: Rc<Asker>,
    /// Raised when the connection ends, to stop its counts in progress.
    cancel: Cancel,
    /// The `connection` span every span and log line of this connection belongs to.
    span: tracing::Span,
    requests: Allowance,
    conduct: Conduct,
    liveness: Liveness,
    opened: Instant,
    received: u64,
    close_reason: &'static str,
    /// The NIP-42 challenge sent when the connection opened (sent as hex).
    challenge: [u8; 16],
    /// The pubkeys the client has authenticated as (NIP-42).
    authed: Vec<[u8; 32]>,
    /// Its NIP-77 reconciliations.
    negentropy: reconciliations::Reconciliations,
}

impl Connection {
    /// Starts the actor for an upgraded WebSocket on the current worker thread.
    pub fn start(node: Arc<Node>, session: Session, stream: MessageStream, peer: Peer) {
        let config = node.config();
        let outbox = Outbox::new(config.max_outbound_bytes);
        let pump = actix_web::rt::spawn(outbox.clone().pump(session, Arc::clone(node.metrics())));
        let gate = Gate::new(config.max_pending_per_connection);
        let frames = gate.guard(stream);
        let span = tracing::warn_span!(
            "connection",
            peer = %peer.addr,
            node = %node.id(),
            trace_id = tracing::field::Empty
        );
        let trace_id = crate::telemetry::trace_id(&span);
        span.record("trace_id", tracing::field::display(&trace_id));
        let now = Instant::now();
        let budget = Duration::from_millis(config.query_ms_per_minute_per_connection);
        let asker = Rc::new(Asker {
            source: peer.admission.source,
            address: Arc::clone(&peer.admission.address),
            budget: Arc::new(Mutex::new(WorkBudget::new(budget, now))),
            running: Arc::new(Semaphore::new(config.queries_per_connection())),
        });
        let requests = Allowance::new(
            config.max_reqs_per_minute_per_connection,
            config.max_reqs_burst_per_connection,
            now,
        );
        let conduct = Conduct::new(config, Arc::clone(&peer.admission.address), now);
        let challenge = crate::tls::random_bytes::<16>();
        let _ = outbox.push(relay::auth(&crate::nostr::hex::encode(&challenge)));
        Connection::create(move |ctx| {
            ctx.add_stream(frames);
            Connection {
                node,
                outbox,
                pump,
                gate,
                subscriptions: SubscriptionTable::default(),
                peer,
                asker,
                cancel: Cancel::default(),
                span,
                requests,
                conduct,
                liveness: Liveness::new(now),
                opened: now,
                received: 0,
                close_reason: "client went away",
                challenge,
                authed: Vec::new(),
                negentropy: reconciliations::Reconciliations::default(),
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

    /// Counts a strike against the connection and its address: closes the connection past
    /// its threshold; slows the address past its own.
    fn strike(&mut self, why: Strike, ctx: &mut Context<Self>) {
        let metrics = self.node.metrics();
        metrics
            .strikes
            .add(1, &[KeyValue::new("reason", why.as_str())]);
        let outcome = self.conduct.strike(self.node.config(), Instant::now());
        if outcome.penalized {
            metrics.addresses_penalized.add(1, &[]);
            let (address, seconds) = (
                self.peer.admission.source.address,
                self.node.config().strike_penalty_seconds,
            );
            self.span.in_scope(
                || tracing::warn!(%address, seconds, "slowing an address for its strikes"),
            );
        }
        if outcome.close {
            self.span.in_scope(|| {
                tracing::info!(
                    strikes = outcome.count,
                    last = why.as_str(),
                    "closing an abusive connection"
                )
            });
            self.close(CloseCode::Policy, "too many invalid messages", "abuse", ctx);
        }
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        match ClientMessage::parse(text) {
            Ok(ClientMessage::Event(event)) => {
                self.count_received("EVENT");
                self.on_event(*event, text.len(), ctx)
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
                self.subscriptions.stop(&sub_id);
            }
            Ok(ClientMessage::Auth(event)) => {
                self.count_received("AUTH");
                self.on_auth(*event, ctx)
            }
            Ok(ClientMessage::NegOpen {
                sub_id,
                filter,
                message,
            }) => {
                self.count_received("NEG-OPEN");
                self.on_neg_open(sub_id, *filter, message, ctx)
            }
            Ok(ClientMessage::NegMsg { sub_id, message }) => {
                self.count_received("NEG-MSG");
                self.on_neg_msg(sub_id, message, ctx)
            }
            Ok(ClientMessage::NegClose { sub_id }) => {
                self.count_received("NEG-CLOSE");
                self.on_neg_close(&sub_id)
            }
            Err(MessageError::NegErr { sub_id, reason }) => {
                self.count_received("invalid");
                self.send(relay::neg_err(&sub_id, &reason));
                self.strike(Strike::Invalid, ctx);
            }
            Err(MessageError::Notice(message)) => {
                self.count_received("invalid");
                self.send(relay::notice(&message));
                self.strike(Strike::Invalid, ctx);
            }
            Err(MessageError::Event { id, reason }) => {
                self.count_received("EVENT");
                self.count_event(None, Some(reason.prefix));
                self.send(relay::ok(&id, false, &reason.to_string()));
                self.strike(Strike::Invalid, ctx);
            }
            Err(MessageError::Closed { sub_id, reason }) => {
                self.count_received("invalid");
                self.send(relay::closed(&sub_id, &reason));
                self.strike(Strike::Invalid, ctx);
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

    fn on_event(&mut self, event: Event, bytes: usize, ctx: &mut Context<Self>) {
        let id = event.id_hex();
        let kind = event.kind;
        let span = tracing::debug_span!(parent: &self.span, "ingest", event = %id, kind);
        let span = crate::telemetry::or_parent(span, &self.span);
        let checked = policy::check_event(self.node.config(), &event, bytes, policy::now());
        if let Err(reason) = checked {
            self.count_event(Some(kind), Some(reason.prefix));
            self.send(relay::ok(&id, false, &reason.to_string()));
            return self.strike(Strike::Refused, ctx);
        }
        let (config, host) = (self.node.config(), self.peer.host.as_deref());
        let urls = || policy::auth::relay_urls(config, host);
        if let Err(reason) = policy::auth::check_vanish(&event, urls) {
            self.count_event(Some(kind), Some(reason.prefix));
            self.send(relay::ok(&id, false, &reason.to_string()));
            return self.strike(Strike::Refused, ctx);
        }
        let ip = self.peer.admission.source.address.ip();
        let allowed = policy::auth::may_publish(&event, &self.authed)
            .and_then(|()| self.node.rules().check_write(&event, ip, &self.authed));
        if let Err(reason) = allowed {
            self.count_event(Some(kind), Some(reason.prefix));
            self.send(relay::ok(&id, false, &reason.to_string()));
            return self.strike(Strike::Refused, ctx);
        }
        let permit = self.gate.enter();
        let rates = EventRates::of(&self.peer.admission.source.address, &event.pubkey);
        let source = self.peer.admission.source;
        let node = Arc::clone(&self.node);
        let authed = self
            .authed
            .iter()
            .find(|p| **p == event.pubkey)
            .or(self.authed.first())
            .copied();
        let verdict =
            ingest::accept(node, source, event, rates, authed, span.clone()).instrument(span);
        ctx.spawn(verdict.into_actor(self).map(move |verdict, conn, ctx| {
            drop(permit);
            conn.count_event(Some(kind), verdict.refused);
            conn.send(relay::ok(&id, verdict.accepted, &verdict.message));
            if let Some(strike) = verdict.strike {
                conn.strike(strike, ctx);
            }
        }));
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let idle = Duration::from_secs(self.node.config().idle_timeout_seconds);
        if self.liveness.last_seen().elapsed() > idle {
            self.close(CloseCode::Normal, "idle timeout", "idle timeout", ctx);
            return;
        }
        let _ = self.outbox.push_ping(self.liveness.next_ping());
        if let Some(lease) = &self.peer.lease {
            actix_web::rt::spawn(lease.refresh());
        }
    }

    fn on_read_error(&mut self, error: ReadError, ctx: &mut Context<Self>) {
        match error {
            ReadError::NotUtf8 => {
                self.send(relay::notice("invalid: text frame is not valid UTF-8"));
                self.strike(Strike::Invalid, ctx);
            }
            ReadError::TooBig => {
                self.close(CloseCode::Size, "message too big", "message too big", ctx)
            }
            ReadError::Bomb => {
                self.node.metrics().inflate_refused.add(1, &[]);
                self.close(CloseCode::Size, "message too big", "message too big", ctx)
            }
            ReadError::Gone => {
                self.close_reason = "client went away";
                ctx.stop();
            }
            ReadError::Protocol(error) => {
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
        let key = self.peer.admission.source.connection;
        self.node
            .connections()
            .register(key, ctx.address().recipient());
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
        self.cancel.cancel();
        self.subscriptions.stop_all();
        self.outbox.close(None);
        // The connection's lease on its address's place goes back with `self.peer`.
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

impl StreamHandler<Result<Message, ReadError>> for Connection {
    fn handle(&mut self, item: Result<Message, ReadError>, ctx: &mut Context<Self>) {
        let now = Instant::now();
        match item {
            Ok(Message::Text(text)) => {
                self.received += 1;
                self.on_text(&text, ctx);
            }
            Ok(Message::Binary(_)) => {
                self.received += 1;
                self.send(relay::notice(
                    "invalid: binary messages are not supported; send JSON as text",
                ));
                self.strike(Strike::Invalid, ctx);
            }
            Ok(Message::Ping(payload)) => {
                let _ = self.outbox.push_pong(payload);
                if !self.conduct.ping(now) {
                    self.strike(Strike::Pings, ctx);
                }
            }
            Ok(Message::Pong(payload)) => {
                self.liveness.pong(&payload, now);
            }
            Ok(Message::Close(reason)) => {
                self.outbox.close(reason.map(|r| CloseReason {
                    code: r.code,
                    description: None,
                }));
                self.close_reason = "client closed";
                ctx.stop();
            }
            Err(error) => self.on_read_error(error, ctx),
        }
        if let Some(pace) = self.conduct.pace(now) {
            self.gate.pause(pace);
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
