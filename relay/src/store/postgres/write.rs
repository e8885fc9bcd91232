//! The PostgreSQL write path: a batch of events in one transaction.
//!
//! The transaction first takes an advisory lock on the author of every event it writes
//! ([`lock_keys`], sorted, so that writers on different nodes never deadlock), then writes
//! each run of plain events (regular kinds) with one set-based statement ([`WRITE_PLAIN`])
//! and every other event with a call of `starling_write_event` ([`WRITE_BY_RULE`]), all
//! pipelined on one connection in batch order ([`plan`]).
//!
//! The author locks make duplicate, replacement and deletion decisions atomic across every
//! node: every rule relates events of one author (an event and its duplicate, the versions
//! of a replaceable event, a deletion and the events it deletes, which NIP-09 limits to the
//! author's own). A lock per author, not per id or address, keeps the locks a transaction
//! holds few (a deletion of 2,000 events takes one), and a batch of more than
//! [`MAX_LOCKS`] authors is written as several transactions, so that nodes writing at once
//! never run PostgreSQL out of lock memory (`max_locks_per_transaction` × connections).

use std::{borrow::Cow, sync::Arc};

use deadpool_postgres::Object;
use futures_util::future::try_join_all;
use tokio_postgres::error::SqlState;

use super::sql;
use crate::{
    nostr::{
        Event, KindClass, VerifiedEvent,
        kind::{DELETION, GIFT_WRAP, VANISH},
    },
    store::{WriteOutcome, to_sql_int},
};

/// How often a batch is retried after a deadlock or serialization failure.
const WRITE_ATTEMPTS: usize = 5;

/// Most advisory locks (distinct authors) one transaction takes.
pub const MAX_LOCKS: usize = 64;

/// Writes `batch` in as few transactions as [`MAX_LOCKS`] allows, in order (each retried
/// after a deadlock or a serialization failure); the outcome of each event, in order.
pub async fn write_batch(
    client: &mut Object,
    batch: &[Arc<VerifiedEvent>],
) -> Result<Vec<WriteOutcome>, tokio_postgres::Error> {
    let mut outcomes = Vec::with_capacity(batch.len());
    for part in split_by_authors(batch, MAX_LOCKS) {
        let params: Vec<WriteParams<'_>> = part.iter().map(|e| WriteParams::new(e)).collect();
        let locks = lock_keys(part);
        let mut attempt = 1;
        loop {
            match write_once(client, &params, &locks).await {
                Err(e) if retryable(&e) && attempt < WRITE_ATTEMPTS => attempt += 1,
                result => {
                    outcomes.extend(result?);
                    break;
                }
            }
        }
    }
    Ok(outcomes)
}

/// Consecutive parts of `batch`, each with at most `max` distinct authors.
fn split_by_authors(batch: &[Arc<VerifiedEvent>], max: usize) -> Vec<&[Arc<VerifiedEvent>]> {
    let mut parts = Vec::new();
    let mut authors = std::collections::HashSet::new();
    let mut start = 0;
    for (i, event) in batch.iter().enumerate() {
        if !authors.contains(&event.event.pubkey) && authors.len() == max {
            parts.push(&batch[start..i]);
            authors.clear();
            start = i;
        }
        authors.insert(event.event.pubkey);
    }
    if start < batch.len() {
        parts.push(&batch[start..]);
    }
    parts
}

async fn write_once(
    client: &mut Object,
    batch: &[WriteParams<'_>],
    locks: &[i64],
) -> Result<Vec<WriteOutcome>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let lock = tx
        .prepare_cached("SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::BIGINT[]) AS k")
        .await?;
    tx.execute(&lock, &[&locks]).await?;
    let by_rule = tx.prepare_cached(WRITE_BY_RULE).await?;
    let plain = tx.prepare_cached(WRITE_PLAIN).await?;
    let steps = plan(batch);
    // Every step is sent before the first answer arrives (pipelined), in batch order.
    let runs = steps.iter().map(|step| {
        let (by_rule, plain, tx) = (&by_rule, &plain, &tx);
        async move {
            match step {
                Step::ByRule(i) => {
                    let row = tx.query_one(by_rule, &batch[*i].args()).await?;
                    Ok(vec![(*i, outcome(row.get(0)))])
                }
                Step::Plain(run) => {
                    let arrays = PlainArrays::new(run.iter().map(|i| &batch[*i]));
                    let rows = tx.query(plain, &arrays.args()).await?;
                    Ok(rows
                        .iter()
                        .map(|row| (run[row.get::<_, i64>(0) as usize - 1], outcome(row.get(1))))
                        .collect::<Vec<_>>())
                }
            }
        }
    });
    let done = try_join_all(runs).await?;
    tx.commit().await?;
    // Events no step wrote repeat an id earlier in their run: duplicates.
    let mut outcomes = vec![WriteOutcome::Duplicate; batch.len()];
    for (i, result) in done.into_iter().flatten() {
        outcomes[i] = result;
    }
    Ok(outcomes)
}

