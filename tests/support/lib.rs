//! Test support shared by the black-box suites: a fresh database per test on
//! either backend, and the macro that runs one suite against both.
//!
//! SQLite always runs. PostgreSQL runs when `LEDGERDESK_TEST_POSTGRES_URL` is
//! set; under `CI=true` a missing or unreachable server fails the test
//! instead of skipping it.

pub mod app;
pub mod raw;

use std::path::PathBuf;
use std::sync::Arc;

use ledgerdesk_store::{db, DbPool, EventStore, OpenOptions};
use sqlx::Connection;

/// A database that exists for one test and is removed when dropped.
pub struct TestDb {
    /// The URL to open it with.
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Files(PathBuf),
    Postgres { admin_url: String, name: String },
}

/// Which backend a suite instance runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SQLite file in the temp folder.
    Sqlite,
    /// A new PostgreSQL database.
    Postgres,
}

impl TestDb {
    /// A fresh database of `kind`, or None when PostgreSQL is not configured
    /// (outside CI).
    pub async fn new(kind: Kind) -> Option<Self> {
        match kind {
            Kind::Sqlite => Some(Self::sqlite()),
            Kind::Postgres => Self::postgres().await,
        }
    }

    /// A new SQLite file.
    pub fn sqlite() -> Self {
        let dir = std::env::temp_dir().join("ledgerdesk-tests");
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(format!("{}.db", uuid::Uuid::now_v7().simple()));
        Self {
            url: format!("sqlite://{}", path.display()),
            cleanup: Cleanup::Files(path),
        }
    }

    /// A new PostgreSQL database on the configured server.
    pub async fn postgres() -> Option<Self> {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let admin_url = match std::env::var("LEDGERDESK_TEST_POSTGRES_URL") {
            Ok(u) if !u.is_empty() => u,
            _ if in_ci => panic!("CI=true but LEDGERDESK_TEST_POSTGRES_URL is not set: the PostgreSQL suite must run"),
            _ => {
                eprintln!("skipped: LEDGERDESK_TEST_POSTGRES_URL is not set");
                return None;
            }
        };
        let name = format!("ldtest_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {admin_url}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        Some(Self {
            url: with_database(&admin_url, &name),
            cleanup: Cleanup::Postgres { admin_url, name },
        })
    }

    /// Which backend this is.
    pub fn kind(&self) -> Kind {
        match self.cleanup {
            Cleanup::Files(_) => Kind::Sqlite,
            Cleanup::Postgres { .. } => Kind::Postgres,
        }
    }

    /// Open a store on it (each call: its own pools and writer, as another
    /// process would have).
    pub async fn open(&self) -> Arc<dyn EventStore> {
        ledgerdesk_store::open(&self.url, &OpenOptions::default())
            .await
            .expect("open store")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Files(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Cleanup::Postgres { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                // Drop runs inside the test's runtime; do the async clean-up
                // on a thread of its own.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()?;
                    rt.block_on(async {
                        let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut admin)
                            .await
                            .ok()
                    })
                })
                .join();
            }
        }
    }
}

/// `base` with its database name replaced by `name`.
pub fn with_database(base: &str, name: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (base, String::new()),
    };
    let after_scheme = head.find("://").map_or(0, |i| i + 3);
    let authority_end = head[after_scheme..].find('/').map(|i| i + after_scheme);
    let root = authority_end.map_or(head, |i| &head[..i]);
    format!("{root}/{name}{query}")
}

/// Run raw SQL on the store's database (tests only: tampering, checks).
pub async fn exec(pool: &DbPool, sql: &str) -> Result<u64, sqlx::Error> {
    db::script(pool, sql).await
}

/// A row read as its first column, named `v`.
struct Value<T>(T);

impl db::Record for Value<Option<i64>> {
    fn read(row: &dyn db::DbRow) -> Result<Self, sqlx::Error> {
        Ok(Value(row.int("v")?))
    }
}

impl db::Record for Value<Option<String>> {
    fn read(row: &dyn db::DbRow) -> Result<Self, sqlx::Error> {
        Ok(Value(row.text("v")?))
    }
}

/// The integers of column `v` in `sql`'s rows (tests only: checks).
pub async fn ints(pool: &DbPool, sql: &str, args: Vec<db::Arg>) -> Vec<Option<i64>> {
    let rows: Vec<Value<Option<i64>>> = db::fetch(pool, sql, args).await.expect(sql);
    rows.into_iter().map(|v| v.0).collect()
}

/// The texts of column `v` in `sql`'s rows (tests only: checks).
pub async fn texts(pool: &DbPool, sql: &str, args: Vec<db::Arg>) -> Vec<Option<String>> {
    let rows: Vec<Value<Option<String>>> = db::fetch(pool, sql, args).await.expect(sql);
    rows.into_iter().map(|v| v.0).collect()
}

/// Instantiate async test functions `fn(Kind)`-style, each taking a fresh
/// `&TestDb`, once per backend: `backend_tests!(a, b, c);` makes
/// `sqlite::a`, `postgres::a`, …
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = $crate::TestDb::new($crate::Kind::Sqlite).await.expect("sqlite");
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(db) = $crate::TestDb::new($crate::Kind::Postgres).await else { return };
                    super::$name(&db).await;
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_database_name() {
        use super::with_database;
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
    }
}
