//! Lowercase hexadecimal, as Nostr writes ids, public keys and signatures.
//!
//! Decoding is strict: exactly the expected length and only `0-9a-f`. Uppercase is refused
//! because NIP-01 says ids and keys are lowercase, and two spellings of one id would let a
//! client slip a duplicate past a text comparison.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Encodes bytes as lowercase hex.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    out
}

/// Decodes exactly `N` bytes from `2 * N` lowercase hex digits.
pub fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// Decodes any number of bytes from hex digits of either case (for binary payloads, such as
/// NIP-77 messages, where no two spellings can pass for two things).
pub fn decode_vec(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if text.len() % 2 != 0 {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| {
            let digit = |c: u8| nibble(c.to_ascii_lowercase());
            Some((digit(pair[0])? << 4) | digit(pair[1])?)
        })
        .collect()
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = [0x00, 0x7f, 0x80, 0xff, 0x0a];
        assert_eq!(encode(&bytes), "007f80ff0a");
        assert_eq!(decode::<5>("007f80ff0a"), Some(bytes));
    }

    #[test]
    fn refuses_uppercase_wrong_length_and_non_hex() {
        assert_eq!(decode::<2>("ABCD"), None);
        assert_eq!(decode::<2>("abc"), None);
        assert_eq!(decode::<2>("abcdef"), None);
        assert_eq!(decode::<2>("zz00"), None);
        assert_eq!(decode::<1>("é"), None);
    }
}
