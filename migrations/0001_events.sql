-- Starling's event storage. Applied by `starling migrate` (and by `starling serve` at start).

-- Every stored event. `json` is the canonical serialization, sent to clients as is.
CREATE TABLE events (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- insertion order
    id          BYTEA    NOT NULL,
    pubkey      BYTEA    NOT NULL,
    created_at  BIGINT   NOT NULL,
    kind        INTEGER  NOT NULL,
    d_tag       TEXT,             -- '' for replaceable kinds, the d tag for addressable ones
    expires_at  BIGINT,           -- NIP-40
    content_fts TSVECTOR,         -- NIP-50, content of the event
    json        TEXT     NOT NULL
);

CREATE UNIQUE INDEX events_by_id ON events (id);
CREATE INDEX events_by_time ON events (created_at DESC, id);
CREATE INDEX events_by_author ON events (pubkey, kind, created_at DESC);
CREATE INDEX events_by_kind ON events (kind, created_at DESC);
-- At most one version of each replaceable or addressable event, whatever the writers do.
CREATE UNIQUE INDEX events_by_address ON events (pubkey, kind, d_tag) WHERE d_tag IS NOT NULL;
CREATE INDEX events_by_expiry ON events (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX events_by_content ON events USING GIN (content_fts) WHERE content_fts IS NOT NULL;

-- Single-letter tags (first value only), as NIP-01 asks relays to index them.
CREATE TABLE event_tags (
    event_seq  BIGINT NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    name       TEXT   NOT NULL,
    value      TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX event_tags_by_value ON event_tags (name, value, created_at DESC);
CREATE INDEX event_tags_by_event ON event_tags (event_seq);

-- NIP-09 tombstones: deleted events are refused if they are sent again.
CREATE TABLE deleted_ids (
    event_id BYTEA NOT NULL,
    pubkey   BYTEA NOT NULL,
    PRIMARY KEY (event_id, pubkey)
);

CREATE TABLE deleted_addresses (
    kind   INTEGER NOT NULL,
    pubkey BYTEA   NOT NULL,
    d_tag  TEXT    NOT NULL,
    until  BIGINT  NOT NULL,
    PRIMARY KEY (kind, pubkey, d_tag)
);

-- Writes one event, applying NIP-01 and NIP-09 rules. The caller holds transaction-level
-- advisory locks on the event's id, on its address (replaceable and addressable kinds) and
-- on everything a deletion request names, so concurrent writers on any node serialize.
-- Returns 0 stored, 1 duplicate, 2 superseded by a newer version, 3 deleted by its author.
CREATE FUNCTION starling_write_event(
    p_id BYTEA, p_pubkey BYTEA, p_created_at BIGINT, p_kind INTEGER, p_d_tag TEXT,
    p_expires_at BIGINT, p_content TEXT, p_json TEXT,
    p_tag_names TEXT[], p_tag_values TEXT[],
    p_delete_ids BYTEA[], p_delete_kinds INTEGER[], p_delete_d_tags TEXT[]
) RETURNS SMALLINT LANGUAGE plpgsql AS $$
DECLARE
    v_seq BIGINT;
BEGIN
    IF EXISTS (SELECT 1 FROM events WHERE id = p_id) THEN
        RETURN 1;
    END IF;
    IF p_kind <> 5 AND EXISTS (SELECT 1 FROM deleted_ids WHERE event_id = p_id AND pubkey = p_pubkey) THEN
        RETURN 3;
    END IF;
    IF p_d_tag IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM deleted_addresses
                   WHERE kind = p_kind AND pubkey = p_pubkey AND d_tag = p_d_tag AND until >= p_created_at) THEN
            RETURN 3;
        END IF;
        IF EXISTS (SELECT 1 FROM events
                   WHERE pubkey = p_pubkey AND kind = p_kind AND d_tag = p_d_tag
                     AND (created_at > p_created_at OR (created_at = p_created_at AND id < p_id))) THEN
            RETURN 2;
        END IF;
        DELETE FROM events WHERE pubkey = p_pubkey AND kind = p_kind AND d_tag = p_d_tag;
    END IF;

    INSERT INTO events (id, pubkey, created_at, kind, d_tag, expires_at, content_fts, json)
    VALUES (p_id, p_pubkey, p_created_at, p_kind, p_d_tag, p_expires_at,
            CASE WHEN p_content <> '' THEN to_tsvector('simple', p_content) END, p_json)
    RETURNING seq INTO v_seq;
    INSERT INTO event_tags (event_seq, name, value, created_at)
    SELECT v_seq, t.name, t.value, p_created_at FROM unnest(p_tag_names, p_tag_values) AS t (name, value);

    IF p_kind = 5 THEN
        DELETE FROM events WHERE id = ANY (p_delete_ids) AND pubkey = p_pubkey AND kind <> 5;
        INSERT INTO deleted_ids (event_id, pubkey)
        SELECT d, p_pubkey FROM unnest(p_delete_ids) AS d ON CONFLICT DO NOTHING;
        DELETE FROM events e USING unnest(p_delete_kinds, p_delete_d_tags) AS a (kind, d_tag)
        WHERE e.pubkey = p_pubkey AND e.kind = a.kind AND e.d_tag = a.d_tag AND e.created_at <= p_created_at;
        INSERT INTO deleted_addresses (kind, pubkey, d_tag, until)
        SELECT a.kind, p_pubkey, a.d_tag, p_created_at FROM unnest(p_delete_kinds, p_delete_d_tags) AS a (kind, d_tag)
        ON CONFLICT (kind, pubkey, d_tag) DO UPDATE SET until = GREATEST(deleted_addresses.until, EXCLUDED.until);
    END IF;
    RETURN 0;
END;
$$;
