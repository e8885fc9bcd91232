//! What an event must be, beyond its shape and signature: within the limits of the
//! configuration (reported in NIP-11), not expired (NIP-40), with the proof of work asked
//! for (NIP-13).

use crate::{
    config::Config,
    nostr::{Event, Prefix, Reason},
};

/// Checks an event of `bytes` bytes (as the client sent it) against the configured limits
/// at time `now` (unix seconds).
pub fn check_event(config: &Config, event: &Event, bytes: usize, now: u64) -> Result<(), Reason> {
    if event.kind == super::auth::AUTH_KIND {
        // NIP-42: authentication events are never stored or broadcast.
        return Err(Reason::invalid(
            "kind 22242 events authenticate with AUTH; they are not published",
        ));
    }
    if bytes > config.max_event_bytes {
        return Err(Reason::invalid(format!(
            "event is larger than {} bytes",
            config.max_event_bytes
        )));
    }
    if event.tags.len() > config.max_event_tags {
        return Err(Reason::invalid(format!(
            "too many tags ({}, at most {})",
            event.tags.len(),
            config.max_event_tags
        )));
    }
    let longest = config.max_tag_value_bytes;
    if event
        .tags
        .iter()
        .flatten()
        .any(|value| value.len() > longest)
    {
        return Err(Reason::invalid(format!(
            "a tag holds a value longer than {longest} bytes"
        )));
    }
    if event.content.chars().count() > config.max_content_length {
        return Err(Reason::invalid(format!(
            "content is longer than {} characters",
            config.max_content_length
        )));
    }
    if event.created_at > now.saturating_add(config.created_at_upper_limit) {
        return Err(Reason::invalid(format!(
            "created_at is more than {} seconds in the future",
            config.created_at_upper_limit
        )));
    }
    match event.expiration() {
        Err(e) => return Err(e.into()),
        Ok(Some(expires)) if expires <= now => return Err(Reason::invalid("event has expired")),
        Ok(_) => {}
    }
    let required = config.min_pow_difficulty;
    if required > 0 {
        let difficulty = event.pow_difficulty();
        if difficulty < required {
            return Err(Reason::new(
                Prefix::Pow,
                format!("difficulty {difficulty} is less than {required}"),
            ));
        }
        if let Some(target) = event.pow_target().filter(|t| *t < required) {
            return Err(Reason::new(
                Prefix::Pow,
                format!("committed target difficulty {target} is less than {required}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nostr::Keys;

    fn event(created_at: u64, tags: Vec<Vec<String>>, content: &str) -> Event {
        Keys::from_secret([5; 32])
            .unwrap()
            .sign(created_at, 1, tags, content)
    }

    #[test]
    fn enforces_each_limit() {
        let c = Config::from_args(&[
            "--max-event-tags",
            "1",
            "--max-content-length",
            "3",
            "--created-at-upper-limit",
            "10",
        ]);
        let tag = || vec!["t".to_string(), "x".to_string()];
        assert_eq!(
            check_event(&c, &event(100, vec![tag()], "abc"), 0, 100),
            Ok(())
        );
        assert_eq!(
            check_event(&c, &event(100, vec![], "日本語"), 0, 100),
            Ok(())
        );
        assert!(check_event(&c, &event(100, vec![tag(), tag()], ""), 0, 100).is_err());
        assert!(check_event(&c, &event(100, vec![], "abcd"), 0, 100).is_err());
        assert_eq!(check_event(&c, &event(110, vec![], ""), 0, 100), Ok(()));
        assert!(check_event(&c, &event(111, vec![], ""), 0, 100).is_err());
    }

    #[test]
    fn bounds_the_event_and_each_tag_value_in_bytes() {
        let c = Config::from_args(&["--max-event-bytes", "1000", "--max-tag-value-bytes", "5"]);
        let tag = |value: &str| vec![vec!["d".to_string(), value.to_string()]];
        assert_eq!(
            check_event(&c, &event(1, tag("12345"), ""), 1000, 100),
            Ok(())
        );
        assert!(check_event(&c, &event(1, tag("123456"), ""), 10, 100).is_err());
        assert!(check_event(&c, &event(1, vec![], ""), 1001, 100).is_err());
    }

    #[test]
    fn refuses_expired_events() {
        let c = Config::from_args(&[]);
        let exp = |t: &str| vec![vec!["expiration".to_string(), t.to_string()]];
        assert_eq!(check_event(&c, &event(1, exp("101"), ""), 0, 100), Ok(()));
        assert_eq!(
            check_event(&c, &event(1, exp("100"), ""), 0, 100)
                .unwrap_err()
                .message,
            "event has expired"
        );
        assert_eq!(
            check_event(&c, &event(1, exp("x"), ""), 0, 100)
                .unwrap_err()
                .prefix,
            Prefix::Invalid
        );
    }

    #[test]
    fn requires_proof_of_work_when_configured() {
        let c = Config::from_args(&["--min-pow-difficulty", "1"]);
        let keys = Keys::from_secret([5; 32]).unwrap();
        let mined = (0u64..)
            .map(|n| {
                keys.sign(
                    1,
                    1,
                    vec![vec!["nonce".into(), n.to_string(), "1".into()]],
                    "",
                )
            })
            .find(|e| e.pow_difficulty() >= 1)
            .unwrap();
        assert_eq!(check_event(&c, &mined, 0, 100), Ok(()));
        let unmined = (0u64..)
            .map(|n| keys.sign(1, 1, vec![vec!["n".into(), n.to_string()]], ""))
            .find(|e| e.pow_difficulty() == 0)
            .unwrap();
        assert_eq!(
            check_event(&c, &unmined, 0, 100).unwrap_err().prefix,
            Prefix::Pow
        );
        let low_target = (0u64..)
            .map(|n| {
                keys.sign(
                    1,
                    1,
                    vec![vec!["nonce".into(), n.to_string(), "0".into()]],
                    "",
                )
            })
            .find(|e| e.pow_difficulty() >= 1)
            .unwrap();
        assert_eq!(
            check_event(&c, &low_target, 0, 100).unwrap_err().prefix,
            Prefix::Pow
        );
    }
}
