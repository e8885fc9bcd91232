//! Any event JSON is parsed and checked without panicking; an event that parses keeps its
//! id through canonical serialization, and its derived fields can be read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling::nostr::{Event, VerifiedEvent};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(event) = Event::parse(text) else {
        return;
    };
    let again = Event::parse(&event.to_json()).expect("an event's JSON parses");
    assert_eq!(event, again);
    assert_eq!(event.compute_id(), again.compute_id());
    let _ = event.expiration();
    let _ = event.deletion_targets();
    let _ = event.pow_difficulty();
    let _ = event.pow_target();
    let _ = event.indexed_tags().count();
    let _ = VerifiedEvent::verify(event);
});
