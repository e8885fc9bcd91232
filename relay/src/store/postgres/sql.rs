//! Filters compiled to PostgreSQL: text with `$n` placeholders and the values bound to them.
//! No value a client sends is ever written into the SQL text.

use tokio_postgres::types::ToSql;

use crate::{nostr::Filter, store::to_sql_int};

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
        let kinds: Vec<i32> = kinds.iter().map(|k| i32::from(*k)).collect();
        parts.push(format!("e.kind = ANY({})", q.bind(kinds)));
    }
    if let Some(since) = filter.since {
        parts.push(format!("e.created_at >= {}", q.bind(to_sql_int(since))));
    }
    if let Some(until) = filter.until {
        parts.push(format!("e.created_at <= {}", q.bind(to_sql_int(until))));
    }
    for tag in &filter.tags {
        let name = q.bind(char::from(tag.letter).to_string());
        let values = q.bind(tag.values.clone());
        parts.push(format!(
            "EXISTS (SELECT 1 FROM event_tags t WHERE t.event_seq = e.seq AND t.name = {name} AND t.value = ANY({values}))"
        ));
    }
    if let Some(search) = &filter.search {
        parts.push(format!(
            "e.content_fts @@ plainto_tsquery('simple', {})",
            q.bind(search.clone())
        ));
    }
    let now = q.bind(to_sql_int(now));
    parts.push(format!("(e.expires_at IS NULL OR e.expires_at > {now})"));
    parts.join(" AND ")
}

/// How many of the newest matches of a NIP-50 search are ranked by relevance.
pub const SEARCH_CANDIDATES: i64 = 1000;

/// The query for one filter's stored events: newest first (ties: lowest id), at most
/// `limit`. A NIP-50 search ranks by relevance the newest [`SEARCH_CANDIDATES`] matches, so
/// that a word found in millions of events costs no more than a rare one.
pub fn select(filter: &Filter, now: u64) -> (String, Query) {
    let mut q = Query::default();
    let condition = condition(filter, now, &mut q);
    let sql = match &filter.search {
        Some(search) => {
            let query = q.bind(search.clone());
            let candidates = q.bind(SEARCH_CANDIDATES);
            let limit = q.bind(to_sql_int(filter.limit.unwrap_or(0)));
            format!(
                "SELECT created_at, id, json FROM (
                     SELECT e.created_at, e.id, e.json, e.content_fts FROM events e WHERE {condition}
                     ORDER BY e.created_at DESC, e.id LIMIT {candidates}
                 ) AS newest
                 ORDER BY ts_rank(content_fts, plainto_tsquery('simple', {query})) DESC, created_at DESC, id
                 LIMIT {limit}"
            )
        }
        None => {
            let limit = q.bind(to_sql_int(filter.limit.unwrap_or(0)));
            format!(
                "SELECT e.created_at, e.id, e.json FROM events e WHERE {condition}
                 ORDER BY e.created_at DESC, e.id LIMIT {limit}"
            )
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_every_client_value() {
        let hostile =
            r##"{"#t":["'; DROP TABLE events; --"],"search":"x'); --","kinds":[1],"limit":5}"##;
        let filter = Filter::parse(hostile).unwrap();
        let (sql, q) = select(&filter, 100);
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
    fn counts_or_filters_with_one_numbering() {
        let a = Filter::parse(r#"{"kinds":[1]}"#).unwrap();
        let b = Filter::parse(r#"{"authors":[]}"#).unwrap();
        let (sql, q) = count([&a, &b].into_iter(), 5);
        assert_eq!(q.params.len(), 4);
        assert!(sql.contains(") OR ("), "{sql}");
        assert!(sql.contains("$4"), "{sql}");
    }
}
