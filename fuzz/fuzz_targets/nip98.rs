//! Any `Authorization` header and body of a management call (NIP-86 over NIP-98) are read
//! without panicking, and an authorization that passes names this relay, the method and the
//! body it came with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling::{manage::nip98, nostr::RelayUrl};

/// The relay's clock in these runs (the seeds' authorizations were made at this time).
const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(end) => (&data[..end], &data[end + 1..]),
        None => (data, &[][..]),
    };
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    let Ok(url) = RelayUrl::parse("wss://relay.example.com/") else {
        return;
    };
    if let Ok(event) = nip98::check(Some(header), "POST", body, &[url], NOW) {
        assert_eq!(event.kind, nip98::HTTP_AUTH_KIND);
        assert!(event.created_at.abs_diff(NOW) <= nip98::WINDOW_SECONDS);
        assert_eq!(event.tag_value("method").map(str::to_ascii_uppercase).as_deref(), Some("POST"));
    }
});
