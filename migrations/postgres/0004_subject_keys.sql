-- One encryption key per data subject, outside the immutable log.
-- Erasing a subject sets key to NULL: every copy of their personal data in
-- the log (sealed with this key) becomes unreadable, while the log, its hash
-- chain and its checkpoints stay exactly as they were (crypto-shredding).
CREATE TABLE subject_keys (
    subject_id TEXT PRIMARY KEY,
    key        TEXT,            -- base64 of 32 random bytes; NULL once erased
    created_at BIGINT NOT NULL, -- microseconds since the Unix epoch
    erased_at  BIGINT           -- set when the key was destroyed
);
