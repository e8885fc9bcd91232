//! The operator's rules on who may write and read: allow and deny lists of pubkeys, kinds
//! and client addresses, a members-only mode (a private relay: writing, reading or both
//! need a NIP-42 authenticated member), and the paid-relay shape (only allowed pubkeys may
//! write). Read from the configuration at start-up.
//!
//! Members are the allowed pubkeys; with no allow list, any authenticated pubkey. A request
//! to vanish (NIP-62) is accepted whatever the rules say, as NIP-62 requires.

use std::{collections::HashSet, net::IpAddr};

use crate::{
    config::{Config, MembersOnly},
    nostr::{Event, Prefix, Reason, hex, kind::VANISH},
    proxy::CidrSet,
};

/// The rules, ready to check.
#[derive(Debug, Clone)]
pub struct Rules {
    allowed_pubkeys: HashSet<[u8; 32]>,
    banned_pubkeys: HashSet<[u8; 32]>,
    allowed_kinds: HashSet<u16>,
    banned_kinds: HashSet<u16>,
    blocked_addresses: CidrSet,
    members_only: MembersOnly,
}

impl Rules {
    /// The rules `config` sets (its pubkeys were checked when it was read).
    pub fn from_config(config: &Config) -> Self {
        let keys = |list: &[String]| list.iter().filter_map(|k| hex::decode::<32>(k)).collect();
        Self {
            allowed_pubkeys: keys(&config.allowed_pubkeys),
            banned_pubkeys: keys(&config.banned_pubkeys),
            allowed_kinds: config.allowed_kinds.iter().copied().collect(),
            banned_kinds: config.banned_kinds.iter().copied().collect(),
            blocked_addresses: CidrSet::new(config.blocked_ips.clone()),
            members_only: config.members_only,
        }
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
        if matches!(self.members_only, MembersOnly::Write | MembersOnly::Both) {
            self.member_required(authed)?;
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
}
