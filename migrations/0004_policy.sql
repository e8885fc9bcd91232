-- The operator's rules, changed at run time through the NIP-86 management API and shared by
-- every node: list entries (banned and allowed pubkeys, kinds, blocked addresses, banned
-- events, roles), relay settings (NIP-11 fields an admin changed) and the audit log of every
-- change. A change and its audit row are one transaction, serialised by a lock on the audit
-- table, so that audit sequence numbers are handed out in commit order and the largest one
-- is the rules' version: a node that sees a new version reloads.

CREATE TABLE policy_entries (
    list TEXT NOT NULL,
    value TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (list, value)
);

CREATE TABLE relay_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE policy_audit (
    seq BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    method TEXT NOT NULL,
    params TEXT NOT NULL
);
