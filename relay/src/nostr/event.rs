//! The Nostr event: strict parsing, the NIP-01 canonical serialization, id and signature
//! checks, and the tag conventions other NIPs read (`d`, `expiration`, `nonce`).

use std::{
    io::{self, Write},
    sync::Arc,
};

use secp256k1::{XOnlyPublicKey, schnorr};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{describe_json_error, hex, kind::KindClass};

/// A parsed event. Every field has the exact shape NIP-01 gives it; [`Event::verify`] checks
/// that the id is the hash of the rest and that the signature is the author's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// sha256 of the canonical serialization.
    pub id: [u8; 32],
    /// The author's x-only public key.
    pub pubkey: [u8; 32],
    /// Unix time in seconds, as the author claims it.
    pub created_at: u64,
    /// 0..=65535.
    pub kind: u16,
    /// Arrays of strings; the first string is the tag's name.
    pub tags: Vec<Vec<String>>,
    /// Arbitrary text.
    pub content: String,
    /// BIP-340 signature of `id` by `pubkey`.
    pub sig: [u8; 64],
}

/// Why an event was refused before reaching the store. Each message reads well after the
/// `invalid: ` prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The JSON is not an event of the NIP-01 shape.
    #[error("{0}")]
    Shape(String),
    /// `id` is not the sha256 of the canonical serialization.
    #[error("event id does not match the hash of the event")]
    IdMismatch,
    /// `pubkey` is not a point on the curve.
    #[error("pubkey is not a valid secp256k1 public key")]
    BadPubkey,
    /// The signature does not verify.
    #[error("signature verification failed")]
    BadSignature,
}

/// The event as it arrives on the wire, before its fields are checked.
#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pubkey: std::borrow::Cow<'a, str>,
    created_at: u64,
    kind: u64,
    tags: Vec<Vec<String>>,
    content: String,
    #[serde(borrow)]
    sig: std::borrow::Cow<'a, str>,
}

