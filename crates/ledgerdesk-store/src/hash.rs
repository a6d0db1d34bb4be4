//! The hash chain: each event's hash covers its canonical bytes and the hash
//! of the event before it, so editing, removing, inserting or reordering any
//! stored event changes every hash from that position on.
//!
//! The canonical bytes are also the Merkle leaf content, so both structures
//! speak of exactly the same event.

use sha2::{Digest, Sha256};

/// The hash before the first event: 32 zero bytes.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Borrowed view of the fields that are hashed, in the order they are hashed.
#[derive(Debug, Clone, Copy)]
pub struct HashedFields<'a> {
    /// Global position.
    pub position: u64,
    /// Stream id.
    pub stream_id: &'a str,
    /// Stream type.
    pub stream_type: &'a str,
    /// Version in the stream.
    pub version: u64,
    /// Event id, hyphenated lowercase.
    pub event_id: &'a str,
    /// Event type.
    pub event_type: &'a str,
    /// Payload schema version.
    pub schema_version: u32,
    /// Payload JSON text, as stored.
    pub payload: &'a str,
    /// Metadata JSON text, as stored.
    pub metadata: &'a str,
    /// Recorded time, microseconds since the Unix epoch.
    pub recorded_at_us: i64,
}

impl HashedFields<'_> {
    /// The canonical encoding: a format tag, then every field length-prefixed
    /// (u32 big-endian) so no two different events encode alike.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self.stream_id.len()
                + self.stream_type.len()
                + self.event_id.len()
                + self.event_type.len()
                + self.payload.len()
                + self.metadata.len(),
        );
        put(&mut out, b"ledgerdesk.event.v1");
        put(&mut out, &self.position.to_be_bytes());
        put(&mut out, self.stream_id.as_bytes());
        put(&mut out, self.stream_type.as_bytes());
        put(&mut out, &self.version.to_be_bytes());
        put(&mut out, self.event_id.as_bytes());
        put(&mut out, self.event_type.as_bytes());
        put(&mut out, &self.schema_version.to_be_bytes());
        put(&mut out, self.payload.as_bytes());
        put(&mut out, self.metadata.as_bytes());
        put(&mut out, &self.recorded_at_us.to_be_bytes());
        out
    }

    /// `hex(SHA-256(prev_hash_bytes ‖ canonical_bytes))`.
    pub fn chain_hash(&self, prev_hash_hex: &str) -> String {
        let mut h = Sha256::new();
        // A malformed previous hash (only possible in a tampered log) still
        // hashes deterministically, as its text, and the chain breaks there.
        match hex::decode(prev_hash_hex) {
            Ok(bytes) => h.update(bytes),
            Err(_) => h.update(prev_hash_hex.as_bytes()),
        }
        h.update(self.canonical_bytes());
        hex::encode(h.finalize())
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(payload: &str) -> HashedFields<'_> {
        HashedFields {
            position: 1,
            stream_id: "ticket-1",
            stream_type: "ticket",
            version: 1,
            event_id: "0190",
            event_type: "ticket.created",
            schema_version: 1,
            payload,
            metadata: "{}",
            recorded_at_us: 42,
        }
    }

    #[test]
    fn hash_depends_on_content_and_predecessor() {
        let a = fields("{\"a\":1}").chain_hash(GENESIS_HASH);
        assert_eq!(a.len(), 64);
        assert_ne!(a, fields("{\"a\":2}").chain_hash(GENESIS_HASH));
        assert_ne!(a, fields("{\"a\":1}").chain_hash(&a));
        assert_eq!(a, fields("{\"a\":1}").chain_hash(GENESIS_HASH));
    }

    #[test]
    fn length_prefixes_keep_field_boundaries() {
        let mut x = fields("{}");
        x.stream_id = "ab";
        x.stream_type = "c";
        let mut y = fields("{}");
        y.stream_id = "a";
        y.stream_type = "bc";
        assert_ne!(x.canonical_bytes(), y.canonical_bytes());
    }
}
