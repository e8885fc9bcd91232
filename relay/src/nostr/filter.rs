//! Filters (NIP-01): what a `REQ` or `COUNT` asks for, and matching an event against one.

use std::{borrow::Cow, cell::OnceCell, collections::HashSet};

use serde_json::{Map, Value};

use super::{describe_json_error, event::Event, hex, search};

/// One filter of a `REQ`. Every list is sorted and free of duplicates, so matching is a
/// binary search. A present but empty list matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Event ids.
    pub ids: Option<Box<[[u8; 32]]>>,
    /// Author public keys.
    pub authors: Option<Box<[[u8; 32]]>>,
    /// Kinds.
    pub kinds: Option<Box<[u16]>>,
    /// `#x` conditions, sorted by letter; an event must satisfy each.
    pub tags: Box<[TagFilter]>,
    /// Oldest `created_at` to match, inclusive.
    pub since: Option<u64>,
    /// Newest `created_at` to match, inclusive.
    pub until: Option<u64>,
    /// How many stored events the client wants at most (the relay clamps it).
    pub limit: Option<u64>,
    /// NIP-50 full-text query, without `key:value` extensions.
    pub search: Option<Box<str>>,
    /// Kinds never matched, whatever the rest says; set by the relay, never by a client (a
    /// count leaves out the private kinds this way).
    pub excluded_kinds: Box<[u16]>,
}

/// A `#x` condition: the event has an `x` tag whose first value is one of `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFilter {
    /// The ASCII letter naming the tag.
    pub letter: u8,
    /// Accepted values, sorted.
    pub values: Vec<String>,
}

/// Why a filter was refused; the variant is the NIP-01 prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// `invalid:` a field has the wrong shape.
    #[error("{0}")]
    Invalid(String),
    /// `unsupported:` a field this relay does not implement.
    #[error("{0}")]
    Unsupported(String),
}

impl Filter {
    /// Parses one filter object.
    pub fn parse(json: &str) -> Result<Self, FilterError> {
        let map: Map<String, Value> = serde_json::from_str(json).map_err(|e| {
            FilterError::Invalid(format!(
                "filter must be a JSON object: {}",
                describe_json_error(&e)
            ))
        })?;
        let mut filter = Filter::default();
        let mut tags = Vec::new();
        for (key, value) in map {
            match key.as_str() {
                "ids" => filter.ids = Some(hex_list(&key, &value)?.into()),
                "authors" => filter.authors = Some(hex_list(&key, &value)?.into()),
                "kinds" => {
                    let mut kinds = list(
                        &key,
                        &value,
                        |v| v.as_u64().and_then(|k| u16::try_from(k).ok()),
                        "integers between 0 and 65535",
                    )?;
                    kinds.sort_unstable();
                    kinds.dedup();
                    filter.kinds = Some(kinds.into());
                }
                "since" => filter.since = Some(unsigned_integer(&key, &value)?),
                "until" => filter.until = Some(unsigned_integer(&key, &value)?),
                "limit" => filter.limit = Some(unsigned_integer(&key, &value)?),
                "search" => {
                    let text = value.as_str().ok_or_else(|| {
                        FilterError::Invalid("\"search\" must be a string".into())
                    })?;
                    filter.search = Some(search_terms(text).collect::<Vec<_>>().join(" ").into());
                }
                tag if tag.len() == 2 && tag.starts_with('#') => {
                    let letter = tag.as_bytes()[1];
                    if !letter.is_ascii_alphabetic() {
                        return Err(FilterError::Unsupported(format!(
                            "tag filter {key:?} is not a single letter"
                        )));
                    }
                    let mut values = if letter == b'e' || letter == b'p' {
                        hex_list(&key, &value)?
                            .iter()
                            .map(|v| hex::encode(v))
                            .collect()
                    } else {
                        list(&key, &value, |v| v.as_str().map(str::to_string), "strings")?
                    };
                    values.sort_unstable();
                    values.dedup();
                    tags.push(TagFilter { letter, values });
                }
                _ => {
                    return Err(FilterError::Unsupported(format!(
                        "unknown filter field {key:?}"
                    )));
                }
            }
        }
        tags.sort_unstable_by_key(|t| t.letter);
        filter.tags = tags.into();
        Ok(filter)
    }

