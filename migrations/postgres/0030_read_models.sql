-- Read models: projections of the event log, rebuildable from it at any time
-- (docs/projections.md). Generated from crates/ledgerdesk-projections
-- (schema::migration_sql); a unit test keeps the two identical.
-- Timestamps are microseconds since the Unix epoch (UTC), ids are UUID text.
-- Replaces the tables of 0003_read_models.sql (added: tickets.data_subject
-- for erasure, the audit_log (actor_id, action, position) index). Checkpoints
-- start again at 0, so the projection workers rebuild every table from the log.

DROP TABLE IF EXISTS report_facts;
DROP TABLE IF EXISTS report_tickets;
DROP TABLE IF EXISTS presence_daily;
DROP TABLE IF EXISTS presence_viewing;
DROP TABLE IF EXISTS presence_agents;
DROP TABLE IF EXISTS audit_actors;
DROP TABLE IF EXISTS audit_log;
DROP TABLE IF EXISTS ticket_tags;
DROP TABLE IF EXISTS tickets;
DROP TABLE IF EXISTS projection_checkpoints;

CREATE TABLE projection_checkpoints (
    name       TEXT PRIMARY KEY,   -- the projection
    position   BIGINT NOT NULL,     -- last log position applied
    event_time BIGINT,              -- recorded_at (µs) of the event at `position`
    updated_at BIGINT NOT NULL      -- when the checkpoint last moved (µs)
);

CREATE TABLE tickets (
    id                TEXT PRIMARY KEY,
    subject           TEXT,                 -- personal (pii)
    status            TEXT NOT NULL,
    priority          TEXT NOT NULL,
    channel           TEXT NOT NULL,
    requester_name    TEXT,                 -- personal (pii)
    requester_email   TEXT,                 -- personal (pii)
    data_subject      TEXT,                 -- whose personal data the row holds (erasure)
    assignee          TEXT,
    department        TEXT,
    tags              TEXT NOT NULL,        -- JSON array, sorted
    message_count     BIGINT NOT NULL,
    rating            BIGINT,
    created_at        BIGINT NOT NULL,       -- µs, recorded_at of ticket.created
    updated_at        BIGINT NOT NULL,       -- µs, recorded_at of the last event
    first_response_at BIGINT,                -- first outbound public message
    resolved_at       BIGINT,                -- last change to resolved (cleared on reopen)
    merged_into       TEXT,
    split_from        TEXT,
    version           BIGINT NOT NULL,       -- stream version applied
    position          BIGINT NOT NULL        -- log position applied
);
CREATE INDEX tickets_updated ON tickets (updated_at, id);
CREATE INDEX tickets_status ON tickets (status, updated_at);
CREATE INDEX tickets_assignee ON tickets (assignee, updated_at);
CREATE INDEX tickets_department ON tickets (department, updated_at);
CREATE INDEX tickets_data_subject ON tickets (data_subject);

CREATE TABLE ticket_tags (
    tag       TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    PRIMARY KEY (tag, ticket_id)
);
CREATE INDEX ticket_tags_ticket ON ticket_tags (ticket_id);

CREATE TABLE audit_log (
    position         BIGINT PRIMARY KEY,   -- the event's log position
    event_id         TEXT NOT NULL,
    recorded_at      BIGINT NOT NULL,      -- µs
    actor_id         TEXT,
    actor_name       TEXT,
    actor_kind       TEXT NOT NULL,       -- agent, customer or system
    actor_department TEXT,                -- the actor's department when it acted
    action           TEXT NOT NULL,       -- catalogue code
    label            TEXT NOT NULL,
    ticket_id        TEXT,
    description      TEXT NOT NULL,
    changes          TEXT NOT NULL,       -- JSON [{field, before, after}]
    ip               TEXT,
    user_agent       TEXT,
    correlation_id   TEXT,
    event_type       TEXT NOT NULL,
    stream_id        TEXT NOT NULL
);
CREATE INDEX audit_log_action ON audit_log (action, position);
CREATE INDEX audit_log_actor ON audit_log (actor_id, position);
CREATE INDEX audit_log_actor_action ON audit_log (actor_id, action, position);
CREATE INDEX audit_log_department ON audit_log (actor_department, position);
CREATE INDEX audit_log_ticket ON audit_log (ticket_id, position);
CREATE INDEX audit_log_time ON audit_log (recorded_at);

CREATE TABLE audit_actors (
    id         TEXT PRIMARY KEY,
    name       TEXT,
    department TEXT
);

CREATE TABLE presence_agents (
    user_id     TEXT PRIMARY KEY,
    name        TEXT,
    state       TEXT NOT NULL,        -- available, away or offline
    logged_in   BOOLEAN NOT NULL,
    state_since BIGINT,                -- µs
    login_since BIGINT,                -- µs, while logged in
    updated_at  BIGINT NOT NULL
);
CREATE INDEX presence_agents_state ON presence_agents (state);

CREATE TABLE presence_viewing (
    user_id   TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    since     BIGINT NOT NULL,
    PRIMARY KEY (user_id, ticket_id)
);
CREATE INDEX presence_viewing_ticket ON presence_viewing (ticket_id);

CREATE TABLE presence_daily (
    user_id      TEXT NOT NULL,
    day          TEXT NOT NULL,       -- YYYY-MM-DD, UTC
    available_us BIGINT NOT NULL,
    away_us      BIGINT NOT NULL,
    logged_in_us BIGINT NOT NULL,
    PRIMARY KEY (user_id, day)
);

CREATE TABLE report_tickets (
    ticket_id         TEXT PRIMARY KEY,
    created_at        BIGINT NOT NULL,    -- µs
    department        TEXT,
    assignee          TEXT,
    first_response_at BIGINT
);

CREATE TABLE report_facts (
    position   BIGINT NOT NULL,           -- the event
    kind       TEXT NOT NULL,            -- created, replied, first_response, resolved, rated
    at         BIGINT NOT NULL,           -- µs
    ticket_id  TEXT NOT NULL,
    agent      TEXT,
    department TEXT,
    seconds    DOUBLE PRECISION,                   -- first_response, resolved: since creation
    rating     BIGINT,                    -- rated: 1 to 5
    PRIMARY KEY (position, kind)
);
CREATE INDEX report_facts_kind_at ON report_facts (kind, at);
