//! What a `REQ` or `COUNT` may ask: at most `max_filters` filters, each answered with at
//! most `max_limit` stored events (`default_limit` when it names none).

use std::sync::Arc;

use crate::{
    config::Config,
    nostr::{Filter, Reason},
};

/// Checks the filter count and clamps each filter's limit to the configured maximum.
pub fn prepare_filters(config: &Config, mut filters: Vec<Filter>) -> Result<Arc<[Filter]>, Reason> {
    if filters.len() > config.max_filters {
        return Err(Reason::invalid(format!(
            "too many filters ({}, at most {})",
            filters.len(),
            config.max_filters
        )));
    }
    for filter in &mut filters {
        filter.limit = Some(
            filter
                .limit
                .unwrap_or(config.default_limit)
                .min(config.max_limit),
        );
    }
    Ok(filters.into())
}

/// What a subscription's filters cost to hold in the live index, in bytes (about what they
/// take in memory): each id, author and kind, each tag value, the search.
pub fn filter_bytes(filters: &[Filter]) -> usize {
    const FILTER: usize = 96;
    const TAG_VALUE: usize = 24;
    filters
        .iter()
        .map(|f| {
            FILTER
                + 32 * f.ids.as_ref().map_or(0, |ids| ids.len())
                + 32 * f.authors.as_ref().map_or(0, |authors| authors.len())
                + 2 * f.kinds.as_ref().map_or(0, |kinds| kinds.len())
                + f.tags
                    .iter()
                    .flat_map(|t| &t.values)
                    .map(|v| v.len() + TAG_VALUE)
                    .sum::<usize>()
                + f.search.as_ref().map_or(0, |s| 2 * s.len())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_filters_and_clamps_limits() {
        let config = Config::from_args(&[
            "--max-filters",
            "2",
            "--max-limit",
            "10",
            "--default-limit",
            "4",
        ]);
        let filter = |json: &str| Filter::parse(json).expect("a filter");
        let prepared = prepare_filters(
            &config,
            vec![filter(r#"{"limit":100}"#), filter(r#"{"kinds":[1]}"#)],
        )
        .expect("two filters are allowed");
        assert_eq!(prepared[0].limit, Some(10));
        assert_eq!(prepared[1].limit, Some(4));
        let refused = prepare_filters(&config, vec![filter("{}"); 3]).unwrap_err();
        assert_eq!(refused.prefix, crate::nostr::Prefix::Invalid);
    }

    #[test]
    fn a_filter_costs_what_it_holds() {
        let author = "a".repeat(64);
        let small = filter_bytes(&[Filter::parse(r#"{"kinds":[1]}"#).unwrap()]);
        let authors = format!(r#"{{"authors":["{author}"]}}"#);
        let large = filter_bytes(&[Filter::parse(&authors).unwrap(), Filter::default()]);
        assert_eq!(small, 98);
        assert_eq!(large, 96 + 32 + 96);
    }
}
