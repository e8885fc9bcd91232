//! Who may read private events: direct messages (kind 4), gift wraps (kind 1059, NIP-59 and
//! NIP-17) and any other kind in `--private-kinds` are served only to a connection
//! authenticated (NIP-42) as their author or as a pubkey their `p` tags name, stored and
//! live alike.
//!
//! A filter that asks for a private kind by name from a connection that has not
//! authenticated is refused with `auth-required:`, so that the client knows to `AUTH`; a
//! filter that could match private events without naming their kinds (one with no `kinds`)
//! gets them silently left out for whoever may not read them.

use std::sync::Arc;

use crate::nostr::{Event, Filter, Prefix, Reason, hex};

/// What one subscription may read: the relay's private kinds and the pubkeys its connection
/// had authenticated as when the subscription was opened. One pointer wide, since every
/// subscription that could match private events holds one.
#[derive(Debug, Clone)]
pub struct Readers(Arc<Known>);

/// What [`Readers`] know.
#[derive(Debug)]
struct Known {
    private_kinds: Box<[u16]>,
    authed: Box<[[u8; 32]]>,
}

impl Readers {
    /// The readers `authed` may be, with `private_kinds` private.
    pub fn new(private_kinds: &[u16], authed: &[[u8; 32]]) -> Self {
        Self(Arc::new(Known {
            private_kinds: private_kinds.into(),
            authed: authed.into(),
        }))
    }

    /// Refuses `filters` when one names a private kind and the connection has not
    /// authenticated.
    pub fn check_filters(&self, filters: &[Filter]) -> Result<(), Reason> {
        let names_private = filters.iter().any(|filter| {
            filter
                .kinds
                .as_ref()
                .is_some_and(|kinds| kinds.iter().any(|k| self.0.private_kinds.contains(k)))
        });
        if names_private && self.0.authed.is_empty() {
            return Err(Reason::new(
                Prefix::AuthRequired,
                "direct messages and gift wraps are served only to their author and recipients; authenticate first",
            ));
        }
        Ok(())
    }

    /// Whether any of `filters` could match a private event, so that each event must be
    /// checked with [`Readers::may_read`].
    pub fn apply_to(&self, filters: &[Filter]) -> bool {
        filters.iter().any(|filter| match &filter.kinds {
            None => !self.0.private_kinds.is_empty(),
            Some(kinds) => kinds.iter().any(|k| self.0.private_kinds.contains(k)),
        })
    }

    /// Whether these readers may see `event`.
    pub fn may_read(&self, event: &Event) -> bool {
        if !self.0.private_kinds.contains(&event.kind) {
            return true;
        }
        if self.0.authed.contains(&event.pubkey) {
            return true;
        }
        event.tags.iter().any(|tag| {
            tag.len() >= 2
                && tag[0] == "p"
                && hex::decode::<32>(&tag[1]).is_some_and(|p| self.0.authed.contains(&p))
        })
    }

    /// [`Readers::may_read`] for an event as the store keeps it (its canonical JSON),
    /// parsed only when its kind, read from the JSON's fixed prefix, is a private one.
    pub fn may_read_json(&self, json: &str) -> bool {
        match Event::kind_of_canonical(json) {
            Some(kind) if !self.0.private_kinds.contains(&kind) => true,
            _ => Event::parse(json).is_ok_and(|event| self.may_read(&event)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nostr::Keys;

    fn keys(n: u8) -> Keys {
        Keys::from_secret([n; 32]).unwrap()
    }

    fn wrap_for(recipient: &Keys) -> Event {
        let p = vec!["p".to_string(), hex::encode(&recipient.pubkey())];
        keys(9).sign(1_700_000_000, 1059, vec![p], "sealed")
    }

    #[test]
    fn private_events_are_for_their_author_and_recipients() {
        let (alice, bob) = (keys(1), keys(2));
        let wrap = wrap_for(&alice);
        let nobody = Readers::new(&[4, 1059], &[]);
        let as_alice = Readers::new(&[4, 1059], &[alice.pubkey()]);
        let as_bob = Readers::new(&[4, 1059], &[bob.pubkey()]);
        let as_sender = Readers::new(&[4, 1059], &[keys(9).pubkey()]);
        assert!(!nobody.may_read(&wrap));
        assert!(as_alice.may_read(&wrap));
        assert!(!as_bob.may_read(&wrap));
        assert!(as_sender.may_read(&wrap));
        let json = wrap.to_json();
        assert!(!nobody.may_read_json(&json) && as_alice.may_read_json(&json));
        let note = bob.sign(1_700_000_000, 1, vec![], "public");
        assert!(nobody.may_read(&note) && nobody.may_read_json(&note.to_json()));
    }

    #[test]
    fn naming_a_private_kind_needs_authentication() {
        let dms = Filter::parse(r#"{"kinds":[4]}"#).unwrap();
        let notes = Filter::parse(r#"{"kinds":[1]}"#).unwrap();
        let anything = Filter::parse(
            r#"{"authors":["0000000000000000000000000000000000000000000000000000000000000001"]}"#,
        )
        .unwrap();
        let nobody = Readers::new(&[4, 1059], &[]);
        let someone = Readers::new(&[4, 1059], &[[1; 32]]);
        assert_eq!(
            nobody
                .check_filters(&[notes.clone(), dms.clone()])
                .unwrap_err()
                .prefix,
            Prefix::AuthRequired
        );
        assert_eq!(someone.check_filters(std::slice::from_ref(&dms)), Ok(()));
        assert_eq!(
            nobody.check_filters(&[notes.clone(), anything.clone()]),
            Ok(())
        );
        assert!(nobody.apply_to(&[anything]) && nobody.apply_to(&[dms]));
        assert!(!nobody.apply_to(&[notes]));
    }
}
