//! The operator's rules on who may write and read: allow and deny lists of pubkeys, kinds
//! and client addresses, banned events, a members-only mode (a private relay: writing,
//! reading or both need a NIP-42 authenticated member), and the paid-relay shape (only
//! allowed pubkeys may write). They are the configuration's lists joined with the lists the
//! store keeps (changed through the management API), at one stored version.
//!
//! Members are the allowed pubkeys; with no allow list, any authenticated pubkey. A request
//! to vanish (NIP-62) is accepted whatever the rules say, as NIP-62 requires.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
};

use crate::{
    config::{Config, MembersOnly},
    nostr::{Event, Prefix, Reason, hex, kind::VANISH},
    proxy::{Cidr, CidrSet},
    store::policy::{PolicyList, Removal, StoredPolicy},
};

/// The rules, ready to check.
#[derive(Debug, Clone)]
pub struct Rules {
    allowed_pubkeys: HashSet<[u8; 32]>,
    banned_pubkeys: HashSet<[u8; 32]>,
    allowed_kinds: HashSet<u16>,
    banned_kinds: HashSet<u16>,
    blocked_addresses: CidrSet,
    banned_events: HashSet<[u8; 32]>,
    members_only: MembersOnly,
    /// NIP-11 fields an admin changed (`name`, `description`, `icon`).
    settings: BTreeMap<String, String>,
    /// The stored version these rules include.
    version: u64,
    /// Whether they include the stored rules at all (not only the configuration's).
    loaded: bool,
}

impl Rules {
    /// The rules `config` sets (its pubkeys were checked when it was read).
    pub fn from_config(config: &Config) -> Self {
        Self {
            loaded: false,
            ..Self::new(config, &StoredPolicy::default())
        }
    }

    /// The rules `config` sets joined with those `stored` (entries that do not parse, which
    /// the management API never writes, are left out).
    pub fn new(config: &Config, stored: &StoredPolicy) -> Self {
        let values = |list: PolicyList| {
            stored
                .entries
                .iter()
                .filter(move |e| e.list == list)
                .map(|e| e.value.as_str())
        };
        let keys = |configured: &[String], list| {
            let configured = configured.iter().filter_map(|k| hex::decode::<32>(k));
            let stored = values(list).filter_map(hex::decode::<32>);
            configured.chain(stored).collect()
        };
        let kinds = |configured: &[u16], list| {
            let stored = values(list).filter_map(|k| k.parse::<u16>().ok());
            configured.iter().copied().chain(stored).collect()
        };
        let mut blocked = config.blocked_ips.clone();
        blocked.extend(values(PolicyList::BlockedIp).filter_map(|ip| ip.parse::<Cidr>().ok()));
        Self {
            allowed_pubkeys: keys(&config.allowed_pubkeys, PolicyList::AllowedPubkey),
            banned_pubkeys: keys(&config.banned_pubkeys, PolicyList::BannedPubkey),
            allowed_kinds: kinds(&config.allowed_kinds, PolicyList::AllowedKind),
            banned_kinds: kinds(&config.banned_kinds, PolicyList::BannedKind),
            blocked_addresses: CidrSet::new(blocked),
            banned_events: keys(&[], PolicyList::BannedEvent),
            members_only: config.members_only,
            settings: stored.settings.iter().cloned().collect(),
            version: stored.version,
            loaded: true,
        }
    }

    /// What these rules ban that `previous` did not: the stored events to remove. None when
    /// `previous` did not include the stored rules (the removals were made when the bans
    /// were).
    pub fn removals_since(&self, previous: &Rules) -> Vec<Removal> {
        if !previous.loaded {
            return Vec::new();
        }
        let authors = self
            .banned_pubkeys
            .difference(&previous.banned_pubkeys)
            .map(|p| Removal::Author(*p));
        let events = self
            .banned_events
            .difference(&previous.banned_events)
            .map(|id| Removal::Event(*id));
        authors.chain(events).collect()
    }

