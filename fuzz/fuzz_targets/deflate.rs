//! Any bytes as a compressed message inflate, or are refused, without panicking and without
//! the output ever passing the bound; what the relay compresses inflates back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling::websocket::deflate::{InflateError, compress, inflate};

/// Most bytes a message may inflate to in this target.
const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    match inflate(data.to_vec(), MAX) {
        Ok(inflated) => assert!(inflated.len() <= MAX),
        Err(InflateError::TooBig | InflateError::Corrupt) => {}
    }
    let mut compressed = Vec::new();
    compress(data, &mut compressed);
    assert_eq!(inflate(compressed, data.len()).as_deref(), Ok(data));
});
