//! Data subjects and their keys, outside the immutable log (migrations
//! `0002_data_subjects.sql`, `0004_subject_keys.sql`): the email → subject
//! mapping, and each subject's key (`NULL` once erased). The app's vault
//! does the cryptography; this module only keeps the rows.

use uuid::Uuid;

use crate::db::{self, Arg, DbPool, DbRow, Dialect, Record};

const INSERT: &str = include_str!("../sql/subject_insert.sql");
const SELECT: &str = include_str!("../sql/subject_select.sql");

/// A subject's id and key (base64; `None` once erased), as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// The subject id, as text.
    pub subject_id: String,
    /// The key, base64.
    pub key: Option<String>,
}

impl Record for KeyRow {
    fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(KeyRow {
            subject_id: row.text("subject_id")?.unwrap_or_default(),
            key: row.text("key")?,
        })
    }
}

/// The `subject_id` column.
struct Subject(String);

impl Record for Subject {
    fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(Subject(row.text("subject_id")?.unwrap_or_default()))
    }
}

/// The first column of SQLite's `PRAGMA wal_checkpoint`.
struct Busy(i64);

impl Record for Busy {
    fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(Busy(row.int0("busy")?))
    }
}

/// File `email` (normalised) under `candidate` unless it has a subject
/// already; the subject id it is filed under. Race-safe: insert-if-absent,
/// then read back whichever row won.
pub async fn file_email(
    pool: &DbPool,
    candidate: Uuid,
    email: &str,
    at_micros: i64,
) -> Result<String, sqlx::Error> {
    let args = vec![Arg::from(candidate), Arg::from(email), Arg::from(at_micros)];
    db::execute(pool, INSERT, args).await?;
    find_email(pool, email)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// The subject id `email` (normalised) is filed under.
pub async fn find_email(pool: &DbPool, email: &str) -> Result<Option<String>, sqlx::Error> {
    let found = db::fetch_one::<Subject>(pool, SELECT, vec![Arg::from(email)]).await?;
    Ok(found.map(|s| s.0))
}

/// Whether an email is filed under `subject`.
pub async fn has_email(pool: &DbPool, subject: Uuid) -> Result<bool, sqlx::Error> {
    let sql = "SELECT subject_id FROM data_subjects WHERE subject_id = $1";
    let found = db::fetch_one::<Subject>(pool, sql, vec![Arg::from(subject)]).await?;
    Ok(found.is_some())
}

/// Keep `key` for `subject` unless it has one (or was erased).
pub async fn insert_key(
    pool: &DbPool,
    subject: Uuid,
    key: &str,
    at_micros: i64,
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO subject_keys (subject_id, key, created_at) VALUES ($1, $2, $3) \
               ON CONFLICT (subject_id) DO NOTHING";
    let args = vec![Arg::from(subject), Arg::from(key), Arg::from(at_micros)];
    db::execute(pool, sql, args).await?;
    Ok(())
}

/// The key rows of `subjects` (absent: never seen).
pub async fn keys(pool: &DbPool, subjects: &[Uuid]) -> Result<Vec<KeyRow>, sqlx::Error> {
    let mut out = Vec::with_capacity(subjects.len());
    for chunk in subjects.chunks(500) {
        let sql = format!(
            "SELECT subject_id, key FROM subject_keys WHERE subject_id IN ({})",
            db::placeholders(1, chunk.len())
        );
        let args = chunk.iter().map(|id| Arg::from(*id)).collect();
        out.extend(db::fetch::<KeyRow>(pool, &sql, args).await?);
    }
    Ok(out)
}

/// Destroy `subject`'s key and forget their email; whether there was
/// anything to destroy. The erasure is remembered even for a subject
/// without a key yet, so no key is ever made for them later.
pub async fn destroy(pool: &DbPool, subject: Uuid, at_micros: i64) -> Result<bool, sqlx::Error> {
    let id = || Arg::from(subject);
    let mut erased = db::execute(
        pool,
        "UPDATE subject_keys SET key = NULL, erased_at = $2 WHERE subject_id = $1 AND key IS NOT NULL",
        vec![id(), Arg::from(at_micros)],
    )
    .await?;
    db::execute(
        pool,
        "INSERT INTO subject_keys (subject_id, key, created_at, erased_at) VALUES ($1, NULL, $2, $2) \
         ON CONFLICT (subject_id) DO NOTHING",
        vec![id(), Arg::from(at_micros)],
    )
    .await?;
    erased += db::execute(
        pool,
        "DELETE FROM data_subjects WHERE subject_id = $1",
        vec![id()],
    )
    .await?;
    if pool.dialect() == Dialect::Sqlite {
        // `secure_delete` zeroed the old rows in the pages, but the
        // write-ahead log still holds earlier copies of those pages: copy
        // it into the database and empty it. Readers in progress can keep
        // it from finishing; the next erasure or SQLite's own checkpoints
        // then overwrite those frames.
        let busy = db::fetch_one::<Busy>(pool, "PRAGMA wal_checkpoint(TRUNCATE)", vec![])
            .await?
            .map_or(0, |b| b.0);
        if busy != 0 {
            tracing::warn!(%subject, "the write-ahead log could not be emptied after an erasure");
        }
    }
    Ok(erased > 0)
}
