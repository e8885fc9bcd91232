//! Filters compiled to PostgreSQL: text with `$n` placeholders and the values bound to them.
//! No value a client sends is ever written into the SQL text.

use std::{borrow::Cow, fmt::Write};

use tokio_postgres::types::ToSql;

use sha2::{Digest, Sha256};

use crate::{
    nostr::{Filter, TagFilter, hex, search},
    store::{Cursor, to_sql_int},
};

/// A value bound to a placeholder.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// SQL under construction and its bound values.
#[derive(Default)]
pub struct Query {
    /// The values, in placeholder order.
    pub params: Vec<Param>,
}

impl Query {
    /// Binds a value and returns its placeholder.
    pub fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// The values as the driver wants them.
    pub fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// The condition on `events e` for one filter, live at time `now`.
pub fn condition(filter: &Filter, now: u64, q: &mut Query) -> String {
    let mut parts = Vec::new();
    if let Some(ids) = &filter.ids {
        let ids: Vec<Vec<u8>> = ids.iter().map(|id| id.to_vec()).collect();
        parts.push(format!("e.id = ANY({})", q.bind(ids)));
    }
    if let Some(authors) = &filter.authors {
        let authors: Vec<Vec<u8>> = authors.iter().map(|a| a.to_vec()).collect();
        parts.push(format!("e.pubkey = ANY({})", q.bind(authors)));
    }
    if let Some(kinds) = &filter.kinds {
        parts.push(format!("e.kind = ANY({})", q.bind(sql_kinds(kinds))));
    }
    if !filter.excluded_kinds.is_empty() {
        let excluded = sql_kinds(&filter.excluded_kinds);
        parts.push(format!("e.kind <> ALL({})", q.bind(excluded)));
    }
    if let Some(since) = filter.since {
        parts.push(format!("e.created_at >= {}", q.bind(to_sql_int(since))));
    }
    if let Some(until) = filter.until {
        parts.push(format!("e.created_at <= {}", q.bind(to_sql_int(until))));
    }
    for tag in &filter.tags {
        let name = q.bind(char::from(tag.letter).to_string());
        let values = q.bind(tag_keys(tag));
        parts.push(format!(
            "EXISTS (SELECT 1 FROM event_tags t WHERE t.event_seq = e.seq AND t.name = {name} AND t.value = ANY({values}))"
        ));
    }
    if let Some(search) = &filter.search {
        let query = tsquery(search);
        if query.is_empty() {
            parts.push("FALSE".to_string());
        } else {
            parts.push(format!("e.content_fts @@ {}::TEXT::TSQUERY", q.bind(query)));
        }
    }
    let now = q.bind(to_sql_int(now));
    parts.push(format!("(e.expires_at IS NULL OR e.expires_at > {now})"));
    parts.join(" AND ")
}

/// Longest tag value (or `d` tag) indexed as it is; longer ones are indexed by their hash.
pub const INDEXED_VALUE_BYTES: usize = 512;

/// What starts the index key of a long value (a character no ordinary tag value holds).
const HASHED: &str = "\u{1}sha256:";

/// What the tag index and the address index hold for a tag value: the value itself when
/// PostgreSQL can index it as it is, else a marker and its SHA-256: for a long value (so
/// that any value the limits allow fits an index row; B-tree rows hold about 2.7 kB), and
/// for one holding a NUL character (which PostgreSQL's text cannot). A filter for such a
/// value finds it by the same key, and its matches are checked against the whole value
/// ([`needs_recheck`]).
pub fn tag_key(value: &str) -> Cow<'_, str> {
    if value.len() <= INDEXED_VALUE_BYTES && !value.contains('\0') {
        Cow::Borrowed(value)
    } else {
        let digest: [u8; 32] = Sha256::digest(value).into();
        Cow::Owned(format!("{HASHED}{}", hex::encode(&digest)))
    }
}

/// The index keys of a tag condition's values.
fn tag_keys(tag: &TagFilter) -> Vec<String> {
    tag.values.iter().map(|v| tag_key(v).into_owned()).collect()
}