/// Writes one event, applying every NIP-01 and NIP-09 rule (see the migrations).
const WRITE_BY_RULE: &str = "SELECT starling_write_event($1, $2, $3, $4, $5, $6,
    NULLIF($7::TEXT, '')::TSVECTOR, $8, $9, $10, $11, $12, $13)";

/// Writes a run of plain events (regular kinds, no deletion requests, distinct ids) in one
/// set-based statement: an event is stored unless its id is stored already (1), its author
/// deleted it (3) or its author vanished after it was made (4). Answers (position in the run from 1, outcome) for every event.
const WRITE_PLAIN: &str = "
WITH input AS (
    SELECT * FROM unnest($1::BYTEA[], $2::BYTEA[], $3::BIGINT[], $4::INTEGER[], $5::BIGINT[],
                         $6::TEXT[], $7::TEXT[])
        WITH ORDINALITY AS i (id, pubkey, created_at, kind, expires_at, lexemes, json, n)
), stored AS (
    INSERT INTO events (id, pubkey, created_at, kind, expires_at, content_fts, json)
    SELECT id, pubkey, created_at, kind, expires_at,
           NULLIF(lexemes, '')::TSVECTOR, json
    FROM input
    WHERE NOT EXISTS (SELECT 1 FROM deleted_ids d WHERE d.event_id = input.id AND d.pubkey = input.pubkey)
      AND NOT EXISTS (SELECT 1 FROM vanished v WHERE v.pubkey = input.pubkey AND v.until >= input.created_at)
    ORDER BY n
    ON CONFLICT (id) DO NOTHING
    RETURNING seq, id
), tagged AS (
    INSERT INTO event_tags (event_seq, event_id, name, value, kind, created_at)
    SELECT DISTINCT s.seq, s.id, t.name, t.value, i.kind, i.created_at
    FROM unnest($8::BIGINT[], $9::TEXT[], $10::TEXT[]) AS t (n, name, value)
    JOIN input i ON i.n = t.n
    JOIN stored s ON s.id = i.id
)
SELECT i.n,
       CASE WHEN s.seq IS NOT NULL THEN 0
            WHEN EXISTS (SELECT 1 FROM deleted_ids d WHERE d.event_id = i.id AND d.pubkey = i.pubkey) THEN 3
            WHEN EXISTS (SELECT 1 FROM vanished v WHERE v.pubkey = i.pubkey AND v.until >= i.created_at) THEN 4
            ELSE 1 END::SMALLINT
FROM input i LEFT JOIN stored s ON s.id = i.id";

/// The outcome a write statement reports as a number.
fn outcome(code: i16) -> WriteOutcome {
    match code {
        1 => WriteOutcome::Duplicate,
        2 => WriteOutcome::Superseded,
        3 => WriteOutcome::Deleted,
        4 => WriteOutcome::Vanished,
        _ => WriteOutcome::Stored,
    }
}

/// One statement of a batch write.
enum Step {
    /// Positions of consecutive plain events, written by [`WRITE_PLAIN`].
    Plain(Vec<usize>),
    /// The position of an event written by [`WRITE_BY_RULE`] (replaceable, addressable, a
    /// deletion request, a request to vanish or a gift wrap).
    ByRule(usize),
}

/// Splits a batch into steps that keep its order. A plain event repeating an id earlier in
/// its own run is left out: a duplicate. (A repeat after a step by rule is sent, since that
/// step may have deleted the first.)
fn plan(batch: &[WriteParams<'_>]) -> Vec<Step> {
    let mut in_run = std::collections::HashSet::new();
    let mut steps = Vec::new();
    for (i, event) in batch.iter().enumerate() {
        if !event.is_plain() {
            in_run.clear();
            steps.push(Step::ByRule(i));
        } else if !in_run.insert(event.id) {
            continue;
        } else if let Some(Step::Plain(run)) = steps.last_mut() {
            run.push(i);
        } else {
            steps.push(Step::Plain(vec![i]));
        }
    }
    steps
}

/// A run of plain events as the column arrays of [`WRITE_PLAIN`].
struct PlainArrays<'a> {
    ids: Vec<&'a [u8]>,
    pubkeys: Vec<&'a [u8]>,
    created_at: Vec<i64>,
    kinds: Vec<i32>,
    expires_at: Vec<Option<i64>>,
    lexemes: Vec<&'a str>,
    jsons: Vec<&'a str>,
    tag_events: Vec<i64>,
    tag_names: Vec<&'a str>,
    tag_values: Vec<&'a str>,
}

