//! The store's one error type.

use std::sync::Arc;

use sqlx::error::DatabaseError as _;

use crate::event::ExpectedVersion;

/// Why an operation on the event store failed.
///
/// `Conflict` is the only refusal a caller is expected to handle (reload and
/// retry); the rest are failures. Database errors are shared behind an `Arc`
/// because one failed group commit fails every append that was in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The stream's version was not the expected one; nothing was written.
    #[error("version conflict on stream {stream_id}: expected {expected}, found {actual}")]
    Conflict {
        /// The stream.
        stream_id: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version (0 = no stream).
        actual: u64,
    },
    /// The append itself was malformed (empty stream id, too many events…).
    #[error("invalid append: {0}")]
    Invalid(String),
    /// The database URL names no backend we support.
    #[error("unsupported database url `{0}`: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(Arc<sqlx::Error>),
    /// The database cannot be reached, is restarting, dropped the connection
    /// or kept its write lock beyond the lock timeout. Nothing of the
    /// operation is known to have been written; trying again later is the
    /// remedy, so an HTTP layer answers 503 with `Retry-After`.
    #[error("database unavailable: {0}")]
    Unavailable(Arc<sqlx::Error>),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(Arc<sqlx::migrate::MigrateError>),
    /// A stored row could not be read back as an event.
    #[error("stored event at position {position} is unreadable: {reason}")]
    Corrupt {
        /// Its position.
        position: i64,
        /// What was wrong.
        reason: String,
    },
    /// The writer task is gone (the store is shutting down).
    #[error("the event store is closed")]
    Closed,
    /// A file-system problem when opening the database.
    #[error("{0}")]
    Io(String),
}

impl StoreError {
    /// Whether this failure is the database being unavailable (see
    /// [`StoreError::Unavailable`]) rather than a fault in the request.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            Self::Unavailable(Arc::new(e))
        } else {
            Self::Database(Arc::new(e))
        }
    }
}

/// Whether `e` says the database is out of reach or too busy right now,
/// as opposed to refusing this statement: the connection broke or could
/// not be made (I/O, TLS, pool exhausted or closed), PostgreSQL is shutting
/// down, restarting or terminated our backend (SQLSTATE class 08, 57P01–
/// 57P03), a lock or statement timeout fired (55P03, 57014), or SQLite
/// stayed busy or locked beyond its busy timeout.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                let code = pg.code();
                code.starts_with("08")
                    || matches!(code, "57P01" | "57P02" | "57P03" | "55P03" | "57014")
            } else if let Some(lite) = db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                // The primary result code is the low byte of the extended one.
                let code = lite.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
                const SQLITE_BUSY: i32 = 5;
                const SQLITE_LOCKED: i32 = 6;
                matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED)
            } else {
                false
            }
        }
        _ => false,
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(Arc::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_unavailable_and_refusals_are_not() {
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        for e in [
            sqlx::Error::Io(io()),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
            sqlx::Error::Tls(Box::new(io())),
        ] {
            assert!(is_unavailable(&e), "{e}");
            assert!(StoreError::from(e).is_unavailable());
        }
        for e in [
            sqlx::Error::RowNotFound,
            sqlx::Error::Protocol("garbled".into()),
            sqlx::Error::ColumnNotFound("x".into()),
        ] {
            assert!(!is_unavailable(&e), "{e}");
            assert!(matches!(StoreError::from(e), StoreError::Database(_)));
        }
    }

    /// A real `SQLITE_BUSY`: a second connection wants the write lock that
    /// the first holds, and its busy timeout runs out.
    #[tokio::test]
    async fn sqlite_busy_beyond_the_timeout_is_unavailable_and_a_constraint_is_not() {
        use sqlx::sqlite::SqliteConnectOptions;
        use sqlx::{ConnectOptions, Connection};
        let path = std::env::temp_dir().join(format!(
            "ledgerdesk-busy-{}.db",
            uuid::Uuid::now_v7().simple()
        ));
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .busy_timeout(std::time::Duration::from_millis(50));
        let mut holder = options.connect().await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .execute(&mut holder)
            .await
            .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut holder)
            .await
            .unwrap();
        let mut other = options.connect().await.unwrap();
        let busy = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap_err();
        assert!(is_unavailable(&busy), "{busy}");
        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut other)
            .await
            .unwrap();
        let duplicate = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut other)
            .await
            .unwrap_err();
        assert!(!is_unavailable(&duplicate), "{duplicate}");
        let _ = holder.close().await;
        let _ = other.close().await;
        let _ = std::fs::remove_file(&path);
    }
}
