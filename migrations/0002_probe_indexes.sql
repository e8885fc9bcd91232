-- Indexes shaped for index-ordered probes (`store::postgres::sql`): a filter naming a few
-- authors and kinds, a few kinds, or a few values of one tag is answered by reading one
-- newest-first run of an index per (author, kind), kind or value and stopping at the limit, instead of
-- gathering every match and sorting it.

-- Ties on created_at are broken by id (NIP-01), so the id completes each index's order. The
-- store reads only (created_at, id) of the matches, and takes the JSON from its cache when it
-- can (`json_cache.rs`): with expires_at included, such a probe never reads the table.
DROP INDEX events_by_author;
CREATE INDEX events_by_author ON events (pubkey, kind, created_at DESC, id) INCLUDE (expires_at);
DROP INDEX events_by_kind;
CREATE INDEX events_by_kind ON events (kind, created_at DESC, id) INCLUDE (expires_at);

-- Every query reads the stored JSON back, and most events are compressed (a row over 2 kB
-- is): lz4 decompresses several times faster than the default pglz. Servers built without
-- lz4 keep pglz. Rows written before this keep their compression until rewritten.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings
               WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE events ALTER COLUMN json SET COMPRESSION lz4;
        ALTER TABLE events ALTER COLUMN content_fts SET COMPRESSION lz4;
    END IF;
END;
$$;

-- A tag row carries its event's kind, so that `#t` + `kinds` is decided in the tag index.
ALTER TABLE event_tags ADD COLUMN kind INTEGER;
UPDATE event_tags t SET kind = e.kind FROM events e WHERE e.seq = t.event_seq;
ALTER TABLE event_tags ALTER COLUMN kind SET NOT NULL;

-- Tag rows go with their event. A trigger rather than the foreign key: the key checked and
-- locked the event row for every tag row written, a sixth of the cost of storing an event.
ALTER TABLE event_tags DROP CONSTRAINT event_tags_event_seq_fkey;
CREATE FUNCTION starling_delete_tags() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM event_tags WHERE event_seq IN (SELECT seq FROM gone);
    RETURN NULL;
END;
$$;
CREATE TRIGGER events_delete_tags AFTER DELETE ON events
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION starling_delete_tags();

-- Tag values and d tags match byte for byte: the "C" collation compares them with memcmp,
-- whatever the database's locale, which makes every index insert and lookup cheaper.
DROP INDEX event_tags_by_value;
ALTER TABLE event_tags ALTER COLUMN name TYPE TEXT COLLATE "C",
                       ALTER COLUMN value TYPE TEXT COLLATE "C";
ALTER TABLE events ALTER COLUMN d_tag TYPE TEXT COLLATE "C";

-- Probes read event_seq from the index itself (index-only scans).
-- One index serves tag filters with and without kinds: the kind is checked in the index as
-- it is walked newest first. (A second index led by kind cost a third of every tag write.)
CREATE INDEX event_tags_by_value ON event_tags (name, value, created_at DESC) INCLUDE (event_seq, kind);

-- As in 0001, but tag rows now record the kind, each (name, value) once per event, and the
-- full-text lexemes come ready-made from the relay (`sql::tsvector`), which cuts content
-- into words as live NIP-50 matching does, at a fraction of `to_tsvector`'s cost.
DROP FUNCTION starling_write_event(BYTEA, BYTEA, BIGINT, INTEGER, TEXT, BIGINT, TEXT, TEXT,
                                   TEXT[], TEXT[], BYTEA[], INTEGER[], TEXT[]);
CREATE FUNCTION starling_write_event(
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
    INSERT INTO event_tags (event_seq, name, value, kind, created_at)
    SELECT DISTINCT v_seq, t.name, t.value, p_kind, p_created_at
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
    RETURN 0;
END;
$$;
