-- Bulk-loads a `starling-bench fill` file into a migrated Starling database, set-based, for
-- the query-plan check (bench/RESULTS.md). It applies no NIP-01 rules: use it only on a file
-- whose events are all distinct, regular or uniquely addressed, as `fill` makes them.
--
--   psql -v file=/tmp/fill.jsonl -f bench/load.sql "$DATABASE_URL"
\set ON_ERROR_STOP on
\timing on
CREATE TEMP TABLE raw (line TEXT);
-- CSV with impossible quote and delimiter characters reads each line verbatim.
\set copy_command '\\copy raw FROM ' :'file' ' WITH (FORMAT csv, QUOTE E''\\x01'', DELIMITER E''\\x02'')'
:copy_command
CREATE TEMP TABLE parsed AS
SELECT line, line::jsonb AS j FROM raw;
INSERT INTO events (id, pubkey, created_at, kind, d_tag, expires_at, content_fts, json)
SELECT decode(j->>'id', 'hex'), decode(j->>'pubkey', 'hex'), (j->>'created_at')::bigint, (j->>'kind')::int,
       CASE
           WHEN (j->>'kind')::int IN (0, 3) OR (j->>'kind')::int BETWEEN 10000 AND 19999 THEN ''
           WHEN (j->>'kind')::int BETWEEN 30000 AND 39999 THEN
               coalesce((SELECT t->>1 FROM jsonb_array_elements(j->'tags') t WHERE t->>0 = 'd' LIMIT 1), '')
       END,
       NULL,
       CASE WHEN j->>'content' <> '' THEN to_tsvector('simple', j->>'content') END,
       line || '' -- a new value, so that it is compressed as the column says (lz4), not copied
FROM parsed
ON CONFLICT DO NOTHING;
INSERT INTO event_tags (event_seq, event_id, name, value, kind, created_at)
SELECT DISTINCT e.seq, e.id, t->>0, t->>1, e.kind, e.created_at
FROM parsed p
JOIN events e ON e.id = decode(p.j->>'id', 'hex')
CROSS JOIN LATERAL jsonb_array_elements(p.j->'tags') t
WHERE length(t->>0) = 1 AND t->>0 ~ '^[a-zA-Z]$' AND jsonb_array_length(t) >= 2
  AND NOT EXISTS (SELECT 1 FROM event_tags x WHERE x.event_seq = e.seq);
ANALYZE;
