-- A tag row carries its event's id, and the tag index orders a value's rows as every
-- query does: newest first, ties by lowest id (NIP-01). A probe of one value then reads
-- its first rows from the index and stops at the limit. Before, the index ended at
-- created_at, and PostgreSQL's plan sorted every row of the value to break ties by the
-- events' ids: a page of a value that thousands of events carry (a popular #p or #t) cost
-- as much as all of them.
--
-- The table is copied rather than updated in place, so that an existing relay's tag rows
-- are written once and leave no dead copy behind (expect about a minute per ten million
-- tag rows, during which writes wait).

CREATE TABLE event_tags_ordered (
    event_seq  BIGINT  NOT NULL,
    event_id   BYTEA   NOT NULL,
    name       TEXT    COLLATE "C" NOT NULL,
    value      TEXT    COLLATE "C" NOT NULL,
    created_at BIGINT  NOT NULL,
    kind       INTEGER NOT NULL
);
INSERT INTO event_tags_ordered (event_seq, event_id, name, value, created_at, kind)
SELECT t.event_seq, e.id, t.name, t.value, t.created_at, t.kind
FROM event_tags t JOIN events e ON e.seq = t.event_seq;
DROP TABLE event_tags;
ALTER TABLE event_tags_ordered RENAME TO event_tags;
CREATE INDEX event_tags_by_value ON event_tags (name, value, created_at DESC, event_id)
    INCLUDE (event_seq, kind);
CREATE INDEX event_tags_by_event ON event_tags (event_seq);

-- As in 0003, with the tag rows' event id.
CREATE OR REPLACE FUNCTION starling_write_event(
    p_id BYTEA, p_pubkey BYTEA, p_created_at BIGINT, p_kind INTEGER, p_d_tag TEXT,
    p_expires_at BIGINT, p_lexemes TSVECTOR, p_json TEXT,
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
    IF EXISTS (SELECT 1 FROM vanished WHERE pubkey = p_pubkey AND until >= p_created_at) THEN
        RETURN 4;
    END IF;
    IF p_kind = 1059 AND EXISTS (
        SELECT 1 FROM vanished v, unnest(p_tag_names, p_tag_values) AS t (name, value)
        WHERE t.name = 'p' AND v.until >= p_created_at AND encode(v.pubkey, 'hex') = t.value
    ) THEN
        RETURN 4;
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
            p_lexemes, p_json)
    RETURNING seq INTO v_seq;
    INSERT INTO event_tags (event_seq, event_id, name, value, kind, created_at)
    SELECT DISTINCT v_seq, p_id, t.name, t.value, p_kind, p_created_at
    FROM unnest(p_tag_names, p_tag_values) AS t (name, value);

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
    IF p_kind = 62 THEN
        DELETE FROM events WHERE pubkey = p_pubkey AND created_at <= p_created_at AND id <> p_id;
        DELETE FROM events e
        WHERE e.kind = 1059 AND e.created_at <= p_created_at
          AND EXISTS (SELECT 1 FROM event_tags t
                      WHERE t.event_seq = e.seq AND t.name = 'p' AND t.value = encode(p_pubkey, 'hex'));
        INSERT INTO vanished (pubkey, until) VALUES (p_pubkey, p_created_at)
        ON CONFLICT (pubkey) DO UPDATE SET until = GREATEST(vanished.until, EXCLUDED.until);
    END IF;
    RETURN 0;
END;
$$;