impl Event {
    /// Parses an event object, checking every field's shape but not the id or signature.
    pub fn parse(json: &str) -> Result<Self, EventError> {
        let wire: WireEvent<'_> = serde_json::from_str(json).map_err(|e| {
            EventError::Shape(format!("malformed event: {}", describe_json_error(&e)))
        })?;
        let shape = |what: &str| EventError::Shape(what.to_string());
        let id =
            hex::decode(&wire.id).ok_or_else(|| shape("id must be 64 lowercase hex characters"))?;
        let pubkey = hex::decode(&wire.pubkey)
            .ok_or_else(|| shape("pubkey must be 64 lowercase hex characters"))?;
        let sig = hex::decode(&wire.sig)
            .ok_or_else(|| shape("sig must be 128 lowercase hex characters"))?;
        let kind =
            u16::try_from(wire.kind).map_err(|_| shape("kind must be between 0 and 65535"))?;
        if i64::try_from(wire.created_at).is_err() {
            return Err(shape("created_at is out of range"));
        }
        if wire.tags.iter().any(Vec::is_empty) {
            return Err(shape("a tag must have at least one element"));
        }
        Ok(Event {
            id,
            pubkey,
            created_at: wire.created_at,
            kind,
            tags: wire.tags,
            content: wire.content,
            sig,
        })
    }

    /// The sha256 of the canonical serialization `[0,pubkey,created_at,kind,tags,content]`.
    pub fn compute_id(&self) -> [u8; 32] {
        canonical_hash(
            &self.pubkey,
            self.created_at,
            self.kind,
            &self.tags,
            &self.content,
        )
    }

    /// Checks that `id` is the hash of the event and `sig` the author's signature of it.
    pub fn verify(&self) -> Result<(), EventError> {
        if self.compute_id() != self.id {
            return Err(EventError::IdMismatch);
        }
        let pubkey =
            XOnlyPublicKey::from_byte_array(self.pubkey).map_err(|_| EventError::BadPubkey)?;
        let sig = schnorr::Signature::from_byte_array(self.sig);
        schnorr::verify(&sig, &self.id, &pubkey).map_err(|_| EventError::BadSignature)
    }

    /// The kind of an event in the JSON [`Event::to_json`] writes, read from its fixed
    /// prefix (`{"id":"…","pubkey":"…","created_at":…,"kind":…,"tags":`) without parsing
    /// the rest; `None` for any other text.
    pub fn kind_of_canonical(json: &str) -> Option<u16> {
        fn digits(bytes: &[u8]) -> usize {
            bytes.iter().take_while(|b| b.is_ascii_digit()).count()
        }
        let rest = json.as_bytes().strip_prefix(b"{\"id\":\"")?;
        let rest = rest.get(64..)?.strip_prefix(b"\",\"pubkey\":\"")?;
        let rest = rest.get(64..)?.strip_prefix(b"\",\"created_at\":")?;
        let rest = rest[digits(rest)..].strip_prefix(b",\"kind\":")?;
        let n = digits(rest);
        rest[n..].strip_prefix(b",\"tags\":")?;
        if n == 0 || n > 5 {
            return None;
        }
        let kind = rest[..n]
            .iter()
            .fold(0u32, |k, d| k * 10 + u32::from(d - b'0'));
        u16::try_from(kind).ok()
    }

    /// The event as compact JSON with fields in NIP-01 order: what the relay stores and sends.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(256 + self.content.len());
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(hex::encode(&self.id).as_bytes());
        out.extend_from_slice(b"\",\"pubkey\":\"");
        out.extend_from_slice(hex::encode(&self.pubkey).as_bytes());
        write!(
            out,
            "\",\"created_at\":{},\"kind\":{},\"tags\":",
            self.created_at, self.kind
        )
        .expect("writing to a Vec cannot fail");
        serde_json::to_writer(&mut out, &self.tags).expect("strings always serialize");
        out.extend_from_slice(b",\"content\":");
        serde_json::to_writer(&mut out, &self.content).expect("strings always serialize");
        out.extend_from_slice(b",\"sig\":\"");
        out.extend_from_slice(hex::encode(&self.sig).as_bytes());
        out.extend_from_slice(b"\"}");
        String::from_utf8(out).expect("JSON output is UTF-8")
    }

    /// The id as lowercase hex.
    pub fn id_hex(&self) -> String {
        hex::encode(&self.id)
    }

    /// How the relay keeps events of this kind.
    pub fn class(&self) -> KindClass {
        KindClass::of(self.kind)
    }

    /// The value (second element) of the first tag called `name`.
    pub fn tag_value(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.len() >= 2 && t[0] == name)
            .map(|t| t[1].as_str())
    }

    /// The identifier of an addressable event: the first `d` tag's value, or "".
    pub fn d_tag(&self) -> &str {
        self.tag_value("d").unwrap_or("")
    }

    /// The NIP-40 expiration time, if the event has one.
    pub fn expiration(&self) -> Result<Option<u64>, EventError> {
        match self.tag_value("expiration") {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                EventError::Shape("expiration tag must be a unix timestamp in seconds".into())
            }),
        }
    }

    /// The tags a relay indexes (NIP-01): single-letter names, first value only.
    pub fn indexed_tags(&self) -> impl Iterator<Item = (u8, &str)> {
        self.tags
            .iter()
            .filter_map(|t| match (t[0].as_bytes(), t.get(1)) {
                ([letter], Some(value)) if letter.is_ascii_alphabetic() => {
                    Some((*letter, value.as_str()))
                }
                _ => None,
            })
    }

    /// What this event, as a NIP-09 deletion request, asks to delete: ids from its `e` tags
    /// and, from its `a` tags, the addresses of its own author's replaceable and addressable
    /// events. Duplicates are removed; malformed tags are ignored.
    pub fn deletion_targets(&self) -> DeletionTargets {
        let mut targets = DeletionTargets::default();
        for tag in self.tags.iter().filter(|t| t.len() >= 2) {
            match tag[0].as_str() {
                "e" => targets.ids.extend(hex::decode::<32>(&tag[1])),
                "a" => targets.addresses.extend(
                    parse_address(&tag[1])
                        .filter(|a| a.1 == self.pubkey)
                        .map(|(kind, _, d)| (kind, d.to_string())),
                ),
                _ => {}
            }
        }
        targets.ids.sort_unstable();
        targets.ids.dedup();
        targets.addresses.sort_unstable();
        targets.addresses.dedup();
        targets
    }

    /// NIP-13 difficulty: the number of leading zero bits of the id.
    pub fn pow_difficulty(&self) -> u32 {
        let mut bits = 0;
        for byte in self.id {
            bits += byte.leading_zeros();
            if byte != 0 {
                break;
            }
        }
        bits
    }

    /// NIP-13 target the author committed to in the third element of a `nonce` tag.
    pub fn pow_target(&self) -> Option<u32> {
        self.tags
            .iter()
            .find(|t| t.len() >= 3 && t[0] == "nonce")
            .and_then(|t| t[2].parse().ok())
    }
}