/// Whether the events the index finds for `filter` must be checked against it again: a
/// long value is found by its hash, and a short value could be made to look like a hash.
pub fn needs_recheck(filter: &Filter) -> bool {
    filter
        .tags
        .iter()
        .flat_map(|t| &t.values)
        .any(|v| v.len() > INDEXED_VALUE_BYTES || v.contains('\0') || v.starts_with(HASHED))
}

/// The condition that a row comes after `after` in the newest-first order: older, or as
/// old with a higher id. `created` and `id` name the columns ordered by.
fn keyset(after: Option<Cursor>, created: &str, id: &str, q: &mut Query) -> String {
    match after {
        None => String::new(),
        Some(cursor) => {
            let at = q.bind(cursor.created_at);
            let last = q.bind(cursor.id.to_vec());
            format!(" AND {created} <= {at} AND ({created} < {at} OR {id} > {last})")
        }
    }
}

/// Kinds as PostgreSQL's `INTEGER`.
fn sql_kinds(kinds: &[u16]) -> Vec<i32> {
    kinds.iter().map(|k| i32::from(*k)).collect()
}

/// How many of the newest matches of a NIP-50 search are ranked by relevance.
pub const SEARCH_CANDIDATES: i64 = 1000;

/// The most index probes one filter is answered with; beyond it the planner gets the whole
/// condition.
pub const MAX_PROBES: usize = 16;

/// The most (author, kind) probes one filter is answered with: a home feed of a few dozen
/// authors and two kinds reads at most its limit from each author's index range, where the
/// planner's own choice, walking the time index until enough rows are by those authors,
/// grows with the store (44 ms at 10,000,000 events against 4.5 ms probed).
pub const MAX_AUTHOR_PROBES: usize = 64;

/// The query for one page of a filter's stored events: newest first (ties: lowest id),
/// after `after`, at most `count`. A NIP-50 search ranks by relevance the newest
/// [`SEARCH_CANDIDATES`] matches, so that a word found in millions of events costs no more
/// than a rare one, and answers its first `count`.
///
/// A filter naming a few (author, kind) pairs, a few kinds, or a few values of one tag is
/// answered by index-ordered probes: one newest-first index scan per pair, kind or value
/// (`events_by_author`, `events_by_kind`, `event_tags_by_value`),
/// each stopping at the limit, merged. The cost follows the limit, not the number of
/// matches.
pub fn select(filter: &Filter, after: Option<Cursor>, count: usize, now: u64) -> (String, Query) {
    let page = Page { after, count };
    if let Some(search) = &filter.search {
        return search_select(filter, search, count, now);
    }
    let kinds = filter.kinds.as_deref();
    if filter.ids.is_none() {
        if let (Some(authors), Some(kinds)) = (&filter.authors, kinds) {
            if authors.len() * kinds.len() <= MAX_AUTHOR_PROBES {
                return author_probes(filter, authors, kinds, page, now);
            }
        }
        let tag = filter.tags.iter().find(|t| t.values.len() <= MAX_PROBES);
        if let Some(tag) = tag {
            return tag_probes(filter, tag, page, now);
        }
        if let (None, Some(kinds)) = (&filter.authors, kinds) {
            if kinds.len() <= MAX_PROBES {
                return kind_probes(filter, kinds, page, now);
            }
        }
    }
    let mut q = Query::default();
    let condition = condition(filter, now, &mut q);
    let after = keyset(page.after, "e.created_at", "e.id", &mut q);
    let limit = q.bind(to_sql_int(count as u64));
    let sql = format!(
        "SELECT e.created_at, e.id FROM events e WHERE {condition}{after}
         ORDER BY e.created_at DESC, e.id LIMIT {limit}"
    );
    (sql, q)
}

/// Where a page starts and how many rows it holds at most.
#[derive(Clone, Copy)]
struct Page {
    after: Option<Cursor>,
    count: usize,
}

