-- Insert-if-absent: of two concurrent first tickets from one email, one row wins.
INSERT INTO data_subjects (subject_id, email, created_at)
VALUES ($1, $2, $3)
ON CONFLICT (email) DO NOTHING