    /// Whether these rules include the stored ones (not only the configuration's).
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// The stored version these rules include (0: none).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// A NIP-11 field an admin set through the management API, if any.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings.get(name).map(String::as_str)
    }

    /// Whether some condition must be met to write (NIP-11 `restricted_writes`).
    pub fn restricts_writes(&self) -> bool {
        !self.allowed_pubkeys.is_empty()
            || !self.banned_pubkeys.is_empty()
            || !self.allowed_kinds.is_empty()
            || !self.banned_kinds.is_empty()
            || matches!(self.members_only, MembersOnly::Write | MembersOnly::Both)
    }

    /// Whether reading needs authentication (NIP-11 `auth_required`).
    pub fn requires_auth(&self) -> bool {
        matches!(self.members_only, MembersOnly::Read | MembersOnly::Both)
    }

    fn is_member(&self, authed: &[[u8; 32]]) -> bool {
        if self.allowed_pubkeys.is_empty() {
            !authed.is_empty()
        } else {
            authed.iter().any(|p| self.allowed_pubkeys.contains(p))
        }
    }

    fn member_required(&self, authed: &[[u8; 32]]) -> Result<(), Reason> {
        if self.is_member(authed) {
            Ok(())
        } else if authed.is_empty() {
            Err(Reason::new(
                Prefix::AuthRequired,
                "this relay is for its members; authenticate first",
            ))
        } else {
            Err(Reason::new(
                Prefix::Restricted,
                "this relay is for its members",
            ))
        }
    }

    /// May a connection from `ip`, authenticated as `authed`, publish `event`?
    pub fn check_write(
        &self,
        event: &Event,
        ip: IpAddr,
        authed: &[[u8; 32]],
    ) -> Result<(), Reason> {
        if event.kind == VANISH {
            return Ok(());
        }
        if self.blocked_addresses.contains(ip) {
            return Err(Reason::new(
                Prefix::Blocked,
                "this address may not publish here",
            ));
        }
        if matches!(self.members_only, MembersOnly::Write | MembersOnly::Both) {
            self.member_required(authed)?;
        }
        self.check_event(event)
    }

    /// May `event` be stored, whoever sends it? The lists of events, pubkeys and kinds;
    /// what `starling import` applies.
    pub fn check_event(&self, event: &Event) -> Result<(), Reason> {
        if event.kind == VANISH {
            return Ok(());
        }
        if self.banned_events.contains(&event.id) {
            return Err(Reason::new(
                Prefix::Blocked,
                "this event was removed by the relay's moderators",
            ));
        }
        if self.banned_pubkeys.contains(&event.pubkey) {
            return Err(Reason::new(
                Prefix::Blocked,
                "this pubkey may not publish here",
            ));
        }
        if self.banned_kinds.contains(&event.kind)
            || (!self.allowed_kinds.is_empty() && !self.allowed_kinds.contains(&event.kind))
        {
            return Err(Reason::new(
                Prefix::Blocked,
                format!("kind {} is not accepted here", event.kind),
            ));
        }
        if !self.allowed_pubkeys.is_empty() && !self.allowed_pubkeys.contains(&event.pubkey) {
            return Err(Reason::new(
                Prefix::Restricted,
                "only this relay's allowed pubkeys may publish here",
            ));
        }
        Ok(())
    }

    /// May a connection authenticated as `authed` read (`REQ`, `COUNT`)?
    pub fn check_read(&self, authed: &[[u8; 32]]) -> Result<(), Reason> {
        if self.requires_auth() {
            self.member_required(authed)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nostr::Keys;

    fn rules(options: &[&str]) -> Rules {
        Rules::from_config(&Config::from_args(options))
    }

    fn event(n: u8, kind: u16) -> Event {
        Keys::from_secret([n; 32])
            .unwrap()
            .sign(1_700_000_000, kind, vec![], "")
    }

    fn pubkey(n: u8) -> [u8; 32] {
        Keys::from_secret([n; 32]).unwrap().pubkey()
    }

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1));

    #[test]
    fn lists_of_pubkeys_kinds_and_addresses() {
        let member = hex::encode(&pubkey(1));
        let banned = hex::encode(&pubkey(2));
        let r = rules(&[
            "--allowed-pubkeys",
            &member,
            "--banned-pubkeys",
            &banned,
            "--banned-kinds",
            "7",
            "--blocked-ips",
            "203.0.113.0/24",
        ]);
        assert_eq!(r.check_write(&event(1, 1), HOME, &[]), Ok(()));
        assert_eq!(
            r.check_write(&event(3, 1), HOME, &[]).unwrap_err().prefix,
            Prefix::Restricted
        );
        assert_eq!(
            r.check_write(&event(2, 1), HOME, &[]).unwrap_err().prefix,
            Prefix::Blocked
        );
        assert_eq!(
            r.check_write(&event(1, 7), HOME, &[]).unwrap_err().prefix,
            Prefix::Blocked
        );
        let blocked = "203.0.113.9".parse().unwrap();
        assert_eq!(
            r.check_write(&event(1, 1), blocked, &[])
                .unwrap_err()
                .prefix,
            Prefix::Blocked
        );
        assert_eq!(
            r.check_write(&event(3, VANISH), blocked, &[]),
            Ok(()),
            "vanish always"
        );
        assert!(r.restricts_writes() && !r.requires_auth());
        let kinds = rules(&["--allowed-kinds", "1,30023"]);
        assert_eq!(kinds.check_write(&event(1, 30023), HOME, &[]), Ok(()));
        assert!(kinds.check_write(&event(1, 7), HOME, &[]).is_err());
    }

    #[test]
    fn members_only_needs_an_authenticated_member() {
        let member = hex::encode(&pubkey(1));
        let private = rules(&["--members-only", "both", "--allowed-pubkeys", &member]);
        assert_eq!(
            private.check_read(&[]).unwrap_err().prefix,
            Prefix::AuthRequired
        );
        assert_eq!(
            private.check_read(&[pubkey(2)]).unwrap_err().prefix,
            Prefix::Restricted
        );
        assert_eq!(private.check_read(&[pubkey(2), pubkey(1)]), Ok(()));
        assert_eq!(
            private
                .check_write(&event(1, 1), HOME, &[])
                .unwrap_err()
                .prefix,
            Prefix::AuthRequired
        );
        assert_eq!(
            private.check_write(&event(1, 1), HOME, &[pubkey(1)]),
            Ok(())
        );
        let anyone_authed = rules(&["--members-only", "write"]);
        assert_eq!(
            anyone_authed.check_write(&event(5, 1), HOME, &[pubkey(9)]),
            Ok(())
        );
        assert_eq!(anyone_authed.check_read(&[]), Ok(()));
        assert!(private.requires_auth());
    }

    #[test]
    fn stored_entries_join_the_configuration_and_new_bans_are_removals() {
        use crate::store::policy::{PolicyEntry, PolicyList};
        let config = Config::from_args(&["--banned-pubkeys", &hex::encode(&pubkey(1))]);
        let entry = |list, value: String| PolicyEntry {
            list,
            value,
            note: String::new(),
        };
        let stored = StoredPolicy {
            version: 3,
            entries: vec![
                entry(PolicyList::BannedPubkey, hex::encode(&pubkey(2))),
                entry(PolicyList::BannedKind, "7".into()),
                entry(PolicyList::BlockedIp, "203.0.113.0/24".into()),
                entry(PolicyList::BannedEvent, event(4, 1).id_hex()),
                entry(PolicyList::BannedPubkey, "not hex".into()),
            ],
            settings: vec![("name".into(), "Renamed".into())],
        };
        let first = Rules::from_config(&config);
        let rules = Rules::new(&config, &stored);
        assert_eq!(
            (rules.version(), rules.setting("name")),
            (3, Some("Renamed"))
        );
        for (banned, why) in [
            (event(1, 1), "configured pubkey"),
            (event(2, 1), "stored pubkey"),
            (event(3, 7), "stored kind"),
            (event(4, 1), "stored event"),
        ] {
            assert_eq!(
                rules.check_event(&banned).unwrap_err().prefix,
                Prefix::Blocked,
                "{why}"
            );
        }
        let blocked = "203.0.113.9".parse().unwrap();
        assert!(rules.check_write(&event(3, 1), blocked, &[]).is_err());
        assert_eq!(rules.check_write(&event(3, 1), HOME, &[]), Ok(()));

        assert!(
            rules.removals_since(&first).is_empty(),
            "the first load removes nothing"
        );
        let mut more = stored.clone();
        more.version = 4;
        more.entries
            .push(entry(PolicyList::BannedPubkey, hex::encode(&pubkey(5))));
        let removals = Rules::new(&config, &more).removals_since(&rules);
        assert_eq!(removals, vec![Removal::Author(pubkey(5))]);
    }
}
