//! NIP-42 authentication: whether an `AUTH` event proves its author holds this connection;
//! NIP-70 protected events, which only their authenticated author may publish; and which
//! NIP-62 requests to vanish are addressed to this relay (the same relay URLs decide).
//!
//! An `AUTH` event counts when it is of kind 22242, was made within ten minutes of now,
//! carries the challenge this connection was sent, and names this relay in its `relay` tag.
//! The relay's URLs are those of `--public-url`; without any, the URL the client reached
//! (the upgrade request's `Host`, over `ws` or `wss`), compared as [`RelayUrl`] says. The
//! signature is checked by the verifier, like any event's.

use crate::{
    config::Config,
    nostr::{Event, Prefix, Reason, RelayUrl, kind::VANISH},
};

/// The kind of NIP-42 authentication events.
pub const AUTH_KIND: u16 = 22242;
/// How far an `AUTH` event's `created_at` may be from now, in seconds.
pub const AUTH_WINDOW_SECONDS: u64 = 600;

/// Checks `event` as an answer to `challenge` for a relay at `urls`, at `now`; the
/// signature is checked apart. Refusals are `invalid:`.
pub fn check_auth(
    event: &Event,
    challenge: &str,
    urls: &[RelayUrl],
    now: u64,
) -> Result<(), Reason> {
    let invalid = |why: &str| Err(Reason::new(Prefix::Invalid, why));
    if event.kind != AUTH_KIND {
        return invalid("an AUTH event is of kind 22242");
    }
    if event.created_at.abs_diff(now) > AUTH_WINDOW_SECONDS {
        return invalid("the AUTH event's created_at is more than ten minutes from now");
    }
    if event.tag_value("challenge") != Some(challenge) {
        return invalid("the AUTH event does not answer this connection's challenge");
    }
    let named = event
        .tag_value("relay")
        .and_then(|url| RelayUrl::parse(url).ok());
    if !named.is_some_and(|url| urls.contains(&url)) {
        return invalid("the AUTH event's relay tag does not name this relay");
    }
    Ok(())
}

/// The relay's URLs from `--public-url` (none when it is not set).
pub fn public_urls(config: &Config) -> Vec<RelayUrl> {
    config
        .public_url
        .iter()
        .filter_map(|url| RelayUrl::parse(url).ok())
        .collect()
}

/// The URLs a client that reached the relay at `host` may name: `--public-url`, or without
/// it the URL it reached.
pub fn relay_urls(config: &Config, host: Option<&str>) -> Vec<RelayUrl> {
    if config.public_url.is_empty() {
        host.map(RelayUrl::from_host).unwrap_or_default()
    } else {
        public_urls(config)
    }
}

/// Refuses a NIP-62 request to vanish that names neither this relay (one of `urls`, made
/// only for a request to vanish) nor `ALL_RELAYS` in its `relay` tags: the store applies
/// every request it keeps.
pub fn check_vanish(event: &Event, urls: impl FnOnce() -> Vec<RelayUrl>) -> Result<(), Reason> {
    if event.kind != VANISH {
        return Ok(());
    }
    let urls = urls();
    let named = event
        .tags
        .iter()
        .filter(|tag| tag.len() >= 2 && tag[0] == "relay")
        .any(|tag| {
            tag[1] == "ALL_RELAYS" || RelayUrl::parse(&tag[1]).is_ok_and(|url| urls.contains(&url))
        });
    if named {
        Ok(())
    } else {
        Err(Reason::invalid(
            "this request to vanish names neither this relay nor ALL_RELAYS",
        ))
    }
}

/// Whether `event` is NIP-70 protected (it carries the tag `["-"]`).
pub fn is_protected(event: &Event) -> bool {
    event.tags.iter().any(|tag| tag.len() == 1 && tag[0] == "-")
}

/// Whether a connection authenticated as `authed` may publish `event`: anyone may publish
/// an unprotected event; a protected one only its author.
pub fn may_publish(event: &Event, authed: &[[u8; 32]]) -> Result<(), Reason> {
    if !is_protected(event) || authed.contains(&event.pubkey) {
        return Ok(());
    }
    Err(if authed.is_empty() {
        Reason::new(
            Prefix::AuthRequired,
            "this event is protected: only its author may publish it; authenticate first",
        )
    } else {
        Reason::new(
            Prefix::Restricted,
            "this event is protected: only its author may publish it",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nostr::Keys;

    const NOW: u64 = 1_700_000_000;

    fn auth(created_at: u64, challenge: &str, relay: &str) -> Event {
        let tags = vec![
            vec!["relay".to_string(), relay.to_string()],
            vec!["challenge".to_string(), challenge.to_string()],
        ];
        Keys::from_secret([7; 32])
            .unwrap()
            .sign(created_at, AUTH_KIND, tags, "")
    }

    fn urls(list: &[&str]) -> Vec<RelayUrl> {
        list.iter().map(|u| RelayUrl::parse(u).unwrap()).collect()
    }

    #[test]
    fn an_auth_event_must_answer_this_challenge_for_this_relay_now() {
        let ours = urls(&["wss://relay.example.com"]);
        let good = auth(NOW, "c1", "wss://relay.example.com/");
        assert_eq!(check_auth(&good, "c1", &ours, NOW), Ok(()));
        assert_eq!(
            check_auth(&good, "c1", &ours, NOW + AUTH_WINDOW_SECONDS),
            Ok(())
        );
        for (event, challenge) in [
            (
                auth(
                    NOW - AUTH_WINDOW_SECONDS - 1,
                    "c1",
                    "wss://relay.example.com/",
                ),
                "c1",
            ),
            (auth(NOW, "c1", "wss://relay.example.com/"), "c2"),
            (auth(NOW, "c1", "wss://elsewhere.example.com/"), "c1"),
        ] {
            let refused = check_auth(&event, challenge, &ours, NOW).unwrap_err();
            assert_eq!(refused.prefix, Prefix::Invalid);
        }
        let mut note = good.clone();
        note.kind = 1;
        assert!(check_auth(&note, "c1", &ours, NOW).is_err());
    }

    #[test]
    fn protected_events_need_their_author() {
        let keys = Keys::from_secret([3; 32]).unwrap();
        let protected = keys.sign(NOW, 1, vec![vec!["-".to_string()]], "mine");
        let open = keys.sign(NOW, 1, vec![], "anyone's");
        assert_eq!(may_publish(&open, &[]), Ok(()));
        assert_eq!(
            may_publish(&protected, &[]).unwrap_err().prefix,
            Prefix::AuthRequired
        );
        assert_eq!(
            may_publish(&protected, &[[9; 32]]).unwrap_err().prefix,
            Prefix::Restricted
        );
        assert_eq!(may_publish(&protected, &[[9; 32], keys.pubkey()]), Ok(()));
    }
}
