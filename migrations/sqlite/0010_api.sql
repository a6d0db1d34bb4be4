-- The HTTP API's own tables, outside the event log: credentials and
-- sessions (secrets never enter the immutable log), the users and
-- departments lists kept in step with the commands made through the API,
-- idempotency records and the index of uploaded files.
-- Times are seconds since the Unix epoch, UTC; ids are UUID text.

-- Users as the API last wrote them (the user stream is the truth; this row
-- is refreshed from it after every user command). One row is the system
-- account that records login refusals for unknown emails (system = TRUE).
CREATE TABLE api_users (
    user_id       TEXT    PRIMARY KEY,
    email         TEXT    NOT NULL UNIQUE,        -- normalised: trimmed, lowercased
    name          TEXT    NOT NULL,
    role          TEXT    NOT NULL,               -- agent | admin | auditor
    department_id TEXT,
    active        BOOLEAN NOT NULL,
    system        BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    INTEGER NOT NULL
);

-- Argon2id PHC strings; never in the log.
CREATE TABLE api_credentials (
    user_id       TEXT    PRIMARY KEY REFERENCES api_users (user_id),
    password_hash TEXT    NOT NULL,
    updated_at    INTEGER NOT NULL
);

-- Bearer tokens, stored only as SHA-256 hex of the token.
CREATE TABLE api_sessions (
    token_hash TEXT    PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES api_users (user_id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX api_sessions_user ON api_sessions (user_id);

CREATE TABLE api_departments (
    department_id TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    active        BOOLEAN NOT NULL,
    created_at    INTEGER NOT NULL
);

-- One row per (user, Idempotency-Key): status NULL while the first request
-- runs, then its response. Kept at least 24 hours.
CREATE TABLE api_idempotency (
    user_id      TEXT    NOT NULL,
    idem_key     TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,               -- SHA-256 of method, path and body
    status       INTEGER,
    headers      TEXT,                           -- JSON object of replayed headers
    body         TEXT,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (user_id, idem_key)
);
CREATE INDEX api_idempotency_created ON api_idempotency (created_at);

-- Uploaded files, content-addressed: the bytes are under files.dir.
CREATE TABLE api_files (
    sha256       TEXT    PRIMARY KEY,
    size         INTEGER NOT NULL,
    content_type TEXT    NOT NULL,
    created_at   INTEGER NOT NULL
);
