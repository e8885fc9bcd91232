//! What a connection does with NIP-77 negentropy reconciliation.
//!
//! `NEG-OPEN` reads the ids and times of the events its filter matches (as the access rules
//! allow: a private event's id is left out for whoever may not read it), in pages, in the
//! connection's turn for the store and within its budget, at most
//! `max_negentropy_records` of them (more: `NEG-ERR "blocked: …"`); then the reconciliation
//! (the `negentropy` crate) answers each message with `NEG-MSG`. A connection holds at most
//! `max_negentropy_sessions` at once; `NEG-CLOSE`, an error or the end of the connection
//! forgets one. `NEG-OPEN` and every `NEG-MSG` count against the connection's requests per
//! minute, as `REQ`s do.

use std::{rc::Rc, sync::Arc};

use actix::{ActorFutureExt, AsyncContext, Context, WrapFuture};
use negentropy::{Id, Negentropy, NegentropyStorageVector};
use opentelemetry::KeyValue;

use super::Connection;
use crate::{
    node::{Node, Refusal},
    nostr::{Event, Filter, Prefix, Reason, message::relay},
    policy::{self, Strike, privacy::Readers},
    store::{Cursor, PageRequest, StoreError},
};

/// Rows read from the store per page.
const PAGE: usize = 1000;

/// Why a reconciliation could not start.
enum Unopened {
    /// The reconciliation's storage refused a record (its text, for the log).
    Broken(String),
    /// More records than the limit.
    TooMany,
    /// The store or the scheduler refused.
    Refused(Refusal),
}

/// One page of records: those kept, how many rows were read, and the last row read.
type Page = (Vec<(u64, [u8; 32])>, usize, Option<Cursor>);

/// Reads one page of `filter`'s records after `after`: only ids and times, unless
/// `readers` must tell private events apart (then the events are read and checked).
async fn page(
    node: &Node,
    asker: &crate::node::Asker,
    filter: &Filter,
    readers: Option<&Readers>,
    (after, count): (Option<Cursor>, usize),
    cancel: &crate::store::Cancel,
) -> Result<Page, Refusal> {
    let cursor = |(created_at, id): (i64, [u8; 32])| Cursor { created_at, id };
    let record = |created_at: i64, id: [u8; 32]| (created_at.max(0) as u64, id);
    let Some(readers) = readers else {
        let rows = node
            .read_records(asker, filter.clone(), after, count, cancel)
            .await?;
        let last = rows.last().copied().map(cursor);
        let read = rows.len();
        return Ok((
            rows.into_iter().map(|(at, id)| record(at, id)).collect(),
            read,
            last,
        ));
    };
    let request = PageRequest {
        filter: 0,
        after,
        count,
    };
    let filters: Arc<[Filter]> = Arc::from([filter.clone()]);
    let (rows, _) = node
        .read_page(asker, filters, request, policy::now(), cancel)
        .await?;
    let last = rows.last().map(|r| cursor((r.created_at, r.id)));
    let kept = rows
        .iter()
        .filter(|r| Event::parse(&r.json).is_ok_and(|e| readers.may_read(&e)))
        .map(|r| record(r.created_at, r.id))
        .collect();
    Ok((kept, rows.len(), last))
}

/// The ids and times of the events `filter` matches that `readers` may read, at most
/// `most` (more: [`Unopened::TooMany`]); a filter's `limit` keeps the newest that many,
/// as in a REQ.
async fn records(
    node: Arc<Node>,
    asker: Rc<crate::node::Asker>,
    filter: Filter,
    readers: Option<Readers>,
    most: usize,
    cancel: crate::store::Cancel,
) -> Result<NegentropyStorageVector, Unopened> {
    let mut left = filter
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    // Straight into the reconciliation's storage: each record is held once.
    let mut found = NegentropyStorageVector::new();
    let mut held = 0;
    let mut after: Option<Cursor> = None;
    while left > 0 {
        let count = PAGE.min(left);
        let (kept, read, last) = page(
            &node,
            &asker,
            &filter,
            readers.as_ref(),
            (after, count),
            &cancel,
        )
        .await
        .map_err(Unopened::Refused)?;
        held += kept.len();
        if held > most {
            return Err(Unopened::TooMany);
        }
        for (at, id) in kept {
            found
                .insert(at, Id::from_byte_array(id))
                .map_err(|e| Unopened::Broken(e.to_string()))?;
        }
        left -= read.min(left);
        if read < count {
            break;
        }
        after = last;
    }
    Ok(found)
}

impl Connection {
    fn neg_err(&mut self, sub_id: &str, reason: Reason) {
        self.send(relay::neg_err(sub_id, &reason));
    }

