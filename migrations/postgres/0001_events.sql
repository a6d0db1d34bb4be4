-- The event log: the system of record. Rows are only ever inserted, by the
-- single writer under an advisory lock, which assigns positions and hashes
-- itself (docs/event-store.md).
CREATE TABLE events (
    position       BIGINT  PRIMARY KEY,           -- global, 1, 2, 3 … in commit order, gap-free
    stream_id      TEXT    NOT NULL,              -- e.g. ticket-<uuid>
    stream_type    TEXT    NOT NULL,              -- e.g. ticket
    version        BIGINT  NOT NULL,              -- 1, 2, 3 … within the stream
    event_id       TEXT    NOT NULL UNIQUE,       -- UUID v7
    event_type     TEXT    NOT NULL,              -- e.g. ticket.created
    schema_version INTEGER NOT NULL,
    payload        TEXT    NOT NULL,              -- JSON text, exactly as hashed (not jsonb: jsonb rewrites it)
    metadata       TEXT    NOT NULL,              -- JSON text: actor, ip, user agent, correlation, causation
    recorded_at    BIGINT  NOT NULL,              -- microseconds since the Unix epoch, UTC
    hash           TEXT    NOT NULL,              -- hex SHA-256(previous hash ‖ canonical event)
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);

CREATE INDEX events_recorded_at ON events (recorded_at);

-- History is immutable even for a buggy query or a manual session.
CREATE FUNCTION ledgerdesk_reject_event_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledgerdesk: events are immutable (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_reject_change BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION ledgerdesk_reject_event_change();

CREATE TRIGGER events_reject_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION ledgerdesk_reject_event_change();
