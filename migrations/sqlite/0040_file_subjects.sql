-- Whose tickets each uploaded file is attached to, so that erasing a data
-- subject destroys the files no other subject's ticket still holds
-- (docs/privacy.md). `erased_at` is set on a link when its subject is
-- erased, and on a file when its bytes were destroyed (downloads: 410).
CREATE TABLE api_file_subjects (
    sha256     TEXT   NOT NULL,
    subject_id TEXT   NOT NULL,
    erased_at  BIGINT,
    PRIMARY KEY (sha256, subject_id)
);
ALTER TABLE api_files ADD COLUMN erased_at BIGINT;

-- Files attached before this table existed, read from the log.
INSERT INTO api_file_subjects (sha256, subject_id)
SELECT DISTINCT json_extract(payload, '$.sha256'), json_extract(payload, '$.pii.subject')
FROM events
WHERE event_type = 'ticket.file_attached'
  AND json_extract(payload, '$.sha256') IS NOT NULL
  AND json_extract(payload, '$.pii.subject') IS NOT NULL;
-- Subjects erased before: their links count as erased; a repeated erasure
-- request then destroys the bytes.
UPDATE api_file_subjects
SET erased_at = (SELECT k.erased_at FROM subject_keys k
                 WHERE k.subject_id = api_file_subjects.subject_id AND k.key IS NULL)
WHERE subject_id IN (SELECT subject_id FROM subject_keys WHERE key IS NULL);