    pub(super) fn on_neg_open(
        &mut self,
        sub_id: String,
        filter: Filter,
        message: Vec<u8>,
        ctx: &mut Context<Self>,
    ) {
        self.negentropy.remove(&sub_id);
        if !self.take_request() {
            self.count_limit("requests");
            self.neg_err(
                &sub_id,
                Reason::new(Prefix::RateLimited, "too many requests; slow down"),
            );
            return self.strike(Strike::RateLimited, ctx);
        }
        let config = self.node.config();
        let (most, sessions) = (
            config.max_negentropy_records,
            config.max_negentropy_sessions,
        );
        if self.negentropy.count() >= sessions {
            self.count_limit("negentropy-sessions");
            let why = format!("at most {sessions} reconciliations at once on one connection");
            return self.neg_err(&sub_id, Reason::new(Prefix::Blocked, why));
        }
        let readers = Readers::new(&config.private_kinds, &self.authed);
        let allowed = self
            .node
            .rules()
            .check_read(&self.authed)
            .and_then(|()| readers.check_filters(std::slice::from_ref(&filter)));
        if let Err(reason) = allowed {
            let label = KeyValue::new("reason", reason.prefix.as_str());
            self.node.metrics().requests_refused.add(1, &[label]);
            self.neg_err(&sub_id, reason);
            return self.strike(Strike::Refused, ctx);
        }
        let readers = readers
            .apply_to(std::slice::from_ref(&filter))
            .then_some(readers);
        let opening = self.negentropy.opening(sub_id.clone());
        let permit = self.gate.enter();
        let read = records(
            Arc::clone(&self.node),
            Rc::clone(&self.asker),
            filter,
            readers,
            most,
            self.cancel.clone(),
        );
        ctx.spawn(read.into_actor(self).map(move |found, conn, _| {
            drop(permit);
            if !conn.negentropy.finish_opening(&sub_id, opening) {
                return;
            }
            match found {
                Ok(records) => conn.start_reconciliation(sub_id, records, &message),
                Err(Unopened::TooMany) => {
                    conn.count_limit("negentropy-records");
                    let why = format!("this filter matches more than {most} events; narrow it");
                    let reason = Reason::new(Prefix::Blocked, why).to_string();
                    let refused = serde_json::json!(["NEG-ERR", sub_id, reason, most]);
                    conn.send(refused.to_string());
                }
                Err(Unopened::Broken(error)) => {
                    conn.span
                        .in_scope(|| tracing::warn!(%error, "could not build a reconciliation"));
                    conn.neg_err(&sub_id, Reason::error("could not start reconciling"));
                }
                Err(Unopened::Refused(Refusal::Cancelled)) => {}
                Err(Unopened::Refused(Refusal::OverBudget)) => {
                    conn.count_limit("store-time");
                    let why = "this connection has used its store time; try again in a while";
                    conn.neg_err(&sub_id, Reason::new(Prefix::RateLimited, why));
                }
                Err(Unopened::Refused(Refusal::Store(error))) => {
                    if !matches!(error, StoreError::TimedOut) {
                        conn.span.in_scope(
                            || tracing::warn!(%error, "could not read a reconciliation's records"),
                        );
                    }
                    conn.neg_err(&sub_id, Reason::error("could not read the events"));
                }
            }
        }));
    }

    fn start_reconciliation(
        &mut self,
        sub_id: String,
        mut storage: NegentropyStorageVector,
        first: &[u8],
    ) {
        let built = storage
            .seal()
            .and_then(|()| Negentropy::owned(storage, self.frame_limit()));
        let mut session = match built {
            Ok(session) => session,
            Err(error) => {
                self.span
                    .in_scope(|| tracing::warn!(%error, "could not build a reconciliation"));
                return self.neg_err(&sub_id, Reason::error("could not start reconciling"));
            }
        };
        match session.reconcile(first) {
            Ok(answer) => {
                self.send(relay::neg_msg(&sub_id, &answer));
                self.negentropy.open(sub_id, session);
            }
            Err(error) => self.neg_err(&sub_id, Reason::invalid(error.to_string())),
        }
    }

    /// Largest message a reconciliation sends: half a frame (it goes as hex), at least the
    /// 4 KiB negentropy needs.
    fn frame_limit(&self) -> u64 {
        let half = self.node.config().max_message_bytes / 2;
        (half.saturating_sub(256) as u64).max(4096)
    }

    pub(super) fn on_neg_msg(&mut self, sub_id: String, message: Vec<u8>, ctx: &mut Context<Self>) {
        // Each message makes the relay fingerprint ranges of up to the records limit: it
        // counts as a request, as a REQ does.
        if !self.take_request() {
            self.count_limit("requests");
            self.neg_err(
                &sub_id,
                Reason::new(Prefix::RateLimited, "too many requests; slow down"),
            );
            self.negentropy.remove(&sub_id);
            return self.strike(Strike::RateLimited, ctx);
        }
        let Some(session) = self.negentropy.get_open(&sub_id) else {
            let why = "no reconciliation is open with this id (NEG-OPEN first)";
            return self.neg_err(&sub_id, Reason::new(Prefix::Closed, why));
        };
        match session.reconcile(&message) {
            Ok(answer) => self.send(relay::neg_msg(&sub_id, &answer)),
            Err(error) => {
                self.negentropy.remove(&sub_id);
                self.neg_err(&sub_id, Reason::invalid(error.to_string()));
            }
        }
    }

    pub(super) fn on_neg_close(&mut self, sub_id: &str) {
        self.negentropy.remove(sub_id);
    }

    fn count_limit(&self, limit: &'static str) {
        self.node
            .metrics()
            .rate_limited
            .add(1, &[KeyValue::new("limit", limit)]);
    }
}
