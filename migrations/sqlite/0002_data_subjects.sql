-- Data subjects: the owner of personal data in the log (a ticket's requester).
-- Events carry only the subject's random id; the email that identifies the
-- subject lives here, outside the immutable log, so it can be erased on
-- request without touching the hash chain.
CREATE TABLE data_subjects (
    subject_id TEXT    PRIMARY KEY,           -- UUID v7, random: reveals nothing about the person
    email      TEXT    NOT NULL UNIQUE,       -- normalised: trimmed, lowercased
    created_at INTEGER NOT NULL               -- microseconds since the Unix epoch, UTC
);
