//! What a connection does with `REQ` and `COUNT`: the per-connection limits, then a
//! [`Subscription`] actor for a `REQ`, or a count admitted by the node for a `COUNT`.

use std::{
    rc::Rc,
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use actix::{ActorFutureExt, AsyncContext, Context, WrapFuture};
use opentelemetry::KeyValue;

use super::{Connection, NEXT_SUBSCRIPTION_KEY};
use crate::{
    actors::subscription::{Subscription, SubscriptionParts, TOO_LONG},
    node::Refusal,
    nostr::{Filter, Prefix, Reason, hll, message::relay},
    policy::{self, Strike, privacy::Readers},
    store::StoreError,
};

impl Connection {
    /// Counts a REQ or COUNT against the per-connection limit; refuses it with `CLOSED` when
    /// the limit is reached.
    fn allow_request(&mut self, sub_id: &str, ctx: &mut Context<Self>) -> bool {
        if self.take_request() {
            return true;
        }
        self.refuse(sub_id, "requests", "too many requests; slow down");
        self.strike(Strike::RateLimited, ctx);
        false
    }

    /// Counts a request (`REQ`, `COUNT`, a negentropy message) against the connection's
    /// allowance and its address's; whether both allow it.
    pub(super) fn take_request(&mut self) -> bool {
        let now = Instant::now();
        self.requests.allow(now) && self.peer.admission.address.allow_request(now)
    }

    /// Answers `CLOSED "rate-limited: …"` for a limit, and counts the refusal.
    fn refuse(&mut self, sub_id: &str, limit: &'static str, message: impl Into<String>) {
        self.node
            .metrics()
            .rate_limited
            .add(1, &[KeyValue::new("limit", limit)]);
        let reason = Reason::new(Prefix::RateLimited, message);
        self.send(relay::closed(sub_id, &reason));
    }

    /// Answers `CLOSED` for an access rule (`auth-required:`, `restricted:`), counts it,
    /// and counts a strike: a client that keeps asking for what it may not read is closed
    /// like one that sends forged events (one that authenticates when asked takes a strike
    /// or two, far from the threshold).
    fn refuse_access(&mut self, sub_id: &str, reason: &Reason, ctx: &mut Context<Self>) {
        let label = KeyValue::new("reason", reason.prefix.as_str());
        self.node.metrics().requests_refused.add(1, &[label]);
        self.send(relay::closed(sub_id, reason));
        self.strike(Strike::Refused, ctx);
    }

    /// The filters of a REQ or COUNT as the policy allows them, with who may read the
    /// private events they could match; or `CLOSED` sent.
    fn prepare(
        &mut self,
        sub_id: &str,
        filters: Vec<Filter>,
        ctx: &mut Context<Self>,
    ) -> Option<(Arc<[Filter]>, Option<Readers>)> {
        let config = self.node.config();
        let filters = match policy::prepare_filters(config, filters) {
            Ok(filters) => filters,
            Err(reason) => {
                self.send(relay::closed(sub_id, &reason));
                self.strike(Strike::Invalid, ctx);
                return None;
            }
        };
        let readers = Readers::new(&config.private_kinds, &self.authed);
        let allowed = self
            .node
            .rules()
            .check_read(&self.authed)
            .and_then(|()| readers.check_filters(&filters));
        if let Err(reason) = allowed {
            self.refuse_access(sub_id, &reason, ctx);
            return None;
        }
        let readers = readers.apply_to(&filters).then_some(readers);
        Some((filters, readers))
    }

    pub(super) fn on_req(&mut self, sub_id: String, filters: Vec<Filter>, ctx: &mut Context<Self>) {
        if !self.allow_request(&sub_id, ctx) {
            return;
        }
        let Some((filters, readers)) = self.prepare(&sub_id, filters, ctx) else {
            return;
        };
        let config = self.node.config();
        let (max_subscriptions, max_bytes) = (
            config.max_subscriptions,
            config.max_filter_bytes_per_connection,
        );
        let replaced = self.subscriptions.stop(&sub_id);
        if !replaced && self.subscriptions.len() >= max_subscriptions {
            let message = format!("too many open subscriptions (at most {max_subscriptions})");
            return self.refuse(&sub_id, "subscriptions", message);
        }
        let bytes = policy::filter_bytes(&filters);
        if self.subscriptions.filter_bytes() + bytes > max_bytes {
            let message = format!(
                "this connection's subscriptions would hold more than {max_bytes} bytes of filters"
            );
            return self.refuse(&sub_id, "filter-bytes", message);
        }
        let Some(place) = self.node.admit_subscription() else {
            let message = "this relay holds all the subscriptions it can; try again later";
            return self.refuse(&sub_id, "node-subscriptions", message);
        };
        let sub_id: Arc<str> = sub_id.into();
        let key = NEXT_SUBSCRIPTION_KEY.fetch_add(1, Ordering::Relaxed);
        Subscription::open(SubscriptionParts {
            key,
            sub_id: Arc::clone(&sub_id),
            filters,
            table: self.subscriptions.clone(),
            outbox: self.outbox.clone(),
            place,
            asker: Rc::clone(&self.asker),
            permit: self.gate.enter(),
            span: crate::telemetry::or_parent(
                tracing::debug_span!(parent: &self.span, "req", sub = %sub_id),
                &self.span,
            ),
            readers,
        });
        self.subscriptions.insert(sub_id, key, bytes);
    }

    pub(super) fn on_count(
        &mut self,
        sub_id: String,
        filters: Vec<Filter>,
        ctx: &mut Context<Self>,
    ) {
        if !self.allow_request(&sub_id, ctx) {
            return;
        }
        // Counts never include private kinds: a number of gift wraps is not anyone's to
        // know, not even that of an authenticated party.
        let private = &self.node.config().private_kinds;
        if filters.iter().any(|f| {
            f.kinds
                .as_ref()
                .is_some_and(|k| k.iter().any(|k| private.contains(k)))
        }) {
            let reason = Reason::new(
                Prefix::Restricted,
                "direct messages and gift wraps are not counted",
            );
            return self.refuse_access(&sub_id, &reason, ctx);
        }
        let filters = filters
            .into_iter()
            .map(|mut filter| {
                filter.excluded_kinds = private.as_slice().into();
                filter
            })
            .collect();
        let Some((filters, _)) = self.prepare(&sub_id, filters, ctx) else {
            return;
        };
        let permit = self.gate.enter();
        let (node, asker, cancel) = (
            Arc::clone(&self.node),
            Rc::clone(&self.asker),
            self.cancel.clone(),
        );
        // NIP-45 HLL, for one filter whose offset the NIP defines.
        let hll = match &*filters {
            [filter] => hll::offset(filter).map(|offset| (filter.clone(), offset)),
            _ => None,
        };
        let count = async move {
            let now = policy::now();
            let n = node.count(&asker, filters, now, &cancel).await?;
            let registers = match hll {
                Some((filter, offset)) => {
                    Some(node.hll(&asker, filter, offset, now, &cancel).await?)
                }
                None => None,
            };
            Ok::<_, Refusal>((n, registers))
        };
        ctx.spawn(count.into_actor(self).map(move |result, conn, _| {
            drop(permit);
            match result {
                Ok((n, None)) => conn.send(relay::count(&sub_id, n)),
                Ok((n, Some(hll))) => conn.send(relay::count_with_hll(&sub_id, n, &hll.to_hex())),
                Err(Refusal::Cancelled) => {}
                Err(Refusal::OverBudget) => conn.refuse(
                    &sub_id,
                    "store-time",
                    "this connection has used its store time; try again in a while",
                ),
                Err(Refusal::Store(StoreError::TimedOut)) => {
                    conn.send(relay::closed(&sub_id, &Reason::error(TOO_LONG)));
                }
                Err(Refusal::Store(error)) => {
                    conn.span
                        .in_scope(|| tracing::warn!(%error, "could not count events"));
                    let reason = Reason::error("could not count events");
                    conn.send(relay::closed(&sub_id, &reason));
                }
            }
        }));
    }
}
