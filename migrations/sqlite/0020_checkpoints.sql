-- Verifiable history (docs/verifiable-history.md).
--
-- The Merkle tree over the log, kept incrementally so roots and proofs read
-- a few hashes instead of re-hashing events: level 0 holds the leaf hash of
-- the event at position idx + 1; level L > 0 holds the root of the complete
-- subtree of leaves [idx·2^L, (idx+1)·2^L). Rows are derived data, inserted
-- by `merkle::sync_leaves` and never changed.
CREATE TABLE merkle_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  TEXT    NOT NULL,                       -- hex SHA-256
    PRIMARY KEY (level, idx)
);

-- Signed tree heads: Ed25519 over
-- "ledgerdesk-checkpoint-v1\n<tree_size>\n<root hex>\n<signed_at RFC 3339 µs>\n".
CREATE TABLE checkpoints (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    tree_size  INTEGER NOT NULL,                  -- events covered: positions 1 ..= tree_size
    root_hash  TEXT    NOT NULL,                  -- hex Merkle root of those events
    signed_at  INTEGER NOT NULL,                  -- microseconds since the Unix epoch, UTC
    key_id     TEXT    NOT NULL,                  -- hex of the first 8 bytes of SHA-256(public key)
    signature  TEXT    NOT NULL                   -- base64 Ed25519 signature
);

CREATE INDEX checkpoints_tree_size ON checkpoints (tree_size);
CREATE INDEX checkpoints_signed_at ON checkpoints (signed_at);

-- Both tables are append-only, like events.
CREATE TRIGGER checkpoints_reject_update BEFORE UPDATE ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'ledgerdesk: checkpoints are append-only (UPDATE refused)');
END;

CREATE TRIGGER checkpoints_reject_delete BEFORE DELETE ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'ledgerdesk: checkpoints are append-only (DELETE refused)');
END;

CREATE TRIGGER merkle_nodes_reject_update BEFORE UPDATE ON merkle_nodes
BEGIN
    SELECT RAISE(ABORT, 'ledgerdesk: merkle_nodes are append-only (UPDATE refused)');
END;

CREATE TRIGGER merkle_nodes_reject_delete BEFORE DELETE ON merkle_nodes
BEGIN
    SELECT RAISE(ABORT, 'ledgerdesk: merkle_nodes are append-only (DELETE refused)');
END;
