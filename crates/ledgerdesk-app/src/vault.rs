//! Crypto-shredding: customer personal data is stored in the log encrypted
//! with a key per data subject, and erasing a subject destroys the key.
//!
//! The domain keeps all personal data of an event under `payload.pii`
//! (`{"subject": <uuid>, "data": {<strings>}}`). On append, [`SealedStore`]
//! replaces `data` with `sealed` (ChaCha20-Poly1305 under the subject's key,
//! the subject id as associated data, and the field names in clear so an
//! erased event still decodes). On read it opens them again; once the key is
//! gone every field reads `[erased]`. The stored bytes never change, so the
//! hash chain and the checkpoints verify before and after an erasure.
//!
//! Keys live in `subject_keys`, outside the immutable log. Keys are cached
//! for sealing only: data sealed with a key that another process has since
//! destroyed is unreadable anyway. Opening always asks the table, so an
//! erasure takes effect at once in every process.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::{DateTime, Utc};
use ledgerdesk_domain::pii::{ERASED, PII_KEY};
use ledgerdesk_store::subjects;
use ledgerdesk_store::{
    Appended, Backend, DbPool, EventStore, Head, RecordedEvent, StoreError, StreamAppend,
    StreamRange,
};
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use uuid::Uuid;

const ALG: &str = "chacha20poly1305";

/// What the vault knows of one data subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectStatus {
    /// Neither a key nor an email mapping: nothing of theirs is held.
    Unknown,
    /// Their key (or, before the first sealed event, their email mapping)
    /// exists: their data reads in clear.
    Held,
    /// Their key was destroyed.
    Erased,
}

/// The per-subject keys.
#[derive(Debug)]
pub struct Vault {
    pool: DbPool,
    seal_keys: Mutex<HashMap<Uuid, Key>>,
}

impl Vault {
    /// A vault over the `subject_keys` table of `pool`'s database.
    pub fn new(pool: DbPool) -> Self {
        Self {
            pool,
            seal_keys: Mutex::new(HashMap::new()),
        }
    }

    /// Encrypt `payload.pii.data` in place, if there is any.
    pub async fn seal(&self, payload: &mut Value) -> Result<(), StoreError> {
        let Some(pii) = payload.get_mut(PII_KEY).and_then(Value::as_object_mut) else {
            return Ok(());
        };
        let Some(data) = pii.get("data").and_then(Value::as_object) else {
            return Ok(());
        };
        let subject = subject_of(pii)?;
        let fields: Vec<String> = data
            .iter()
            .filter(|(_, v)| v.is_string())
            .map(|(k, _)| k.clone())
            .collect();
        let sealed = match self.seal_key(subject).await? {
            Some(key) => {
                let plain = serde_json::to_vec(data).map_err(|e| invalid(e.to_string()))?;
                let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
                let ct = ChaCha20Poly1305::new(&key)
                    .encrypt(
                        &nonce,
                        Payload {
                            msg: &plain,
                            aad: subject.as_bytes(),
                        },
                    )
                    .map_err(|_| invalid("encryption failed".into()))?;
                json!({ "alg": ALG, "nonce": B64.encode(nonce), "ct": B64.encode(ct), "fields": fields })
            }
            // The subject was erased: new personal data about them is not kept.
            None => json!({ "alg": "erased", "fields": fields }),
        };
        pii.remove("data");
        pii.insert("sealed".into(), sealed);
        Ok(())
    }

    /// Decrypt every sealed `pii` in `payloads`, or mark it erased; one key
    /// look-up for all of them.
    pub async fn open_all(&self, payloads: &mut [Value]) -> Result<(), StoreError> {
        let subjects: HashSet<Uuid> = payloads
            .iter()
            .filter_map(|p| p.get(PII_KEY).filter(|pii| pii.get("sealed").is_some()))
            .filter_map(|pii| pii.as_object().and_then(|o| subject_of(o).ok()))
            .collect();
        if subjects.is_empty() {
            return Ok(());
        }
        let keys = self.keys(&subjects).await?;
        for payload in payloads.iter_mut() {
            open_one(payload, &keys)?;
        }
        Ok(())
    }

