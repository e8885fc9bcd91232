//! The operator's rules as the store keeps them: list entries (banned pubkeys, allowed
//! kinds, blocked addresses…), relay settings (the NIP-11 fields an admin may change) and an
//! audit log of every change, shared by every node of a cluster through the database.
//!
//! Architecture invariant: a change and its audit record are written in one transaction,
//! and the audit record's sequence number is the policy's new version. A node that knows
//! version `v` and reads a larger one reloads everything; nothing else is needed to agree.

use super::{BoxFuture, StoreError};

/// The lists the rules keep. Each entry of a list is a value (a hex pubkey or event id, a
/// kind, an address or CIDR) with an optional note saying why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyList {
    /// Pubkeys that may write (with any, only they may).
    AllowedPubkey,
    /// Pubkeys that may not write.
    BannedPubkey,
    /// Kinds accepted (with any, only they are).
    AllowedKind,
    /// Kinds refused.
    BannedKind,
    /// Client addresses or CIDRs that may not write.
    BlockedIp,
    /// Event ids removed and refused.
    BannedEvent,
    /// Event ids a moderator looked at and kept (out of the moderation queue).
    AllowedEvent,
    /// NIP-86 roles: the value is the role id, the note its JSON `[label, description,
    /// color, order]`.
    Role,
    /// NIP-86 role assignments: the value is `<hex pubkey> <role id>`.
    RoleMember,
}

impl PolicyList {
    /// Every list, in a fixed order.
    pub const ALL: [PolicyList; 9] = [
        Self::AllowedPubkey,
        Self::BannedPubkey,
        Self::AllowedKind,
        Self::BannedKind,
        Self::BlockedIp,
        Self::BannedEvent,
        Self::AllowedEvent,
        Self::Role,
        Self::RoleMember,
    ];

    /// The list's name in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllowedPubkey => "allowed_pubkey",
            Self::BannedPubkey => "banned_pubkey",
            Self::AllowedKind => "allowed_kind",
            Self::BannedKind => "banned_kind",
            Self::BlockedIp => "blocked_ip",
            Self::BannedEvent => "banned_event",
            Self::AllowedEvent => "allowed_event",
            Self::Role => "role",
            Self::RoleMember => "role_member",
        }
    }

    /// The list a database name names.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|list| list.as_str() == name)
    }
}

/// One entry of one list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEntry {
    /// Which list.
    pub list: PolicyList,
    /// The value, in its canonical text form.
    pub value: String,
    /// Why it is there (may be empty).
    pub note: String,
}

/// One change to the stored rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyEdit {
    /// Adds an entry, or replaces its note.
    Put(PolicyEntry),
    /// Removes an entry if it is there.
    Remove(PolicyList, String),
    /// Sets a relay setting (`name`, `description`, `icon`…).
    Set(String, String),
}

/// Who changed the rules, when and how: one line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Its place in the log, which is also the policy version it made (0 before writing).
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// The admin's hex pubkey (or `config` / `cli` for changes made outside the API).
    pub actor: String,
    /// The management method called.
    pub method: String,
    /// Its parameters, as JSON.
    pub params: String,
}

/// Everything the store holds of the rules, at one version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredPolicy {
    /// The sequence number of the last change (0: never changed).
    pub version: u64,
    /// Every entry of every list.
    pub entries: Vec<PolicyEntry>,
    /// Relay settings, by name.
    pub settings: Vec<(String, String)>,
}

/// Stored events removed by a moderator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Every event of this author.
    Author([u8; 32]),
    /// The event with this id.
    Event([u8; 32]),
}

/// Where the rules live: the same database as the events.
pub trait PolicyStore: Send + Sync + 'static {
    /// The rules as stored now.
    fn load_policy(&self) -> BoxFuture<'_, Result<StoredPolicy, StoreError>>;

    /// The version of the stored rules (the last audit record's sequence number).
    fn policy_version(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Applies `edits` and appends `audit` in one transaction; returns the new version.
    fn change_policy(
        &self,
        edits: Vec<PolicyEdit>,
        audit: AuditRecord,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// The last `limit` audit records, newest first.
    fn audit_log(&self, limit: usize) -> BoxFuture<'_, Result<Vec<AuditRecord>, StoreError>>;

    /// Deletes stored events as `removal` says; returns how many.
    fn remove_events(&self, removal: Removal) -> BoxFuture<'_, Result<u64, StoreError>>;
}
