//! The embedded store's write rules: NIP-01 replacement, NIP-09 deletion and NIP-62
//! requests to vanish, applied to one event at a time inside the batch's transaction (the
//! one writer thread decides them in order, without races).

use rusqlite::{OptionalExtension, Transaction, params};

use crate::{
    nostr::{
        Event, KindClass, VerifiedEvent, hex,
        kind::{DELETION, GIFT_WRAP, VANISH},
    },
    store::{WriteOutcome, to_sql_int},
};

/// Applies NIP-01 and NIP-09 to one event inside the batch's transaction.
pub fn write_one(tx: &Transaction<'_>, verified: &VerifiedEvent) -> rusqlite::Result<WriteOutcome> {
    let e = &verified.event;
    let exists = tx
        .prepare_cached("SELECT 1 FROM events WHERE id = ?1")?
        .exists([&e.id[..]])?;
    if exists {
        return Ok(WriteOutcome::Duplicate);
    }
    if e.kind != DELETION
        && tx
            .prepare_cached("SELECT 1 FROM deleted_ids WHERE event_id = ?1 AND pubkey = ?2")?
            .exists(params![&e.id[..], &e.pubkey[..]])?
    {
        return Ok(WriteOutcome::Deleted);
    }
    if vanished(tx, e)? {
        return Ok(WriteOutcome::Vanished);
    }
    let d_tag = match e.class() {
        KindClass::Ephemeral => return Ok(WriteOutcome::Stored),
        KindClass::Regular => None,
        KindClass::Replaceable => Some(""),
        KindClass::Addressable => Some(e.d_tag()),
    };
    let created_at = to_sql_int(e.created_at);
    if let Some(d) = d_tag {
        let deleted_until: Option<i64> = tx
            .prepare_cached(
                "SELECT until FROM deleted_addresses WHERE kind = ?1 AND pubkey = ?2 AND d_tag = ?3",
            )?
            .query_row(params![e.kind, &e.pubkey[..], d], |r| r.get(0))
            .optional()?;
        if deleted_until.is_some_and(|until| created_at <= until) {
            return Ok(WriteOutcome::Deleted);
        }
        let newer_exists = tx
            .prepare_cached(
                "SELECT 1 FROM events WHERE pubkey = ?1 AND kind = ?2 AND d_tag = ?3
                 AND (created_at > ?4 OR (created_at = ?4 AND id < ?5))",
            )?
            .exists(params![&e.pubkey[..], e.kind, d, created_at, &e.id[..]])?;
        if newer_exists {
            return Ok(WriteOutcome::Superseded);
        }
        delete_events(
            tx,
            "pubkey = ?1 AND kind = ?2 AND d_tag = ?3",
            params![&e.pubkey[..], e.kind, d],
        )?;
    }
    let expires_at = e.expiration().ok().flatten().map(to_sql_int);
    tx.prepare_cached(
        "INSERT INTO events (id, pubkey, created_at, kind, d_tag, expires_at, json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        &e.id[..],
        &e.pubkey[..],
        created_at,
        e.kind,
        d_tag,
        expires_at,
        &*verified.json
    ])?;
    let seq = tx.last_insert_rowid();
    let mut insert_tag = tx.prepare_cached(
        "INSERT OR IGNORE INTO tags (name, value, created_at, event_id, event_seq, kind)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (letter, value) in e.indexed_tags() {
        insert_tag.execute(params![
            char::from(letter).to_string(),
            value,
            created_at,
            &e.id[..],
            seq,
            e.kind
        ])?;
    }
    if !e.content.is_empty() {
        tx.prepare_cached("INSERT INTO events_fts (rowid, content) VALUES (?1, ?2)")?
            .execute(params![seq, e.content])?;
    }
    if e.kind == DELETION {
        apply_deletion(tx, e)?;
    }
    if e.kind == VANISH {
        apply_vanish(tx, e)?;
    }
    Ok(WriteOutcome::Stored)
}

