//! Filters compiled to SQLite: conditions over `events e` with `?` placeholders, their
//! values pushed alongside. No value a client sends is ever written into the SQL text.

use rusqlite::types::Value;

use crate::{
    nostr::{Filter, TagFilter},
    store::to_sql_int,
};

/// For a filter with a tag condition but no ids or authors (which their own indexes serve
/// better): the tag condition to drive the query from the tag index, and the rest of the
/// filter.
pub fn tag_driven(filter: &Filter) -> Option<(&TagFilter, Filter)> {
    if filter.ids.is_some() || filter.authors.is_some() {
        return None;
    }
    let tag = filter.tags.first()?;
    let rest = Filter {
        tags: filter.tags[1..].to_vec(),
        ..filter.clone()
    };
    Some((tag, rest))
}

/// A NIP-50 query as an FTS5 expression: every word, quoted, must occur.
pub fn fts_query(search: &str) -> String {
    let words: Vec<String> = search
        .split(' ')
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    words.join(" ")
}

/// The WHERE condition for one filter over `events e` (NIP-50 `search` aside), pushing its
/// bound values onto `values`.
pub fn condition(filter: &Filter, now: u64, values: &mut Vec<Value>) -> String {
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
