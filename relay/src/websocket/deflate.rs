//! Raw DEFLATE for permessage-deflate (RFC 7692 §7.2) with no context takeover: each message
//! is compressed and inflated on its own, so one compressor and one decompressor per thread
//! (reset after every message) serve all the connections of that thread, instead of a
//! window of 32 KiB and more per connection and direction.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// What a sync flush ends with, taken off a compressed message and put back to inflate it.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

thread_local! {
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    static DECOMPRESSOR: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// Why a compressed message was not inflated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates to more than the bound (a compression bomb, or just too big): close 1009.
    #[error("inflated message larger than the bound")]
    TooBig,
    /// It is not valid DEFLATE data.
    #[error("invalid compressed data")]
    Corrupt,
}

/// Appends `input` compressed as one permessage-deflate message to `out`: raw DEFLATE ended
/// by a sync flush, without the flush's final `00 00 ff ff`.
pub fn compress(input: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    compress_part(input, out);
    if out[start..].ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
}

/// Appends `input` compressed as the first part of a message whose rest is compressed on
/// its own ([`compress`]) and appended after it: raw DEFLATE ended by a whole sync flush,
/// so that the part ends on a byte boundary with a block that is not the last, and the
/// flush's `00 00 ff ff` is taken off only once, at the very end of the message.
pub fn compress_part(input: &[u8], out: &mut Vec<u8>) {
    COMPRESSOR.with_borrow_mut(|compressor| {
        let base = compressor.total_in();
        out.reserve(input.len() / 2 + 64);
        loop {
            let consumed = (compressor.total_in() - base) as usize;
            let status = compressor.compress_vec(&input[consumed..], out, FlushCompress::Sync);
            // All consumed and room left over: the flush is complete.
            let all_in = (compressor.total_in() - base) as usize == input.len();
            let done = all_in && out.len() < out.capacity();
            if done || status.is_err() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        compressor.reset();
    })
}

/// Inflates one compressed message (its frames' payloads joined), refusing it as soon as
/// it would pass `max` bytes: the output never grows past `max + 1`.
pub fn inflate(mut input: Vec<u8>, max: usize) -> Result<Vec<u8>, InflateError> {
    input.extend_from_slice(&TAIL);
    DECOMPRESSOR.with_borrow_mut(|decompressor| {
        let inflated = inflate_with(decompressor, &input, max);
        decompressor.reset(false);
        inflated
    })
}

fn inflate_with(
    decompressor: &mut Decompress,
    input: &[u8],
    max: usize,
) -> Result<Vec<u8>, InflateError> {
    let bound = max.saturating_add(1);
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).max(64).min(bound));
    let base = decompressor.total_in();
    loop {
        let (read, written) = (decompressor.total_in(), out.len());
        let consumed = (read - base) as usize;
        let status = decompressor
            .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Corrupt)?;
        if out.len() > max {
            return Err(InflateError::TooBig);
        }
        let all_in = (decompressor.total_in() - base) as usize == input.len();
        let room_left = out.len() < out.capacity();
        if status == Status::StreamEnd || (all_in && room_left) {
            return Ok(out);
        }
        if out.len() == out.capacity() {
            let more = out.capacity().min(bound - out.capacity());
            out.reserve_exact(more);
        } else if decompressor.total_in() == read && out.len() == written {
            // No progress with room to write: the input ends mid-block.
            return Err(InflateError::Corrupt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compressed(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        compress(input, &mut out);
        out
    }

    #[test]
    fn round_trips_and_shrinks_json() {
        let json = r#"["EVENT","sub",{"kind":1,"content":"hello hello hello hello"}]"#.repeat(40);
        let small = compressed(json.as_bytes());
        assert!(small.len() * 5 < json.len(), "{}", small.len());
        assert!(!small.ends_with(&TAIL));
        assert_eq!(inflate(small, 1 << 20).unwrap(), json.as_bytes());
        // Each message on its own: the second compresses as the first did.
        assert_eq!(compressed(json.as_bytes()), compressed(json.as_bytes()));
        assert_eq!(inflate(compressed(b""), 10).unwrap(), b"");
    }

    #[test]
    fn parts_compressed_apart_inflate_as_one_message() {
        let (prefix, body) = (
            &br#"["EVENT","sub","#[..],
            &br#"{"content":"body body body body"}]"#[..],
        );
        let mut joined = Vec::new();
        compress_part(prefix, &mut joined);
        assert!(joined.ends_with(&TAIL));
        compress(body, &mut joined);
        assert!(!joined.ends_with(&TAIL));
        assert_eq!(inflate(joined, 1000).unwrap(), [prefix, body].concat());
    }

    #[test]
    fn inflates_rfc_7692_examples() {
        // §7.2.3.1 "Hello", and §7.2.3.3 with no compression (a stored block).
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate(hello.to_vec(), 100).unwrap(), b"Hello");
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflate(stored.to_vec(), 100).unwrap(), b"Hello");
        // §7.2.3.4: BFINAL set.
        let last = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate(last.to_vec(), 100).unwrap(), b"Hello");
    }

    #[test]
    fn refuses_a_bomb_without_inflating_it() {
        let bomb = compressed(&vec![b'a'; 10_000_000]);
        assert!(bomb.len() * 100 < 10_000_000, "{}", bomb.len());
        assert_eq!(inflate(bomb.clone(), 1000), Err(InflateError::TooBig));
        assert_eq!(inflate(bomb, 10_000_000).unwrap().len(), 10_000_000);
        assert_eq!(inflate(vec![0xff; 10], 100), Err(InflateError::Corrupt));
    }
}
