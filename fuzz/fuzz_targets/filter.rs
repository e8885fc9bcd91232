//! Any filter a client sends is parsed without panicking; one that parses can be matched,
//! costed and compiled to SQL with every value bound.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use starling::{
    nostr::{Event, Filter, Keys},
    policy::filter_bytes,
    store::postgres::sql,
};

fn event() -> &'static Event {
    static EVENT: OnceLock<Event> = OnceLock::new();
    EVENT.get_or_init(|| {
        let keys = Keys::from_secret([1; 32]).expect("a valid secret");
        let tags = vec![vec!["t".into(), "nostr".into()], vec!["d".into(), "x".into()]];
        keys.sign(1_700_000_000, 1, tags, "Hello nostr relays")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut filter) = Filter::parse(text) else {
        return;
    };
    let _ = filter.can_match();
    let _ = filter.matches(event());
    let _ = filter_bytes(std::slice::from_ref(&filter));
    filter.limit = Some(filter.limit.unwrap_or(10).min(5000));
    let (text, query) = sql::select(&filter, None, 10, 1_700_000_000);
    assert!(text.contains(&format!("${}", query.params.len())) || query.params.is_empty());
});
