//! The embedded store's schema, as numbered versions applied in order.

use rusqlite::{Connection, TransactionBehavior};

/// File name of the database inside the data directory.
pub const FILE_NAME: &str = "starling.sqlite3";

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
const SCHEMA: &[&str] = &[
    r#"
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY,
    id         BLOB    NOT NULL UNIQUE,
    pubkey     BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    kind       INTEGER NOT NULL,
    d_tag      TEXT,
    expires_at INTEGER,
    json       TEXT    NOT NULL
);
CREATE INDEX events_by_time    ON events (created_at DESC, id);
CREATE INDEX events_by_author  ON events (pubkey, kind, created_at DESC);
CREATE INDEX events_by_kind    ON events (kind, created_at DESC);
CREATE INDEX events_by_address ON events (pubkey, kind, d_tag) WHERE d_tag IS NOT NULL;
CREATE INDEX events_by_expiry  ON events (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE tags (
    event_seq  INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX tags_by_value ON tags (name, value, created_at DESC);
CREATE INDEX tags_by_event ON tags (event_seq);

CREATE TABLE deleted_ids (
    event_id BLOB NOT NULL,
    pubkey   BLOB NOT NULL,
    PRIMARY KEY (event_id, pubkey)
) WITHOUT ROWID;

CREATE TABLE deleted_addresses (
    kind    INTEGER NOT NULL,
    pubkey  BLOB    NOT NULL,
    d_tag   TEXT    NOT NULL,
    until   INTEGER NOT NULL,
    PRIMARY KEY (kind, pubkey, d_tag)
) WITHOUT ROWID;
"#,
    r#"
CREATE VIRTUAL TABLE events_fts USING fts5 (content, content = '', contentless_delete = 1);
"#,
    // NIP-62: authors who asked to vanish, and until when their events (and gift wraps to
    // them) are refused.
    r#"
CREATE TABLE vanished (
    pubkey BLOB PRIMARY KEY,
    until  INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // The operator's rules, changed through the management API, and their audit log (as in
    // migrations/0004_policy.sql; the single writer serialises changes).
    r#"
CREATE TABLE policy_entries (
    list  TEXT NOT NULL,
    value TEXT NOT NULL,
    note  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (list, value)
) WITHOUT ROWID;
CREATE TABLE relay_settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE policy_audit (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    method TEXT    NOT NULL,
    params TEXT    NOT NULL
);
"#,
    // Every index a page is read from holds the page's whole order, created_at then id
    // (ties by lowest id, NIP-01), so SQLite reads a page in index order and stops at its
    // limit: before, it copied each page's rows, JSON and all, into a temporary B-tree to
    // break ties by id. The tag table becomes its own index, clustered in that order and
    // carrying each event's id and kind (as PostgreSQL's does since 0002 and 0005), so a
    // tag scan reads one B-tree and checks `kinds` there, looking up only the events that
    // match (the table is copied once).
    r#"
DROP INDEX events_by_author;
CREATE INDEX events_by_author ON events (pubkey, kind, created_at DESC, id);
DROP INDEX events_by_kind;
CREATE INDEX events_by_kind ON events (kind, created_at DESC, id);
CREATE TABLE tags_ordered (
    name       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    event_id   BLOB    NOT NULL,
    event_seq  INTEGER NOT NULL,
    kind       INTEGER NOT NULL,
    PRIMARY KEY (name, value, created_at DESC, event_id)
) WITHOUT ROWID;
INSERT OR IGNORE INTO tags_ordered (name, value, created_at, event_id, event_seq, kind)
SELECT t.name, t.value, t.created_at, e.id, t.event_seq, e.kind
FROM tags t JOIN events e ON e.seq = t.event_seq;
DROP TABLE tags;
ALTER TABLE tags_ordered RENAME TO tags;
CREATE INDEX tags_by_event ON tags (event_seq);
"#,
];

/// Brings the schema of the database behind `conn` up to date.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let done: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (version, sql) in (1_i64..).zip(SCHEMA).skip(done.max(0) as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(())
}
