//! The Ed25519 key that signs checkpoints, and the public key that checks them.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::CHECKPOINT_FORMAT;
use crate::merkle::AuditError;

/// The Ed25519 key that signs checkpoints. Its seed never prints.
pub struct CheckpointKey {
    pub(super) key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckpointKey({})", self.public_key().key_id())
    }
}

impl CheckpointKey {
    /// A key from its 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// A new random key (from the operating system's generator).
    pub fn generate() -> Result<Self, AuditError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| AuditError::Key(format!("no randomness: {e}")))?;
        Ok(Self::from_seed(seed))
    }

    /// Parse a seed written as 64 hex digits or as base64 (surrounding
    /// whitespace ignored).
    pub fn parse_seed(text: &str) -> Result<Self, AuditError> {
        decode_32(text)
            .map(Self::from_seed)
            .ok_or_else(|| AuditError::Key("expected a 32-byte seed in hex or base64".into()))
    }

    /// Load the key at `path`; if the file does not exist, generate a key and
    /// write its seed there (hex, mode 0600), atomically: two processes
    /// starting at once end up with the same key.
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        let io = |what: &str, e: std::io::Error| {
            AuditError::Key(format!("{what} {}: {e}", path.display()))
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                warn_if_readable_by_others(path);
                return Self::parse_seed(&text)
                    .map_err(|e| AuditError::Key(format!("{}: {e}", path.display())));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot read", e)),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io("cannot create the folder of", e))?;
        }
        let key = Self::generate()?;
        // Write a private temporary file, then link it into place: the link
        // fails if another process won the race, and we read its key instead.
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::now_v7().simple()));
        write_private(
            &tmp,
            format!("{}\n", hex::encode(key.key.to_bytes())).as_bytes(),
        )
        .map_err(|e| io("cannot write", e))?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                tracing::info!(path = %path.display(), key_id = %key.public_key().key_id(), "generated a new checkpoint signing key");
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(|e| io("cannot read", e))?;
                Self::parse_seed(&text)
            }
            Err(e) => Err(io("cannot create", e)),
        }
    }

    /// The public half, for `GET /api/v1/audit/public-key` and verifiers.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "checkpoint signing key is readable by other users; chmod 600 it");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// 32 bytes from 64 hex digits or base64.
fn decode_32(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(t).ok()?
    } else {
        B64.decode(t).ok()?
    };
    bytes.try_into().ok()
}

/// An Ed25519 public key; base64 in JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub ed25519_dalek::VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl PublicKey {
    /// Parse 64 hex digits or base64 of the 32-byte key.
    pub fn parse(text: &str) -> Result<Self, AuditError> {
        let bytes = decode_32(text).ok_or_else(|| {
            AuditError::Key("expected a 32-byte public key in hex or base64".into())
        })?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|e| AuditError::Key(format!("not an Ed25519 public key: {e}")))
    }

    /// Standard base64 of the 32 bytes.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0.as_bytes())
    }

    /// Lowercase hex of the 32 bytes.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// The key's short name: hex of the first 8 bytes of SHA-256(key).
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.0.as_bytes())[..8])
    }

    /// The body of `GET /api/v1/audit/public-key`.
    pub fn info(&self) -> PublicKeyInfo {
        PublicKeyInfo {
            algorithm: "ed25519".into(),
            key_id: self.key_id(),
            public_key: self.to_base64(),
            public_key_hex: self.to_hex(),
            checkpoint_format: CHECKPOINT_FORMAT.into(),
        }
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What the public-key endpoint returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyInfo {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The key id checkpoints name.
    pub key_id: String,
    /// The key, standard base64.
    pub public_key: String,
    /// The key, hex.
    pub public_key_hex: String,
    /// The first line of the signed text.
    pub checkpoint_format: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_as_hex_or_base64_and_are_created_once() {
        let key = CheckpointKey::from_seed([9; 32]);
        let pk = key.public_key();
        assert_eq!(PublicKey::parse(&pk.to_hex()).unwrap(), pk);
        assert_eq!(PublicKey::parse(&pk.to_base64()).unwrap(), pk);
        assert_eq!(
            CheckpointKey::parse_seed(&B64.encode([9u8; 32]))
                .unwrap()
                .public_key(),
            pk
        );
        assert!(CheckpointKey::parse_seed("nope").is_err());

        let dir =
            std::env::temp_dir().join(format!("ledgerdesk-key-{}", uuid::Uuid::now_v7().simple()));
        let path = dir.join("sub").join("checkpoint.key");
        let a = CheckpointKey::load_or_create(&path).unwrap();
        let b = CheckpointKey::load_or_create(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let listed: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(listed.len(), 1, "no temporary file left behind");
        std::fs::remove_dir_all(dir).unwrap();
        assert!(!format!("{a:?}").contains(&hex::encode([9u8; 32])));
    }
}
