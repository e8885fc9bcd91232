//! Any `Accept` header values and client addresses are read without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling::{fair::ClientAddress, http::accepts_media_type};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let values: Vec<&str> = text.split('\n').collect();
    let _ = accepts_media_type(values.iter().copied(), "application/nostr+json");
    for value in &values {
        if let Ok(ip) = value.trim().parse() {
            let address = ClientAddress::of(ip);
            assert_eq!(ClientAddress::of(ip), address);
            let _ = address.to_string();
        }
    }
});