    /// Whether the filter can match any event at all (no empty list, `since <= until`).
    pub fn can_match(&self) -> bool {
        let empty = self.ids.as_ref().is_some_and(|ids| ids.is_empty())
            || self
                .authors
                .as_ref()
                .is_some_and(|authors| authors.is_empty())
            || self.kinds.as_ref().is_some_and(|kinds| kinds.is_empty())
            || self.tags.iter().any(|t| t.values.is_empty())
            || self.search.as_ref().is_some_and(|search| search.is_empty());
        let window = match (self.since, self.until) {
            (Some(since), Some(until)) => since <= until,
            _ => true,
        };
        !empty && window
    }

    /// Whether the event satisfies every condition (the `limit` plays no part). A `search`
    /// matches when each of its words ([`search::words`]) is a word of the content; a
    /// search without words matches nothing.
    pub fn matches(&self, event: &Event) -> bool {
        self.matches_with(event, &ContentWords::new(event))
    }

    /// [`Filter::matches`] with the words of the event's content cut already (or on first
    /// need), so that many search filters checked against one event cut them once.
    pub fn matches_with(&self, event: &Event, content: &ContentWords<'_>) -> bool {
        if let Some(search) = &self.search {
            let content = content.get();
            let mut wanted = search::words(search).peekable();
            if wanted.peek().is_none() || !wanted.all(|word| content.contains(&word)) {
                return false;
            }
        }
        !self.excluded_kinds.contains(&event.kind)
            && self
                .ids
                .as_ref()
                .is_none_or(|ids| ids.binary_search(&event.id).is_ok())
            && self
                .authors
                .as_ref()
                .is_none_or(|a| a.binary_search(&event.pubkey).is_ok())
            && self
                .kinds
                .as_ref()
                .is_none_or(|k| k.binary_search(&event.kind).is_ok())
            && self.since.is_none_or(|since| event.created_at >= since)
            && self.until.is_none_or(|until| event.created_at <= until)
            && self.tags.iter().all(|t| {
                event.indexed_tags().any(|(letter, value)| {
                    letter == t.letter
                        && t.values.binary_search_by(|v| v.as_str().cmp(value)).is_ok()
                })
            })
    }
}

/// The words of one event's content ([`search::words`]), cut on first need and then kept.
pub struct ContentWords<'e> {
    content: &'e str,
    words: OnceCell<HashSet<Cow<'e, str>>>,
}

impl<'e> ContentWords<'e> {
    /// The words of `event`'s content, not cut yet.
    pub fn new(event: &'e Event) -> Self {
        Self {
            content: &event.content,
            words: OnceCell::new(),
        }
    }

    fn get(&self) -> &HashSet<Cow<'e, str>> {
        self.words
            .get_or_init(|| search::words(self.content).collect())
    }
}

/// The words of a NIP-50 query, without `key:value` extensions (none is supported).
fn search_terms(query: &str) -> impl Iterator<Item = &str> {
    query.split_whitespace().filter(|word| {
        !matches!(word.split_once(':'), Some((key, value)) if !key.is_empty() && !value.is_empty())
    })
}

fn list<T>(
    key: &str,
    value: &Value,
    item: impl Fn(&Value) -> Option<T>,
    expected: &str,
) -> Result<Vec<T>, FilterError> {
    let Value::Array(values) = value else {
        return Err(FilterError::Invalid(format!("{key:?} must be an array")));
    };
    // Sized exactly: a filter lives as long as its subscription.
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        out.push(
            item(v).ok_or_else(|| FilterError::Invalid(format!("{key:?} must hold {expected}")))?,
        );
    }
    Ok(out)
}

