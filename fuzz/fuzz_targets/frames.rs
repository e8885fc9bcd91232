//! Any bytes on a WebSocket connection, with and without permessage-deflate negotiated,
//! decode into whole messages without panicking, and no whole message is larger than the
//! bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling::websocket::{Assembler, Message, ReadError};

/// Most bytes a whole message may have in this target.
const MAX: usize = 4096;

// The input: a byte whose low bit says whether deflate was negotiated, a byte N, then N
// bytes saying where the rest is cut into reads, then the bytes a client sends.
fuzz_target!(|data: &[u8]| {
    let [flags, n, data @ ..] = data else {
        return;
    };
    let (cuts, bytes) = data.split_at(usize::from(*n).min(data.len()));
    let mut assembler = Assembler::new(MAX, flags & 1 == 1);
    let mut rest = bytes;
    let mut cuts = cuts.iter();
    'reads: while !rest.is_empty() {
        let take = cuts.next().map_or(rest.len(), |c| usize::from(*c).clamp(1, rest.len()));
        assembler.push(&rest[..take]);
        rest = &rest[take..];
        loop {
            match assembler.next_message() {
                Ok(Some(Message::Text(text))) => assert!(text.len() <= MAX),
                Ok(Some(Message::Binary(bytes))) => assert!(bytes.len() <= MAX),
                Ok(Some(Message::Ping(bytes) | Message::Pong(bytes))) => {
                    assert!(bytes.len() <= 125)
                }
                Ok(Some(Message::Close(_))) => break 'reads,
                Ok(None) => break,
                Err(ReadError::NotUtf8) => {}
                Err(_) => break 'reads,
            }
        }
    }
});
