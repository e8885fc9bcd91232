//! NIP-45 HyperLogLog: 256 one-byte registers over the pubkeys of the events a `COUNT`
//! counts, so that clients can merge counts from several relays.
//!
//! The register of a pubkey is its byte at `offset`; its value is one more than the number
//! of leading zero bits of the seven bytes after it. `offset` comes from the filter's tag
//! value: an id or pubkey as it is, an address's pubkey, anything else hashed; its 33rd hex
//! digit plus 8. This relay answers `hll` for filters with one tag attribute holding one
//! value (the NIP's common filters: reactions, reposts, quotes, replies, comments,
//! followers), where every relay finds the same offset.

use sha2::{Digest, Sha256};

use super::{Filter, hex};

/// Registers of an HLL value.
pub const REGISTERS: usize = 256;

/// An HLL value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hll(pub [u8; REGISTERS]);

impl Default for Hll {
    fn default() -> Self {
        Self([0; REGISTERS])
    }
}

/// The offset of `filter`, when it has exactly one tag attribute with exactly one value.
pub fn offset(filter: &Filter) -> Option<usize> {
    let [tag] = &filter.tags[..] else {
        return None;
    };
    let [value] = tag.values.as_slice() else {
        return None;
    };
    let hex_key = if hex::decode::<32>(value).is_some() {
        value.clone()
    } else {
        match value.split(':').collect::<Vec<_>>().as_slice() {
            [_, pubkey, _] if hex::decode::<32>(pubkey).is_some() => pubkey.to_string(),
            _ => hex::encode(&<[u8; 32]>::from(Sha256::digest(value.as_bytes()))),
        }
    };
    let digit = hex_key.as_bytes()[32];
    let value = (digit as char).to_digit(16)?;
    Some(value as usize + 8)
}

/// The register and value `pubkey` gives at `offset` (8 to 23).
pub fn register(pubkey: &[u8; 32], offset: usize) -> (usize, u8) {
    let mut zeros = 0u8;
    for byte in &pubkey[offset + 1..offset + 8] {
        if *byte == 0 {
            zeros += 8;
            continue;
        }
        zeros += byte.leading_zeros() as u8;
        break;
    }
    (pubkey[offset] as usize, zeros + 1)
}

impl Hll {
    /// Counts `pubkey` in, at `offset`.
    pub fn add(&mut self, pubkey: &[u8; 32], offset: usize) {
        let (index, value) = register(pubkey, offset);
        self.raise(index, value);
    }

    /// Raises register `index` to `value` if it is lower.
    pub fn raise(&mut self, index: usize, value: u8) {
        if let Some(register) = self.0.get_mut(index) {
            *register = (*register).max(value);
        }
    }

    /// The 512 hex digits of the registers.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(json: &str) -> Filter {
        Filter::parse(json).unwrap()
    }

    #[test]
    fn offsets_follow_the_nip() {
        // An id: its 33rd hex digit (here `c`, 12) plus 8.
        let id = format!("{}c{}", "0".repeat(32), "0".repeat(31));
        assert_eq!(
            offset(&filter(&format!(r##"{{"#e":["{id}"],"kinds":[7]}}"##))),
            Some(20)
        );
        let address = format!("30023:{id}:slug");
        assert_eq!(
            offset(&filter(&format!(r##"{{"#a":["{address}"]}}"##))),
            Some(20)
        );
        // Anything else: sha256("hello") = 2cf24dba5fb0a30e26e83b2ac5b9e29e 1b161e5c…
        assert_eq!(offset(&filter(r##"{"#t":["hello"]}"##)), Some(8 + 1));
        assert_eq!(offset(&filter(r#"{"kinds":[1]}"#)), None, "no tag");
        assert_eq!(offset(&filter(r##"{"#t":["a","b"]}"##)), None, "two values");
        assert_eq!(
            offset(&filter(r##"{"#t":["a"],"#d":["b"]}"##)),
            None,
            "two tags"
        );
    }

    #[test]
    fn registers_count_leading_zeros_of_the_seven_bytes_after_the_offset() {
        let mut pubkey = [0xffu8; 32];
        pubkey[10] = 7;
        pubkey[11] = 0;
        pubkey[12] = 0b0001_0000;
        assert_eq!(register(&pubkey, 10), (7, 8 + 3 + 1));
        let mut zeros = [0u8; 32];
        zeros[8] = 200;
        assert_eq!(register(&zeros, 8), (200, 57), "seven zero bytes");
        let mut hll = Hll::default();
        hll.add(&pubkey, 10);
        hll.add(&zeros, 8);
        hll.raise(7, 3);
        assert_eq!((hll.0[7], hll.0[200]), (12, 57));
        assert_eq!(hll.to_hex().len(), 512);
    }
}