    /// Destroy a subject's key (and forget their email); returns whether
    /// there was anything to erase. Erasing twice is harmless.
    pub async fn erase(&self, subject: Uuid) -> Result<bool, StoreError> {
        self.seal_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&subject);
        let now = Utc::now().timestamp_micros();
        Ok(subjects::destroy(&self.pool, subject, now).await?)
    }

    /// Whether the vault holds personal data of the subject, erased it, or
    /// never saw it. Held also covers a subject with an email mapping but
    /// no key yet: the mapping is made before the first event is sealed,
    /// and a command refused after it leaves the email with no key.
    pub async fn status(&self, subject: Uuid) -> Result<SubjectStatus, StoreError> {
        let keys = self.keys(&HashSet::from([subject])).await?;
        Ok(match keys.get(&subject) {
            Some(None) => SubjectStatus::Erased,
            Some(Some(_)) => SubjectStatus::Held,
            None if self.has_email(subject).await? => SubjectStatus::Held,
            None => SubjectStatus::Unknown,
        })
    }

    async fn has_email(&self, subject: Uuid) -> Result<bool, StoreError> {
        Ok(subjects::has_email(&self.pool, subject).await?)
    }

    /// Whether the subject's key is gone.
    pub async fn is_erased(&self, subject: Uuid) -> Result<bool, StoreError> {
        let keys = self.keys(&HashSet::from([subject])).await?;
        Ok(keys.get(&subject).is_none_or(Option::is_none))
    }

    async fn seal_key(&self, subject: Uuid) -> Result<Option<Key>, StoreError> {
        if let Some(k) = self
            .seal_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&subject)
        {
            return Ok(Some(*k));
        }
        let fresh = B64.encode(ChaCha20Poly1305::generate_key(&mut OsRng));
        let now = Utc::now().timestamp_micros();
        // Insert-if-absent, then read back whichever key won a race.
        subjects::insert_key(&self.pool, subject, &fresh, now).await?;
        let key = self
            .keys(&HashSet::from([subject]))
            .await?
            .remove(&subject)
            .flatten();
        if let Some(k) = key {
            self.seal_keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(subject, k);
        }
        Ok(key)
    }

    /// Current keys of `subjects`: `None` for an erased subject; absent for
    /// one never seen.
    async fn keys(&self, wanted: &HashSet<Uuid>) -> Result<HashMap<Uuid, Option<Key>>, StoreError> {
        let ids: Vec<Uuid> = wanted.iter().copied().collect();
        let mut out = HashMap::with_capacity(ids.len());
        for subjects::KeyRow {
            subject_id: id,
            key,
        } in subjects::keys(&self.pool, &ids).await?
        {
            let id: Uuid = id
                .parse()
                .map_err(|_| corrupt(format!("subject id {id}")))?;
            let key = match key {
                Some(k) => {
                    let bytes = B64.decode(k).map_err(|_| corrupt(format!("key of {id}")))?;
                    if bytes.len() != 32 {
                        return Err(corrupt(format!("key of {id} has {} bytes", bytes.len())));
                    }
                    Some(*Key::from_slice(&bytes))
                }
                None => None,
            };
            out.insert(id, key);
        }
        Ok(out)
    }
}

fn open_one(payload: &mut Value, keys: &HashMap<Uuid, Option<Key>>) -> Result<(), StoreError> {
    let Some(pii) = payload.get_mut(PII_KEY).and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let Some(sealed) = pii.get("sealed").cloned() else {
        return Ok(());
    };
    let subject = subject_of(pii)?;
    let erased = || -> Value {
        let fields = sealed
            .get("fields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Value::Object(
            fields
                .iter()
                .filter_map(Value::as_str)
                .map(|f| (f.to_owned(), Value::String(ERASED.to_owned())))
                .collect::<Map<_, _>>(),
        )
    };
    let data = match (
        sealed.get("alg").and_then(Value::as_str),
        keys.get(&subject),
    ) {
        (Some(ALG), Some(Some(key))) => {
            let field = |name: &str| {
                sealed
                    .get(name)
                    .and_then(Value::as_str)
                    .and_then(|s| B64.decode(s).ok())
                    .ok_or_else(|| corrupt(format!("sealed personal data has no valid {name}")))
            };
            let nonce = field("nonce")?;
            if nonce.len() != 12 {
                return Err(corrupt("sealed personal data has a bad nonce".into()));
            }
            let plain = ChaCha20Poly1305::new(key)
                .decrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: &field("ct")?,
                        aad: subject.as_bytes(),
                    },
                )
                .map_err(|_| {
                    corrupt(format!(
                        "personal data of subject {subject} does not decrypt"
                    ))
                })?;
            serde_json::from_slice(&plain).map_err(|e| corrupt(e.to_string()))?
        }
        // Erased, never keyed, or stored after the erasure.
        _ => erased(),
    };
    pii.remove("sealed");
    pii.insert("data".into(), data);
    Ok(())
}

fn subject_of(pii: &Map<String, Value>) -> Result<Uuid, StoreError> {
    pii.get("subject")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("personal data without a valid subject".into()))
}

fn invalid(reason: String) -> StoreError {
    StoreError::Invalid(reason)
}

fn corrupt(reason: String) -> StoreError {
    StoreError::Corrupt {
        position: 0,
        reason,
    }
}

