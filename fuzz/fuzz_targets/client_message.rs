//! Any text a client sends is parsed without panicking; an event that parses serializes to
//! JSON that parses back to the same event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling::nostr::{ClientMessage, Event};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ClientMessage::Event(event)) = ClientMessage::parse(text) {
        let again = Event::parse(&event.to_json()).expect("an event's JSON parses");
        assert_eq!(*event, again);
    }
});
