//! NIP-98 HTTP authorization for the management API: a signed kind 27235 event, base64 in
//! `Authorization: Nostr …`, naming the relay's URL (`u`), the HTTP method (`method`) and
//! the SHA-256 of the body (`payload`, which NIP-86 requires), made within a minute.

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::nostr::{Event, RelayUrl, hex};

/// The kind of an HTTP authorization event.
pub const HTTP_AUTH_KIND: u16 = 27235;

/// How far `created_at` may be from now, in seconds.
pub const WINDOW_SECONDS: u64 = 60;

/// Why an `Authorization` header does not authorize a request (answered with 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unauthorized {
    /// No header, or not the `Nostr` scheme.
    #[error("an Authorization: Nostr <base64 event> header (NIP-98) is required")]
    Missing,
    /// Not base64, or not an event.
    #[error("the Authorization header does not hold a base64 Nostr event")]
    Malformed,
    /// A check of NIP-98 failed; the text says which.
    #[error("{0}")]
    Refused(&'static str),
}

/// Checks the header of a request with `body` sent with HTTP `method` to a relay reachable
/// at `urls`; the event (not yet signature-checked: the caller does that on the verifier)
/// when every other check passes.
pub fn check(
    header: Option<&str>,
    method: &str,
    body: &[u8],
    urls: &[RelayUrl],
    now: u64,
) -> Result<Event, Unauthorized> {
    let encoded = header
        .and_then(|h| h.trim().strip_prefix("Nostr "))
        .ok_or(Unauthorized::Missing)?;
    let json = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| Unauthorized::Malformed)?;
    let json = String::from_utf8(json).map_err(|_| Unauthorized::Malformed)?;
    let event = Event::parse(&json).map_err(|_| Unauthorized::Malformed)?;
    if event.kind != HTTP_AUTH_KIND {
        return Err(Unauthorized::Refused(
            "the authorization event must be of kind 27235",
        ));
    }
    if event.created_at.abs_diff(now) > WINDOW_SECONDS {
        return Err(Unauthorized::Refused(
            "the authorization event's created_at is more than a minute from now",
        ));
    }
    let named = event.tag_value("u").and_then(as_relay_url);
    if !named.is_some_and(|url| urls.contains(&url)) {
        return Err(Unauthorized::Refused(
            "the authorization event's u tag does not name this relay",
        ));
    }
    if !event
        .tag_value("method")
        .is_some_and(|m| m.eq_ignore_ascii_case(method))
    {
        return Err(Unauthorized::Refused(
            "the authorization event's method tag does not match the request",
        ));
    }
    let digest = hex::encode(&<[u8; 32]>::from(Sha256::digest(body)));
    if event.tag_value("payload") != Some(digest.as_str()) {
        return Err(Unauthorized::Refused(
            "the authorization event's payload tag is not the SHA-256 of the body",
        ));
    }
    Ok(event)
}

/// A `u` tag as a relay URL: `http(s)://` names the same relay as `ws(s)://`.
fn as_relay_url(text: &str) -> Option<RelayUrl> {
    let text = text.trim();
    let lower = text.to_ascii_lowercase();
    let ws = if lower.starts_with("https://") {
        format!("wss://{}", &text["https://".len()..])
    } else if lower.starts_with("http://") {
        format!("ws://{}", &text["http://".len()..])
    } else {
        text.to_string()
    };
    RelayUrl::parse(&ws).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nostr::Keys;

    const NOW: u64 = 1_700_000_000;

    fn header(tags: Vec<Vec<String>>, created_at: u64, kind: u16) -> String {
        let event = Keys::from_secret([7; 32])
            .unwrap()
            .sign(created_at, kind, tags, "");
        let encoded = base64::engine::general_purpose::STANDARD.encode(event.to_json());
        format!("Nostr {encoded}")
    }

    fn tags(u: &str, method: &str, body: &[u8]) -> Vec<Vec<String>> {
        let digest = hex::encode(&<[u8; 32]>::from(Sha256::digest(body)));
        vec![
            vec!["u".into(), u.into()],
            vec!["method".into(), method.into()],
            vec!["payload".into(), digest],
        ]
    }

    #[test]
    fn every_check_of_nip98() {
        let urls = vec![RelayUrl::parse("wss://relay.example.com/").unwrap()];
        let body = br#"{"method":"supportedmethods","params":[]}"#;
        let good = header(tags("https://relay.example.com", "POST", body), NOW, 27235);
        assert!(check(Some(&good), "POST", body, &urls, NOW + 30).is_ok());
        let as_ws = header(tags("wss://relay.example.com/", "POST", body), NOW, 27235);
        assert!(check(Some(&as_ws), "POST", body, &urls, NOW).is_ok());

        assert_eq!(
            check(None, "POST", body, &urls, NOW),
            Err(Unauthorized::Missing)
        );
        assert_eq!(
            check(Some("Nostr %%%"), "POST", body, &urls, NOW),
            Err(Unauthorized::Malformed)
        );
        let refused = |h: &str, body: &[u8]| {
            matches!(
                check(Some(h), "POST", body, &urls, NOW),
                Err(Unauthorized::Refused(_))
            )
        };
        assert!(refused(
            &header(tags("https://relay.example.com", "POST", body), NOW, 1),
            body
        ));
        assert!(refused(
            &header(
                tags("https://relay.example.com", "POST", body),
                NOW - 61,
                27235
            ),
            body
        ));
        assert!(refused(
            &header(tags("https://other.example.com", "POST", body), NOW, 27235),
            body
        ));
        assert!(refused(
            &header(tags("https://relay.example.com", "GET", body), NOW, 27235),
            body
        ));
        assert!(
            refused(&good, b"{\"method\":\"banpubkey\"}"),
            "a payload for another body"
        );
        let no_payload = vec![
            vec!["u".to_string(), "https://relay.example.com".to_string()],
            vec!["method".to_string(), "POST".to_string()],
        ];
        assert!(
            refused(&header(no_payload, NOW, 27235), body),
            "payload is required"
        );
    }
}