/// Whether the author of `e`, or for a gift wrap one of the pubkeys it p-tags, asked to
/// vanish after `e` was made.
fn vanished(tx: &Transaction<'_>, e: &Event) -> rusqlite::Result<bool> {
    let created_at = to_sql_int(e.created_at);
    let mut after =
        tx.prepare_cached("SELECT 1 FROM vanished WHERE pubkey = ?1 AND until >= ?2")?;
    if after.exists(params![&e.pubkey[..], created_at])? {
        return Ok(true);
    }
    if e.kind != GIFT_WRAP {
        return Ok(false);
    }
    for tag in &e.tags {
        if tag.len() >= 2
            && tag[0] == "p"
            && let Some(recipient) = hex::decode::<32>(&tag[1])
            && after.exists(params![&recipient[..], created_at])?
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// NIP-62: removes every event of the requester up to the request's time (the request
/// itself excepted) and every gift wrap that p-tags the requester up to then, and remembers
/// the time so that they are refused if they come back.
fn apply_vanish(tx: &Transaction<'_>, request: &Event) -> rusqlite::Result<()> {
    let until = to_sql_int(request.created_at);
    delete_events(
        tx,
        "pubkey = ?1 AND created_at <= ?2 AND id != ?3",
        params![&request.pubkey[..], until, &request.id[..]],
    )?;
    // Found first: deleting an event deletes the tag rows that find it.
    let wraps: Vec<i64> = tx
        .prepare_cached(
            "SELECT DISTINCT e.seq FROM events e JOIN tags t ON t.event_seq = e.seq
             WHERE e.kind = ?1 AND e.created_at <= ?2 AND t.name = 'p' AND t.value = ?3",
        )?
        .query_map(
            params![GIFT_WRAP, until, hex::encode(&request.pubkey)],
            |r| r.get(0),
        )?
        .collect::<Result<_, _>>()?;
    for seq in wraps {
        delete_events(tx, "seq = ?1", [seq])?;
    }
    tx.prepare_cached(
        "INSERT INTO vanished (pubkey, until) VALUES (?1, ?2)
         ON CONFLICT (pubkey) DO UPDATE SET until = max(until, excluded.until)",
    )?
    .execute(params![&request.pubkey[..], until])?;
    Ok(())
}

/// NIP-09: removes what a deletion request names, when the requester is the author, and
/// remembers it so that the deleted events are refused if they are sent again.
fn apply_deletion(tx: &Transaction<'_>, request: &Event) -> rusqlite::Result<()> {
    let author = &request.pubkey[..];
    let targets = request.deletion_targets();
    for id in &targets.ids {
        delete_events(
            tx,
            "id = ?1 AND pubkey = ?2 AND kind != 5",
            params![&id[..], author],
        )?;
        tx.prepare_cached("INSERT OR IGNORE INTO deleted_ids (event_id, pubkey) VALUES (?1, ?2)")?
            .execute(params![&id[..], author])?;
    }
    let until = to_sql_int(request.created_at);
    for (kind, d) in &targets.addresses {
        delete_events(
            tx,
            "pubkey = ?1 AND kind = ?2 AND d_tag = ?3 AND created_at <= ?4",
            params![author, kind, d, until],
        )?;
        tx.prepare_cached(
            "INSERT INTO deleted_addresses (kind, pubkey, d_tag, until) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, pubkey, d_tag) DO UPDATE SET until = max(until, excluded.until)",
        )?
        .execute(params![kind, author, d, until])?;
    }
    Ok(())
}

/// Deletes the events matching `condition`, with their tag and search rows; returns how many.
pub fn delete_events(
    tx: &Transaction<'_>,
    condition: &str,
    values: impl rusqlite::Params + Clone,
) -> rusqlite::Result<usize> {
    let doomed = format!("SELECT seq FROM events WHERE {condition}");
    tx.prepare_cached(&format!("DELETE FROM tags WHERE event_seq IN ({doomed})"))?
        .execute(values.clone())?;
    tx.prepare_cached(&format!("DELETE FROM events_fts WHERE rowid IN ({doomed})"))?
        .execute(values.clone())?;
    tx.prepare_cached(&format!("DELETE FROM events WHERE {condition}"))?
        .execute(values)
}
