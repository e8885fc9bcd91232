//! Filters compiled to SQLite: conditions over `events e` with `?` placeholders, their
//! values pushed alongside. No value a client sends is ever written into the SQL text.

use rusqlite::types::Value;

use crate::{
    nostr::{Filter, TagFilter},
    store::{Cursor, to_sql_int},
};

/// A page's query: its SQL and values, and whether its rows come in order or are to be
/// put in order (newest first, ties by lowest id) by whoever reads them.
pub struct PageQuery {
    /// The SQL.
    pub sql: String,
    /// Its bound values, in order.
    pub values: Vec<Value>,
    /// The rows come in no order: a lookup by ids, whose few rows are cheaper to order
    /// after reading than to copy, JSON and all, through SQLite's sorter.
    pub unordered: bool,
}

/// The query for one page of a filter's stored events (`created_at`, id, JSON): newest
/// first (ties: lowest id) after `after`, or for a NIP-50 search its first matches by
/// relevance; at most `count`.
pub fn page(filter: &Filter, after: Option<Cursor>, count: usize, now: u64) -> PageQuery {
    select(", e.json", filter, after, count, now)
}

/// The query of [`page`] for `created_at` and id alone (no JSON read).
pub fn records(filter: &Filter, after: Option<Cursor>, count: usize, now: u64) -> PageQuery {
    select("", filter, after, count, now)
}

/// Tag values up to which a tag-driven query merges one arm per value; past it, one scan
/// of them all, sorted (SQLite allows 500 arms in a compound query, and each arm repeats the
/// filter's values).
const MAX_MERGED_VALUES: usize = 32;

/// The order and limit of a page: newest first, ties by lowest id (the first two columns).
const NEWEST_FIRST: &str = " ORDER BY 1 DESC, 2 ASC LIMIT ?";

/// One scan of the tag table: rows of the tag named by the first value pushed, whose value
/// is `matching` (`= ?` or `IN (…)`, its values pushed), of one of `kinds` (checked in the
/// tag row), joined to the events that pass `rest`, after `after`. CROSS JOIN keeps the tag
/// table, clustered newest first, as the outer loop, and the time and id columns are the
/// tag row's, in its order.
fn tag_scan(
    extra: &str,
    matching: &str,
    (kinds, rest): (Option<&[u16]>, &Filter),
    after: Option<Cursor>,
    now: u64,
    values: &mut Vec<Value>,
) -> String {
    let kind_match = match kinds {
        Some(kinds) => {
            values.extend(kinds.iter().map(|k| Value::Integer(i64::from(*k))));
            format!(" AND t.kind IN ({})", vec!["?"; kinds.len()].join(","))
        }
        None => String::new(),
    };
    let condition = condition(rest, now, values);
    let after = keyset(after, "t.created_at", "t.event_id", values);
    format!(
        "SELECT t.created_at, t.event_id{extra}
         FROM tags t CROSS JOIN events e ON e.seq = t.event_seq
         WHERE t.name = ? AND t.value {matching}{kind_match} AND {condition}{after}"
    )
}

/// The query for `created_at`, id and `extra` columns (after them) of one page.
fn select(
    extra: &str,
    filter: &Filter,
    after: Option<Cursor>,
    count: usize,
    now: u64,
) -> PageQuery {
    let mut values = Vec::new();
    let few_ids =
        filter.search.is_none() && filter.ids.as_ref().is_some_and(|ids| ids.len() <= count);
    let sql = match &filter.search {
        Some(search) => {
            values.push(Value::Text(fts_query(search)));
            let condition = condition(filter, now, &mut values);
            format!(
                "SELECT e.created_at, e.id{extra}
                 FROM events_fts JOIN events e ON e.seq = events_fts.rowid
                 WHERE events_fts MATCH ? AND {condition} ORDER BY events_fts.rank LIMIT ?"
            )
        }
        None => match tag_driven(filter) {
            Some((tag, kinds, rest)) if tag.values.len() <= MAX_MERGED_VALUES => {
                // One scan per value, each newest first from the tag index, merged: the
                // reading stops at the limit however many events match. (With `value IN
                // (…)` SQLite read and sorted every match to find the newest.) No DISTINCT
                // (it made SQLite collect every match in a temporary B-tree): an event
                // holding two of the values comes twice, and readers of pages skip what
                // they have.
                let scans: Vec<String> = tag
                    .values
                    .iter()
                    .map(|value| {
                        values.push(Value::Text(char::from(tag.letter).to_string()));
                        values.push(Value::Text(value.clone()));
                        tag_scan(extra, "= ?", (kinds, &rest), after, now, &mut values)
                    })
                    .collect();
                format!("{}{NEWEST_FIRST}", scans.join(" UNION ALL "))
            }
            Some((tag, kinds, rest)) => {
                values.push(Value::Text(char::from(tag.letter).to_string()));
                values.extend(tag.values.iter().map(|v| Value::Text(v.clone())));
                let matching = format!("IN ({})", vec!["?"; tag.values.len()].join(","));
                let scan = tag_scan(extra, &matching, (kinds, &rest), after, now, &mut values);
                format!("{scan}{NEWEST_FIRST}")
            }
            None => {
                let condition = condition(filter, now, &mut values);
                let after = keyset(after, "e.created_at", "e.id", &mut values);
                let order = if few_ids {
                    ""
                } else {
                    " ORDER BY e.created_at DESC, e.id ASC LIMIT ?"
                };
                format!(
                    "SELECT e.created_at, e.id{extra} FROM events e WHERE {condition}{after}{order}"
                )
            }
        },
    };
    if !few_ids {
        values.push(Value::Integer(to_sql_int(count as u64)));
    }
    PageQuery {
        sql,
        values,
        unordered: few_ids,
    }
}