/// A NIP-50 search as a `tsquery` every one of whose words ([`search::words`]) must be a
/// lexeme of the content; "" (matching nothing) for a search without words.
fn tsquery(search: &str) -> String {
    let words: Vec<String> = search::words(search).map(|w| format!("'{w}'")).collect();
    words.join(" & ")
}

/// An event's content as a `tsvector` literal of its words ([`search::words`]) with their
/// positions, built here rather than by PostgreSQL's `to_tsvector` (which costs several
/// times more per event); "" when the content has no words.
pub fn tsvector(content: &str) -> String {
    // PostgreSQL allows positions up to 16383 and 256 of them per lexeme; fewer suffice.
    const MAX_POSITION: usize = 16_383;
    const POSITIONS_PER_WORD: usize = 16;
    const LONGEST_WORD: usize = 255;
    let mut words: Vec<(Cow<'_, str>, usize)> = search::words(content)
        .enumerate()
        .filter(|(_, word)| word.len() <= LONGEST_WORD)
        .map(|(n, word)| (word, (n + 1).min(MAX_POSITION)))
        .collect();
    // By word, then position: each word's positions in increasing order.
    words.sort_unstable();
    let mut literal = String::with_capacity(content.len() * 2);
    let mut previous: Option<&str> = None;
    let mut kept = 0;
    for (word, position) in &words {
        if previous == Some(word.as_ref()) {
            kept += 1;
            if kept <= POSITIONS_PER_WORD {
                let _ = write!(literal, ",{position}");
            }
            continue;
        }
        if previous.is_some() {
            literal.push(' ');
        }
        let _ = write!(literal, "'{word}':{position}");
        previous = Some(word);
        kept = 1;
    }
    literal
}

fn search_select(filter: &Filter, search: &str, count: usize, now: u64) -> (String, Query) {
    let mut q = Query::default();
    let condition = condition(filter, now, &mut q);
    let query = q.bind(tsquery(search));
    let candidates = q.bind(SEARCH_CANDIDATES);
    let limit = q.bind(to_sql_int(count as u64));
    let sql = format!(
        "SELECT created_at, id FROM (
             SELECT e.created_at, e.id, e.content_fts FROM events e WHERE {condition}
             ORDER BY e.created_at DESC, e.id LIMIT {candidates}
         ) AS newest
         ORDER BY ts_rank(content_fts, {query}::TEXT::TSQUERY) DESC, created_at DESC, id
         LIMIT {limit}"
    );
    (sql, q)
}

/// One probe of `events_by_author` per (author, kind) pair.
fn author_probes(
    filter: &Filter,
    authors: &[[u8; 32]],
    kinds: &[u16],
    page: Page,
    now: u64,
) -> (String, Query) {
    let (mut pubkeys, mut pair_kinds) = (Vec::new(), Vec::new());
    for author in authors {
        for kind in kinds {
            pubkeys.push(author.to_vec());
            pair_kinds.push(i32::from(*kind));
        }
    }
    let rest = Filter {
        authors: None,
        kinds: None,
        ..filter.clone()
    };
    let mut q = Query::default();
    let pubkeys = q.bind(pubkeys);
    let pair_kinds = q.bind(pair_kinds);
    let rest = condition(&rest, now, &mut q);
    let after = keyset(page.after, "e.created_at", "e.id", &mut q);
    let probe = format!(
        "SELECT e.created_at, e.id FROM events e
         WHERE e.pubkey = p.pubkey AND e.kind = p.kind AND {rest}{after}"
    );
    let source = format!("unnest({pubkeys}::BYTEA[], {pair_kinds}::INTEGER[]) AS p (pubkey, kind)");
    merged(
        source,
        probe,
        "e.created_at DESC, e.id",
        false,
        page.count,
        q,
    )
}