fn hex_list(key: &str, value: &Value) -> Result<Vec<[u8; 32]>, FilterError> {
    let mut out = list(
        key,
        value,
        |v| v.as_str().and_then(hex::decode),
        "64-character lowercase hex strings",
    )?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// A timestamp (`since`, `until`) or a count (`limit`): a non-negative integer.
fn unsigned_integer(key: &str, value: &Value) -> Result<u64, FilterError> {
    value
        .as_u64()
        .ok_or_else(|| FilterError::Invalid(format!("{key:?} must be a non-negative integer")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nostr::event::Keys;

    fn event(kind: u16, created_at: u64, tags: &[(&str, &str)]) -> Event {
        let tags = tags
            .iter()
            .map(|(k, v)| vec![k.to_string(), v.to_string()])
            .collect();
        Keys::from_secret([1; 32])
            .unwrap()
            .sign(created_at, kind, tags, "hi")
    }

    #[test]
    fn matches_each_field() {
        let e = event(1, 100, &[("t", "nostr"), ("p", &"ab".repeat(32))]);
        let id = hex::encode(&e.id);
        let author = hex::encode(&e.pubkey);
        let yes = [
            "{}".to_string(),
            format!(r#"{{"ids":["{id}"]}}"#),
            format!(r#"{{"authors":["{author}"],"kinds":[0,1]}}"#),
            r##"{"#t":["nostr","x"],"since":100,"until":100}"##.to_string(),
            format!(r##"{{"#p":["{}"]}}"##, "ab".repeat(32)),
            r#"{"limit":0}"#.to_string(),
        ];
        for f in yes {
            assert!(Filter::parse(&f).unwrap().matches(&e), "{f} should match");
        }
        let no = [
            r#"{"kinds":[2]}"#.to_string(),
            r#"{"since":101}"#.to_string(),
            r#"{"until":99}"#.to_string(),
            r##"{"#t":["other"]}"##.to_string(),
            r##"{"#T":["nostr"]}"##.to_string(),
            format!(r#"{{"authors":["{}"]}}"#, "00".repeat(32)),
        ];
        for f in no {
            assert!(
                !Filter::parse(&f).unwrap().matches(&e),
                "{f} should not match"
            );
        }
    }

    #[test]
    fn only_first_tag_value_is_indexed() {
        let keys = Keys::from_secret([1; 32]).unwrap();
        let e = keys.sign(1, 1, vec![vec!["t".into(), "a".into(), "b".into()]], "");
        assert!(Filter::parse(r##"{"#t":["a"]}"##).unwrap().matches(&e));
        assert!(!Filter::parse(r##"{"#t":["b"]}"##).unwrap().matches(&e));
    }

    #[test]
    fn empty_lists_and_inverted_windows_match_nothing() {
        assert!(!Filter::parse(r#"{"authors":[]}"#).unwrap().can_match());
        assert!(!Filter::parse(r##"{"#t":[]}"##).unwrap().can_match());
        assert!(
            !Filter::parse(r#"{"since":5,"until":4}"#)
                .unwrap()
                .can_match()
        );
        assert!(Filter::parse(r#"{"kinds":[1]}"#).unwrap().can_match());
    }

    #[test]
    fn refuses_bad_shapes_as_invalid() {
        for f in [
            r#"{"ids":["abc"]}"#,
            r#"{"authors":["ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB"]}"#,
            r#"{"kinds":[65536]}"#,
            r#"{"kinds":"1"}"#,
            r#"{"since":-1}"#,
            r#"{"limit":1.5}"#,
            r##"{"#e":["not-hex"]}"##,
            r##"{"#t":[1]}"##,
            r#"[]"#,
            r#""x""#,
        ] {
            assert!(
                matches!(Filter::parse(f), Err(FilterError::Invalid(_))),
                "{f}"
            );
        }
    }

    #[test]
    fn search_matches_every_word_and_ignores_extensions() {
        let keys = Keys::from_secret([1; 32]).unwrap();
        let e = keys.sign(1, 1, vec![], "Best Nostr apps of 2026");
        let search =
            |q: &str| Filter::parse(&serde_json::json!({ "search": q }).to_string()).unwrap();
        assert!(search("nostr APPS").matches(&e));
        assert!(search("nostr language:en").matches(&e));
        assert!(!search("nostr relays").matches(&e));
        assert_eq!(search("a  b include:spam").search.as_deref(), Some("a b"));
        assert!(!search("include:spam").can_match());
        assert!(matches!(
            Filter::parse(r#"{"search":1}"#),
            Err(FilterError::Invalid(_))
        ));
    }

    #[test]
    fn refuses_unknown_fields_as_unsupported() {
        for f in [
            r#"{"sarch":"x"}"#,
            r#"{"foo":1}"#,
            r##"{"#emoji":["x"]}"##,
            r##"{"#1":["x"]}"##,
        ] {
            assert!(
                matches!(Filter::parse(f), Err(FilterError::Unsupported(_))),
                "{f}"
            );
        }
    }
}