/// The query counting events that match any filter, and its values; `None` when no filter
/// can match.
pub fn count(filters: &[Filter], now: u64) -> Option<(String, Vec<Value>)> {
    let mut values = Vec::new();
    let conditions: Vec<String> = filters
        .iter()
        .filter(|f| f.can_match())
        .map(|f| {
            let condition = condition(f, now, &mut values);
            let search = f.search.as_ref().map(|search| {
                values.push(Value::Text(fts_query(search)));
                " AND e.seq IN (SELECT rowid FROM events_fts WHERE events_fts MATCH ?)"
            });
            format!("({condition}{})", search.unwrap_or_default())
        })
        .collect();
    if conditions.is_empty() {
        return None;
    }
    let sql = format!(
        "SELECT COUNT(*) FROM events e WHERE {}",
        conditions.join(" OR ")
    );
    Some((sql, values))
}

/// The distinct pubkeys of the events `filter` matches (for NIP-45 HLL).
pub fn pubkeys(filter: &Filter, now: u64) -> Option<(String, Vec<Value>)> {
    let (count, values) = count(std::slice::from_ref(filter), now)?;
    let sql = count.replacen("SELECT COUNT(*)", "SELECT DISTINCT e.pubkey", 1);
    Some((sql, values))
}

/// The condition that a row comes after `after` in the newest-first order (older, or as
/// old with a higher id); `created` and `id` name the columns ordered by.
fn keyset(after: Option<Cursor>, created: &str, id: &str, values: &mut Vec<Value>) -> String {
    let Some(cursor) = after else {
        return String::new();
    };
    values.push(Value::Integer(cursor.created_at));
    values.push(Value::Integer(cursor.created_at));
    values.push(Value::Blob(cursor.id.to_vec()));
    format!(" AND {created} <= ? AND ({created} < ? OR {id} > ?)")
}

/// For a filter with a tag condition but no ids or authors (which their own indexes serve
/// better): the tag condition to drive the query from the tag table, the kinds (which tag
/// rows carry), and the rest of the filter.
fn tag_driven(filter: &Filter) -> Option<(&TagFilter, Option<&[u16]>, Filter)> {
    if filter.ids.is_some() || filter.authors.is_some() {
        return None;
    }
    let tag = filter.tags.first()?;
    let rest = Filter {
        tags: filter.tags[1..].into(),
        kinds: None,
        ..filter.clone()
    };
    Some((tag, filter.kinds.as_deref(), rest))
}

/// A NIP-50 query as an FTS5 expression: every word, quoted, must occur.
fn fts_query(search: &str) -> String {
    let words: Vec<String> = search
        .split(' ')
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    words.join(" ")
}

/// The WHERE condition for one filter over `events e` (NIP-50 `search` aside), pushing its
/// bound values onto `values`.
fn condition(filter: &Filter, now: u64, values: &mut Vec<Value>) -> String {
    fn placeholders(n: usize) -> String {
        vec!["?"; n].join(",")
    }
    let mut parts = Vec::new();
    if let Some(ids) = &filter.ids {
        parts.push(format!("e.id IN ({})", placeholders(ids.len())));
        values.extend(ids.iter().map(|id| Value::Blob(id.to_vec())));
    }
    if let Some(authors) = &filter.authors {
        parts.push(format!("e.pubkey IN ({})", placeholders(authors.len())));
        values.extend(authors.iter().map(|a| Value::Blob(a.to_vec())));
    }
    if let Some(kinds) = &filter.kinds {
        parts.push(format!("e.kind IN ({})", placeholders(kinds.len())));
        values.extend(kinds.iter().map(|k| Value::Integer(i64::from(*k))));
    }
    if !filter.excluded_kinds.is_empty() {
        let excluded = &filter.excluded_kinds;
        parts.push(format!("e.kind NOT IN ({})", placeholders(excluded.len())));
        values.extend(excluded.iter().map(|k| Value::Integer(i64::from(*k))));
    }
    if let Some(since) = filter.since {
        parts.push("e.created_at >= ?".into());
        values.push(Value::Integer(to_sql_int(since)));
    }
    if let Some(until) = filter.until {
        parts.push("e.created_at <= ?".into());
        values.push(Value::Integer(to_sql_int(until)));
    }
    for tag in &filter.tags {
        parts.push(format!(
            "e.seq IN (SELECT event_seq FROM tags WHERE name = ? AND value IN ({}))",
            placeholders(tag.values.len())
        ));
        values.push(Value::Text(char::from(tag.letter).to_string()));
        values.extend(tag.values.iter().map(|v| Value::Text(v.clone())));
    }
    parts.push("(e.expires_at IS NULL OR e.expires_at > ?)".into());
    values.push(Value::Integer(to_sql_int(now)));
    parts.join(" AND ")
}