/// One probe of `events_by_kind` per kind.
fn kind_probes(filter: &Filter, kinds: &[u16], page: Page, now: u64) -> (String, Query) {
    let rest = Filter {
        kinds: None,
        ..filter.clone()
    };
    let mut q = Query::default();
    let source = format!(
        "unnest({}::INTEGER[]) AS p (kind)",
        q.bind(sql_kinds(kinds))
    );
    let rest = condition(&rest, now, &mut q);
    let after = keyset(page.after, "e.created_at", "e.id", &mut q);
    let probe =
        format!("SELECT e.created_at, e.id FROM events e WHERE e.kind = p.kind AND {rest}{after}");
    merged(
        source,
        probe,
        "e.created_at DESC, e.id",
        false,
        page.count,
        q,
    )
}

/// One probe of `event_tags_by_value` per value of `tag`, which also holds each row's kind.
/// An event may carry several of the values, so the merge removes repeats.
fn tag_probes(filter: &Filter, tag: &TagFilter, page: Page, now: u64) -> (String, Query) {
    let rest = Filter {
        kinds: None,
        tags: filter
            .tags
            .iter()
            .filter(|t| t.letter != tag.letter)
            .cloned()
            .collect(),
        ..filter.clone()
    };
    let mut q = Query::default();
    let name = q.bind(char::from(tag.letter).to_string());
    let source = format!("unnest({}::TEXT[]) AS p (value)", q.bind(tag_keys(tag)));
    // The kinds are read from the tag index itself, as it is walked newest first.
    let kind_match = match &filter.kinds {
        Some(kinds) => format!(" AND t.kind = ANY({}::INTEGER[])", q.bind(sql_kinds(kinds))),
        None => String::new(),
    };
    // The window again on the tag rows, so that the index scan starts and stops there.
    let mut window = String::new();
    if let Some(since) = filter.since {
        window.push_str(&format!(
            " AND t.created_at >= {}",
            q.bind(to_sql_int(since))
        ));
    }
    if let Some(until) = filter.until {
        window.push_str(&format!(
            " AND t.created_at <= {}",
            q.bind(to_sql_int(until))
        ));
    }
    let rest = condition(&rest, now, &mut q);
    let after = keyset(page.after, "t.created_at", "t.event_id", &mut q);
    let probe = format!(
        "SELECT t.created_at, t.event_id AS id FROM event_tags t JOIN events e ON e.seq = t.event_seq
         WHERE t.name = {name} AND t.value = p.value{kind_match}{window} AND {rest}{after}"
    );
    merged(
        source,
        probe,
        "t.created_at DESC, t.event_id",
        true,
        page.count,
        q,
    )
}

/// Runs `probe` (which may refer to the columns of `source`) once per row of `source`,
/// newest first by `order`, at most `count` each, and merges the answers.
fn merged(
    source: String,
    probe: String,
    order: &str,
    distinct: bool,
    count: usize,
    mut q: Query,
) -> (String, Query) {
    let limit = q.bind(to_sql_int(count as u64));
    let distinct = if distinct {
        "DISTINCT ON (x.created_at, x.id) "
    } else {
        ""
    };
    let sql = format!(
        "SELECT {distinct}x.created_at, x.id
         FROM {source} CROSS JOIN LATERAL ({probe} ORDER BY {order} LIMIT {limit}) AS x
         ORDER BY x.created_at DESC, x.id LIMIT {limit}"
    );
    (sql, q)
}

/// The query counting events that match any filter.
pub fn count<'a>(filters: impl Iterator<Item = &'a Filter>, now: u64) -> (String, Query) {
    let mut q = Query::default();
    let conditions: Vec<String> = filters
        .map(|f| format!("({})", condition(f, now, &mut q)))
        .collect();
    let sql = format!(
        "SELECT count(*) FROM events e WHERE {}",
        conditions.join(" OR ")
    );
    (sql, q)
}

