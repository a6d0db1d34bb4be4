-- Verifiable history (docs/verifiable-history.md).
--
-- The Merkle tree over the log, kept incrementally so roots and proofs read
-- a few hashes instead of re-hashing events: level 0 holds the leaf hash of
-- the event at position idx + 1; level L > 0 holds the root of the complete
-- subtree of leaves [idx·2^L, (idx+1)·2^L). Rows are derived data, inserted
-- by `merkle::sync_leaves` and never changed.
CREATE TABLE merkle_nodes (
    level BIGINT NOT NULL,
    idx   BIGINT NOT NULL,
    hash  TEXT   NOT NULL,                        -- hex SHA-256
    PRIMARY KEY (level, idx)
);

-- Signed tree heads: Ed25519 over
-- "ledgerdesk-checkpoint-v1\n<tree_size>\n<root hex>\n<signed_at RFC 3339 µs>\n".
CREATE TABLE checkpoints (
    seq        BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tree_size  BIGINT  NOT NULL,                  -- events covered: positions 1 ..= tree_size
    root_hash  TEXT    NOT NULL,                  -- hex Merkle root of those events
    signed_at  BIGINT  NOT NULL,                  -- microseconds since the Unix epoch, UTC
    key_id     TEXT    NOT NULL,                  -- hex of the first 8 bytes of SHA-256(public key)
    signature  TEXT    NOT NULL                   -- base64 Ed25519 signature
);

CREATE INDEX checkpoints_tree_size ON checkpoints (tree_size);
CREATE INDEX checkpoints_signed_at ON checkpoints (signed_at);

-- Both tables are append-only, like events.
CREATE FUNCTION ledgerdesk_reject_audit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledgerdesk: % is append-only (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER checkpoints_reject_change BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION ledgerdesk_reject_audit_change();

CREATE TRIGGER checkpoints_reject_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledgerdesk_reject_audit_change();

CREATE TRIGGER merkle_nodes_reject_change BEFORE UPDATE OR DELETE ON merkle_nodes
    FOR EACH ROW EXECUTE FUNCTION ledgerdesk_reject_audit_change();

CREATE TRIGGER merkle_nodes_reject_truncate BEFORE TRUNCATE ON merkle_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION ledgerdesk_reject_audit_change();