/// The events a NIP-09 deletion request names (see [`Event::deletion_targets`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeletionTargets {
    /// Ids from `e` tags.
    pub ids: Vec<[u8; 32]>,
    /// (kind, `d` tag) of the author's own replaceable ("" as `d`) or addressable events.
    pub addresses: Vec<(u16, String)>,
}

/// Splits `kind:pubkey:d` of an `a` tag naming a replaceable (empty `d`) or addressable event.
fn parse_address(address: &str) -> Option<(u16, [u8; 32], &str)> {
    let mut parts = address.splitn(3, ':');
    let kind: u16 = parts.next()?.parse().ok()?;
    let pubkey = hex::decode::<32>(parts.next()?)?;
    let d = parts.next()?;
    match KindClass::of(kind) {
        KindClass::Replaceable if d.is_empty() => Some((kind, pubkey, d)),
        KindClass::Addressable => Some((kind, pubkey, d)),
        _ => None,
    }
}

/// An event whose id and signature have been checked, with its canonical JSON serialized
/// once so that every subscriber's frame and the store reuse the same bytes.
#[derive(Debug)]
pub struct VerifiedEvent {
    /// The parsed event.
    pub event: Event,
    /// [`Event::to_json`] of `event`, shared (the store's cache keeps the same bytes).
    pub json: Arc<str>,
}

impl VerifiedEvent {
    /// Verifies the event and serializes it.
    pub fn verify(event: Event) -> Result<Self, EventError> {
        event.verify()?;
        Ok(Self::trusted(event))
    }

    /// Wraps an event that was verified before: read back from this relay's store or from
    /// another node of the cluster.
    pub fn trusted(event: Event) -> Self {
        let json = event.to_json().into();
        Self { event, json }
    }
}

fn canonical_hash(
    pubkey: &[u8; 32],
    created_at: u64,
    kind: u16,
    tags: &[Vec<String>],
    content: &str,
) -> [u8; 32] {
    let mut hasher = HashWriter(Sha256::new());
    let result: io::Result<()> = (|| {
        hasher.write_all(b"[0,\"")?;
        hasher.write_all(hex::encode(pubkey).as_bytes())?;
        write!(hasher, "\",{created_at},{kind},")?;
        serde_json::to_writer(&mut hasher, tags)?;
        hasher.write_all(b",")?;
        serde_json::to_writer(&mut hasher, content)?;
        hasher.write_all(b"]")
    })();
    result.expect("hashing never fails");
    hasher.0.finalize().into()
}

/// Feeds serialized bytes straight into the hash, so the canonical form is never buffered.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A signing key, for clients of the relay: the test suite and the benchmark.
pub struct Keys {
    keypair: secp256k1::Keypair,
    pubkey: [u8; 32],
}

impl Keys {
    /// Keys from a 32-byte secret; `None` if the bytes are not a valid secret key.
    pub fn from_secret(secret: [u8; 32]) -> Option<Self> {
        let keypair = secp256k1::Keypair::from_secret_bytes(secret).ok()?;
        let pubkey = keypair.x_only_public_key().0.to_byte_array();
        Some(Self { keypair, pubkey })
    }

    /// The x-only public key.
    pub fn pubkey(&self) -> [u8; 32] {
        self.pubkey
    }