/// The NIP-45 HLL registers of the pubkeys of the events `filter` matches, computed in
/// the database: (register, value) rows, the register being the pubkey's byte at `offset`
/// and the value one more than the leading zero bits of the next seven bytes (57 when all
/// are zero). `offset` is the relay's own number (8 to 23), never a client's text.
pub fn hll(filter: &Filter, offset: usize, now: u64) -> (String, Query) {
    let (count, q) = count(std::iter::once(filter), now);
    let matched = count.replacen("SELECT count(*)", "SELECT DISTINCT e.pubkey", 1);
    let offset = offset.min(23);
    let sql = format!(
        "SELECT get_byte(p.pubkey, {offset}) AS register,
                max(CASE WHEN position(B'1' IN b.bits) = 0 THEN 57 ELSE position(B'1' IN b.bits) END)
         FROM ({matched}) AS p,
              LATERAL (SELECT ('x' || encode(substring(p.pubkey FROM {start} FOR 7), 'hex'))::bit(56) AS bits) AS b
         GROUP BY 1",
        start = offset + 2
    );
    (sql, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_every_client_value() {
        let hostile =
            r##"{"#t":["'; DROP TABLE events; --"],"search":"x'); --","kinds":[1],"limit":5}"##;
        let filter = Filter::parse(hostile).unwrap();
        let (sql, q) = select(&filter, None, 5, 100);
        assert!(!sql.contains("DROP"), "{sql}");
        assert!(!sql.contains("x'"), "{sql}");
        assert_eq!(sql.matches('$').count(), q.params.len());
        assert!(sql.contains("e.kind = ANY($1)"), "{sql}");
        assert!(
            sql.ends_with(&format!("LIMIT ${}", q.params.len())),
            "{sql}"
        );
    }

    #[test]
    fn long_values_are_indexed_by_hash_and_rechecked() {
        let long = "v".repeat(INDEXED_VALUE_BYTES + 1);
        assert_eq!(tag_key("short"), "short");
        let key = tag_key(&long);
        assert!(key.starts_with(HASHED) && key.len() < 100, "{key}");
        let filter =
            |v: &str| Filter::parse(&serde_json::json!({ "#d": [v] }).to_string()).unwrap();
        assert!(!needs_recheck(&filter("short")));
        assert!(needs_recheck(&filter(&long)));
        assert!(needs_recheck(&filter(&key)));
    }

    #[test]
    fn a_home_feed_is_probed_per_author_and_kind() {
        let authors: Vec<String> = (0..20).map(|i| format!("{i:064x}")).collect();
        let feed = |kinds: &[u16]| {
            let json = serde_json::json!({ "authors": authors, "kinds": kinds, "limit": 100 });
            select(&Filter::parse(&json.to_string()).unwrap(), None, 100, 100).0
        };
        assert!(feed(&[1, 30023]).contains("CROSS JOIN LATERAL"));
        assert!(!feed(&[1, 6, 7, 30023]).contains("CROSS JOIN LATERAL"));
    }

    #[test]
    fn a_page_goes_on_after_its_cursor() {
        let filter = Filter::parse(r#"{"kinds":[1],"authors":["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]}"#).unwrap();
        let cursor = Cursor {
            created_at: 5,
            id: [1; 32],
        };
        let (sql, q) = select(&filter, Some(cursor), 10, 100);
        assert!(sql.contains("e.created_at <= $"), "{sql}");
        assert!(sql.contains("e.id > $"), "{sql}");
        assert!(sql.contains(&format!("${}", q.params.len())), "{sql}");
    }

    #[test]
    fn content_becomes_lexemes_with_positions() {
        let literal = tsvector("Quick, quick dog! ");
        let mut parts: Vec<&str> = literal.split(' ').collect();
        parts.sort();
        assert_eq!(parts, ["'dog':3", "'quick':1,2"]);
        assert_eq!(tsvector("…"), "");
        assert_eq!(tsquery("QUICK dog?"), "'quick' & 'dog'");
    }

    #[test]
    fn counts_or_filters_with_one_numbering() {
        let a = Filter::parse(r#"{"kinds":[1]}"#).unwrap();
        let b = Filter::parse(r#"{"authors":[]}"#).unwrap();
        let (sql, q) = count([&a, &b].into_iter(), 5);
        assert_eq!(q.params.len(), 4);
        assert!(sql.contains(") OR ("), "{sql}");
        assert!(sql.contains("$4"), "{sql}");
    }
}