impl<'a> PlainArrays<'a> {
    fn new(run: impl Iterator<Item = &'a WriteParams<'a>>) -> Self {
        let mut arrays = Self {
            ids: Vec::new(),
            pubkeys: Vec::new(),
            created_at: Vec::new(),
            kinds: Vec::new(),
            expires_at: Vec::new(),
            lexemes: Vec::new(),
            jsons: Vec::new(),
            tag_events: Vec::new(),
            tag_names: Vec::new(),
            tag_values: Vec::new(),
        };
        for (n, event) in run.enumerate() {
            arrays.ids.push(event.id);
            arrays.pubkeys.push(event.pubkey);
            arrays.created_at.push(event.created_at);
            arrays.kinds.push(event.kind);
            arrays.expires_at.push(event.expires_at);
            arrays.lexemes.push(&event.lexemes);
            arrays.jsons.push(event.json);
            for (name, value) in event.tag_names.iter().zip(&event.tag_values) {
                arrays.tag_events.push(n as i64 + 1);
                arrays.tag_names.push(name);
                arrays.tag_values.push(value.as_ref());
            }
        }
        arrays
    }

    fn args(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 10] {
        [
            &self.ids,
            &self.pubkeys,
            &self.created_at,
            &self.kinds,
            &self.expires_at,
            &self.lexemes,
            &self.jsons,
            &self.tag_events,
            &self.tag_names,
            &self.tag_values,
        ]
    }
}

/// One event as the arguments of `starling_write_event`.
struct WriteParams<'a> {
    id: &'a [u8],
    pubkey: &'a [u8],
    created_at: i64,
    kind: i32,
    d_tag: Option<Cow<'a, str>>,
    expires_at: Option<i64>,
    /// The content's words as a `tsvector` literal ([`sql::tsvector`]).
    lexemes: String,
    json: &'a str,
    tag_names: Vec<String>,
    tag_values: Vec<Cow<'a, str>>,
    delete_ids: Vec<Vec<u8>>,
    delete_kinds: Vec<i32>,
    delete_d_tags: Vec<String>,
}

impl<'a> WriteParams<'a> {
    fn new(verified: &'a VerifiedEvent) -> Self {
        let e = &verified.event;
        let (tag_names, tag_values) = e
            .indexed_tags()
            .map(|(letter, value)| (char::from(letter).to_string(), sql::tag_key(value)))
            .unzip();
        let targets = if e.kind == DELETION {
            e.deletion_targets()
        } else {
            Default::default()
        };
        let (delete_kinds, delete_d_tags) = targets
            .addresses
            .into_iter()
            .map(|(kind, d)| (i32::from(kind), sql::tag_key(&d).into_owned()))
            .unzip();
        Self {
            id: &e.id,
            pubkey: &e.pubkey,
            created_at: to_sql_int(e.created_at),
            kind: i32::from(e.kind),
            d_tag: address_d_tag(e).map(sql::tag_key),
            expires_at: e.expiration().ok().flatten().map(to_sql_int),
            lexemes: sql::tsvector(&e.content),
            json: &verified.json,
            tag_names,
            tag_values,
            delete_ids: targets.ids.iter().map(|id| id.to_vec()).collect(),
            delete_kinds,
            delete_d_tags,
        }
    }
}

impl WriteParams<'_> {
    /// Whether the event is stored as it is: a regular kind, not a deletion request.
    fn is_plain(&self) -> bool {
        self.d_tag.is_none()
            && ![DELETION, VANISH, GIFT_WRAP]
                .iter()
                .any(|k| self.kind == i32::from(*k))
    }

    /// The arguments in the function's order.
    fn args(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 13] {
        [
            &self.id,
            &self.pubkey,
            &self.created_at,
            &self.kind,
            &self.d_tag,
            &self.expires_at,
            &self.lexemes,
            &self.json,
            &self.tag_names,
            &self.tag_values,
            &self.delete_ids,
            &self.delete_kinds,
            &self.delete_d_tags,
        ]
    }
}

/// The `d_tag` column: "" for replaceable kinds, the `d` tag for addressable ones.
fn address_d_tag(e: &Event) -> Option<&str> {
    match e.class() {
        KindClass::Replaceable => Some(""),
        KindClass::Addressable => Some(e.d_tag()),
        _ => None,
    }
}

/// The advisory lock keys of a batch: one per author, sorted and unique.
fn lock_keys(batch: &[Arc<VerifiedEvent>]) -> Vec<i64> {
    let mut keys: Vec<i64> = batch
        .iter()
        .map(|e| {
            let prefix: [u8; 8] = e.event.pubkey[..8].try_into().unwrap_or_default();
            i64::from_be_bytes(prefix)
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Whether a failed write may succeed if tried again.
fn retryable(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(&SqlState::T_R_DEADLOCK_DETECTED | &SqlState::T_R_SERIALIZATION_FAILURE)
    )
}
