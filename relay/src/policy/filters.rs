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
}