/// The event store as the rest of ledgerdesk sees it: personal data sealed
/// on the way in and opened (or `[erased]`) on the way out.
///
/// Events read through it carry the opened payload, which is not the stored
/// text: verify the chain, build Merkle proofs and serve the raw log through
/// [`SealedStore::raw`].
pub struct SealedStore {
    inner: Arc<dyn EventStore>,
    vault: Arc<Vault>,
}

impl SealedStore {
    /// Wrap `inner`; the keys live in the same database.
    pub fn new(inner: Arc<dyn EventStore>) -> Self {
        let vault = Arc::new(Vault::new(inner.db()));
        Self { inner, vault }
    }

    /// The store underneath, whose events are exactly as stored and hashed.
    pub fn raw(&self) -> Arc<dyn EventStore> {
        self.inner.clone()
    }

    /// The keys.
    pub fn vault(&self) -> Arc<Vault> {
        self.vault.clone()
    }

    async fn open(&self, mut events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>, StoreError> {
        // Most events carry no personal data: leave their text untouched.
        let sealed: Vec<usize> = (0..events.len())
            .filter(|&i| events[i].payload.contains("\"sealed\""))
            .collect();
        if sealed.is_empty() {
            return Ok(events);
        }
        let mut payloads = sealed
            .iter()
            .map(|&i| {
                events[i].payload_json().map_err(|e| StoreError::Corrupt {
                    position: events[i].position as i64,
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.vault.open_all(&mut payloads).await?;
        for (i, payload) in sealed.into_iter().zip(payloads) {
            events[i].payload = payload.to_string();
        }
        Ok(events)
    }
}

#[async_trait]
impl EventStore for SealedStore {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    fn db(&self) -> DbPool {
        self.inner.db()
    }

    async fn append_many(
        &self,
        mut appends: Vec<StreamAppend>,
    ) -> Result<Vec<Appended>, StoreError> {
        for append in &mut appends {
            for event in &mut append.events {
                self.vault.seal(&mut event.payload).await?;
            }
        }
        self.inner.append_many(appends).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        range: StreamRange,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.read_stream(stream_id, range).await?;
        self.open(events).await
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.read_all(after, limit).await?;
        self.open(events).await
    }

    async fn head(&self) -> Result<Head, StoreError> {
        self.inner.head().await
    }

    async fn position_at(&self, time: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.position_at(time).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.watch_head()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(subject: Uuid, key: Option<Key>) -> HashMap<Uuid, Option<Key>> {
        HashMap::from([(subject, key)])
    }

    fn sealed_with(key: &Key, subject: Uuid, data: &Value) -> Value {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = ChaCha20Poly1305::new(key)
            .encrypt(
                &nonce,
                Payload {
                    msg: &serde_json::to_vec(data).unwrap(),
                    aad: subject.as_bytes(),
                },
            )
            .unwrap();
        json!({"ticket_id": "t", "pii": {"subject": subject, "sealed": {
            "alg": ALG, "nonce": B64.encode(nonce), "ct": B64.encode(ct), "fields": ["body", "name"]}}})
    }

    #[test]
    fn opens_with_the_key_and_reads_erased_without_it() {
        let subject = Uuid::now_v7();
        let key = ChaCha20Poly1305::generate_key(&mut OsRng);
        let data = json!({"body": "my card ends 4242", "name": "Ada"});
        let mut p = sealed_with(&key, subject, &data);
        open_one(&mut p, &keys(subject, Some(key))).unwrap();
        assert_eq!(p["pii"]["data"], data);
        assert!(p["pii"].get("sealed").is_none());

        let mut p = sealed_with(&key, subject, &data);
        open_one(&mut p, &keys(subject, None)).unwrap();
        assert_eq!(p["pii"]["data"], json!({"body": ERASED, "name": ERASED}));
        assert_eq!(p["ticket_id"], "t", "the rest of the event is untouched");
    }

    #[test]
    fn ciphertext_is_bound_to_its_subject_and_key() {
        let subject = Uuid::now_v7();
        let key = ChaCha20Poly1305::generate_key(&mut OsRng);
        let mut p = sealed_with(&key, subject, &json!({"body": "x"}));
        // Moved to another subject (who has the same key): refused.
        let other = Uuid::now_v7();
        p["pii"]["subject"] = json!(other);
        assert!(open_one(&mut p, &keys(other, Some(key))).is_err());
        // The wrong key: refused, never garbage.
        let mut p = sealed_with(&key, subject, &json!({"body": "x"}));
        let wrong = ChaCha20Poly1305::generate_key(&mut OsRng);
        assert!(open_one(&mut p, &keys(subject, Some(wrong))).is_err());
    }

    #[test]
    fn payloads_without_personal_data_are_left_alone() {
        let mut p = json!({"status": "open", "pii": null});
        let before = p.clone();
        open_one(&mut p, &HashMap::new()).unwrap();
        assert_eq!(p, before);
    }
}