    /// Builds and signs an event (deterministic signature, no auxiliary randomness).
    pub fn sign(&self, created_at: u64, kind: u16, tags: Vec<Vec<String>>, content: &str) -> Event {
        let id = canonical_hash(&self.pubkey, created_at, kind, &tags, content);
        let sig = schnorr::sign_no_aux_rand(&id, &self.keypair).to_byte_array();
        Event {
            id,
            pubkey: self.pubkey,
            created_at,
            kind,
            tags,
            content: content.to_string(),
            sig,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real event from the wild (the NIP-13 example), signed by a client that is not ours.
    const NIP13_EXAMPLE: &str = r#"{"id":"000006d8c378af1779d2feebc7603a125d99eca0ccf1085959b307f64e5dd358","pubkey":"a48380f4cfcc1ad5378294fcac36439770f9c878dd880ffa94bb74ea54a6f243","created_at":1651794653,"kind":1,"tags":[["nonce","776797","20"]],"content":"It's just me mining my own business","sig":"284622fc0a3f4f1303455d5175f7ba962a3300d136085b9566801bc2e0699de0c7e31e44c81fb40ad9049173742e904713c3594a1da0fc5d2382a25c11aba977"}"#;

    const PUBKEY: &str = "a48380f4cfcc1ad5378294fcac36439770f9c878dd880ffa94bb74ea54a6f243";

    fn unsigned(content: &str) -> Event {
        Event {
            id: [0; 32],
            pubkey: hex::decode(PUBKEY).unwrap(),
            created_at: 1_700_000_000,
            kind: 1,
            tags: vec![
                vec![
                    "e".into(),
                    "5c83da77af1dec6d7289834998ad7aafbd9e2191396d75ec3cc27f5a77226f36".into(),
                    "wss://r.example".into(),
                ],
                vec!["t".into(), "café\n".into()],
            ],
            content: content.into(),
            sig: [0; 64],
        }
    }

    // The expected ids below were computed outside this crate, by Python's json.dumps with
    // separators=(',', ':') and ensure_ascii=False, which escapes exactly as NIP-01 and
    // JavaScript's JSON.stringify do.
    #[test]
    fn id_escapes_the_characters_nip01_lists() {
        let e = unsigned("line\nquote\" backslash\\ cr\r tab\t bs\u{8} ff\u{c} end");
        assert_eq!(
            hex::encode(&e.compute_id()),
            "865a91ae81afbece3d7d607b279bf32d7eefa4062cbdb94736d35b70af3ca595"
        );
    }

    #[test]
    fn id_escapes_other_control_characters_as_unicode_escapes() {
        let e = unsigned("nul\u{0} soh\u{1} us\u{1f} del\u{7f}");
        assert_eq!(
            hex::encode(&e.compute_id()),
            "8e272fc3a38828b4703e8e434106651cd7b61aa3de7e3ed6a745701edcd423ff"
        );
    }

    #[test]
    fn id_keeps_non_ascii_emoji_and_line_separators_verbatim() {
        let e = unsigned("café 日本 🚀 sep\u{2028}para\u{2029} /slash");
        assert_eq!(
            hex::encode(&e.compute_id()),
            "8fcee7c74f0a3fecf5c6846eebbd363549f36545f88902ac9952dfbe85a9ec7d"
        );
    }

    #[test]
    fn verifies_an_event_signed_elsewhere() {
        let e = Event::parse(NIP13_EXAMPLE).unwrap();
        assert_eq!(e.verify(), Ok(()));
        assert_eq!(e.pow_difficulty(), 21);
        assert_eq!(e.pow_target(), Some(20));
    }

    #[test]
    fn the_kind_is_read_from_the_canonical_prefix_only() {
        let e = Event::parse(NIP13_EXAMPLE).unwrap();
        assert_eq!(Event::kind_of_canonical(&e.to_json()), Some(e.kind));
        let spaced = NIP13_EXAMPLE.replace(",\"", ", \"");
        assert_eq!(Event::kind_of_canonical(&spaced), None);
        let mut v: serde_json::Value = serde_json::from_str(NIP13_EXAMPLE).unwrap();
        v["content"] = serde_json::Value::from(",\"kind\":4,\"tags\":");
        let reordered =
            serde_json::to_string(&serde_json::json!({"content": v["content"], "id": v["id"]}))
                .unwrap();
        assert_eq!(Event::kind_of_canonical(&reordered), None);
    }

    #[test]
    fn canonical_json_round_trips_and_keeps_the_id() {
        let e = Event::parse(NIP13_EXAMPLE).unwrap();
        assert_eq!(e.to_json(), NIP13_EXAMPLE);
        let spaced = NIP13_EXAMPLE.replace(",\"", ", \"");
        assert_eq!(Event::parse(&spaced).unwrap().to_json(), NIP13_EXAMPLE);
    }

    #[test]
    fn detects_tampering() {
        let mut e = Event::parse(NIP13_EXAMPLE).unwrap();
        e.content.push('!');
        assert_eq!(e.verify(), Err(EventError::IdMismatch));
        let mut e = Event::parse(NIP13_EXAMPLE).unwrap();
        e.sig[10] ^= 1;
        assert_eq!(e.verify(), Err(EventError::BadSignature));
    }

    #[test]
    fn signs_what_it_verifies() {
        let keys = Keys::from_secret([7; 32]).unwrap();
        let content = "escapes \" \\ \n and 🚀 \u{2028}";
        let e = keys.sign(
            1_700_000_000,
            1,
            vec![vec!["t".into(), "x".into()]],
            content,
        );
        assert_eq!(e.verify(), Ok(()));
        let reparsed = Event::parse(&e.to_json()).unwrap();
        assert_eq!(reparsed, e);
    }

    #[test]
    fn refuses_bad_shapes() {
        let with = |field: &str, value: &str| {
            let mut v: serde_json::Value = serde_json::from_str(NIP13_EXAMPLE).unwrap();
            v[field] = serde_json::from_str(value).unwrap();
            Event::parse(&v.to_string())
        };
        assert!(matches!(with("id", "\"ABC\""), Err(EventError::Shape(_))));
        let upper = format!("\"{}\"", PUBKEY.to_uppercase());
        assert!(matches!(with("pubkey", &upper), Err(EventError::Shape(_))));
        assert!(matches!(with("sig", "\"00\""), Err(EventError::Shape(_))));
        assert!(matches!(with("kind", "65536"), Err(EventError::Shape(_))));
        assert!(matches!(with("kind", "-1"), Err(EventError::Shape(_))));
        assert!(matches!(
            with("created_at", "1.5"),
            Err(EventError::Shape(_))
        ));
        assert!(matches!(
            with("tags", "[[\"e\", null]]"),
            Err(EventError::Shape(_))
        ));
        assert!(matches!(with("tags", "[[]]"), Err(EventError::Shape(_))));
        assert!(matches!(with("tags", "[\"e\"]"), Err(EventError::Shape(_))));
        assert!(matches!(with("content", "3"), Err(EventError::Shape(_))));
        assert!(matches!(Event::parse("{}"), Err(EventError::Shape(_))));
        assert!(matches!(Event::parse("[]"), Err(EventError::Shape(_))));
    }

    #[test]
    fn deletion_targets_keep_only_the_authors_addresses() {
        let keys = Keys::from_secret([9; 32]).unwrap();
        let me = hex::encode(&keys.pubkey());
        let other = "ab".repeat(32);
        let id = "cd".repeat(32);
        let tags = [
            vec!["e".to_string(), id.clone()],
            vec!["e".to_string(), id.clone()],
            vec!["e".to_string(), "short".to_string()],
            vec!["a".to_string(), format!("30023:{me}:post")],
            vec!["a".to_string(), format!("0:{me}:")],
            vec!["a".to_string(), format!("0:{me}:x")],
            vec!["a".to_string(), format!("1:{me}:")],
            vec!["a".to_string(), format!("30023:{other}:post")],
            vec!["a".to_string(), "nonsense".to_string()],
        ];
        let request = keys.sign(1, 5, tags.to_vec(), "");
        let targets = request.deletion_targets();
        assert_eq!(targets.ids, vec![hex::decode::<32>(&id).unwrap()]);
        assert_eq!(
            targets.addresses,
            vec![(0, String::new()), (30_023, "post".to_string())]
        );
    }

    #[test]
    fn reads_tag_conventions() {
        let keys = Keys::from_secret([9; 32]).unwrap();
        let tags = vec![
            vec!["d".into(), "slug".into()],
            vec!["expiration".into(), "1800000000".into()],
            vec!["alt".into(), "x".into()],
            vec!["P".into(), "v".into(), "extra".into()],
            vec!["e".into()],
        ];
        let e = keys.sign(1, 30_023, tags, "");
        assert_eq!(e.d_tag(), "slug");
        assert_eq!(e.expiration(), Ok(Some(1_800_000_000)));
        assert_eq!(
            e.indexed_tags().collect::<Vec<_>>(),
            vec![(b'd', "slug"), (b'P', "v")]
        );
        let bad = keys.sign(1, 1, vec![vec!["expiration".into(), "soon".into()]], "");
        assert!(bad.expiration().is_err());
    }
}
