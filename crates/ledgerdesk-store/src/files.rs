//! The index of uploaded files (`api_files`, `api_file_subjects`): size
//! and media type by SHA-256, which data subjects' tickets hold each file,
//! and which were destroyed by an erasure. The bytes are on disk, the
//! API's; this module keeps the rows.

use uuid::Uuid;

use crate::db::{self, Arg, DbPool, DbRow, Record};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// One text column named `id`.
struct Id(String);

impl Record for Id {
    fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(Id(row.text("id")?.unwrap_or_default()))
    }
}

/// An uploaded file's index entry.
#[derive(Debug, Clone)]
pub struct FileRow {
    /// Size in bytes.
    pub size: i64,
    /// Media type given at upload.
    pub content_type: String,
    /// Whether its bytes were destroyed by an erasure.
    pub erased: bool,
}

impl Record for FileRow {
    fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(FileRow {
            size: row.int0("size")?,
            content_type: row.text("content_type")?.unwrap_or_default(),
            erased: row.int("erased_at")?.is_some(),
        })
    }
}

/// Index an uploaded file (a second upload of the same bytes keeps the
/// first entry, but makes bytes that an erasure destroyed available
/// again: they are on disk once more, and attached to a held ticket).
pub async fn insert_file(
    pool: &DbPool,
    sha256: &str,
    size: i64,
    content_type: &str,
) -> Result<(), sqlx::Error> {
    db::execute(
        pool,
        "INSERT INTO api_files (sha256, size, content_type, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sha256) DO UPDATE SET erased_at = NULL",
        vec![
            Arg::from(sha256),
            Arg::from(size),
            Arg::from(content_type),
            Arg::from(now()),
        ],
    )
    .await?;
    Ok(())
}

/// A file's index entry.
pub async fn file(pool: &DbPool, sha256: &str) -> Result<Option<FileRow>, sqlx::Error> {
    db::fetch_one(
        pool,
        "SELECT size, content_type, erased_at FROM api_files WHERE sha256 = $1",
        vec![Arg::from(sha256)],
    )
    .await
}

/// Record that `sha256` is attached to a ticket of data subject `subject`.
pub async fn link_file(pool: &DbPool, sha256: &str, subject: Uuid) -> Result<(), sqlx::Error> {
    db::execute(
        pool,
        "INSERT INTO api_file_subjects (sha256, subject_id) VALUES ($1, $2) \
         ON CONFLICT (sha256, subject_id) DO NOTHING",
        vec![Arg::from(sha256), Arg::from(subject)],
    )
    .await?;
    Ok(())
}

/// Mark `subject`'s file links erased, and every file of theirs that no
/// held subject's ticket shares as erased too; returns those files,
/// whose bytes the caller destroys. Repeating it returns them again, so
/// an erasure interrupted before the bytes were gone can be finished.
pub async fn erase_files_of(pool: &DbPool, subject: Uuid) -> Result<Vec<String>, sqlx::Error> {
    let at = now();
    let only_theirs = "SELECT sha256 AS id FROM api_file_subjects WHERE subject_id = $1 \
         AND sha256 NOT IN (SELECT sha256 FROM api_file_subjects WHERE erased_at IS NULL)";
    let mut tx = db::begin(pool).await?;
    tx.execute(
        "UPDATE api_file_subjects SET erased_at = $2 WHERE subject_id = $1 AND erased_at IS NULL",
        vec![Arg::from(subject), Arg::from(at)],
    )
    .await?;
    let shas: Vec<Id> = tx.fetch(only_theirs, vec![Arg::from(subject)]).await?;
    let shas: Vec<String> = shas.into_iter().map(|s| s.0).collect();
    for sha in &shas {
        tx.execute(
            "UPDATE api_files SET erased_at = $2 WHERE sha256 = $1 AND erased_at IS NULL",
            vec![Arg::from(sha.as_str()), Arg::from(at)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(shas)
}
