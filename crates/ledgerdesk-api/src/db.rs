//! The API's own tables (migration `0010_api.sql`): accounts (the email
//! reservation that keeps emails unique, the system flag, and the role and
//! activity sessions are checked against), credentials, sessions,
//! idempotency records and uploaded files. The user and department lists
//! are the `people` projection's; `api_departments` and the name and
//! department columns of `api_users` are no longer read (landed migrations
//! stay as they are).
//! The SQL is the same on both backends (`$n` placeholders, `ON CONFLICT`,
//! integer seconds); [`on_pool!`] runs it on whichever pool the store has.

use ledgerdesk_store::DbPool;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// Run `$body` with `$p` bound to the concrete pool of either backend.
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            DbPool::Sqlite($p) => $body,
            DbPool::Postgres($p) => $body,
        }
    };
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The API tables on the store's pool.
#[derive(Debug, Clone)]
pub struct Db {
    pool: DbPool,
}

/// A user as the list shows it (and as an account is reserved).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct UserRow {
    /// The user id.
    pub id: Uuid,
    /// Login email (lowercase).
    pub email: String,
    /// Display name.
    pub name: String,
    /// `agent`, `admin` or `auditor`.
    pub role: String,
    /// Home department.
    pub department_id: Option<Uuid>,
    /// Whether the user may log in and act.
    pub active: bool,
}

fn parse_uuid(s: &str) -> Uuid {
    Uuid::parse_str(s).unwrap_or_default()
}

/// What a bearer token stands for.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// The user.
    pub user_id: Uuid,
    /// Their role now.
    pub role: String,
    /// Whether the account is active.
    pub active: bool,
    /// When the token expires (seconds since the epoch).
    pub expires_at: i64,
}

/// A login candidate.
#[derive(Debug, Clone)]
pub struct LoginRow {
    /// The user.
    pub user_id: Uuid,
    /// The Argon2id PHC string.
    pub password_hash: String,
    /// Whether the account is active.
    pub active: bool,
}

/// A stored response for an idempotency key.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers to replay (name, value).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

/// What an `Idempotency-Key` found.
#[derive(Debug)]
pub enum Idempotency {
    /// First use: the request runs.
    Started,
    /// Seen with the same request: here is the first response.
    Replay(StoredResponse),
    /// The first request with this key is still running.
    InFlight,
    /// Seen with a different request.
    Mismatch,
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

impl Db {
    /// On the store's pool.
    pub fn new(pool: DbPool) -> Self {
        Self { pool }
    }

    /// Users that are not the system account, by email.
    pub async fn count_users(&self) -> Result<i64, sqlx::Error> {
        let (n,): (i64,) = on_pool!(&self.pool, |p| {
            sqlx::query_as("SELECT COUNT(*) FROM api_users")
                .fetch_one(p)
                .await?
        });
        Ok(n)
    }

    /// Reserve a user row (before the event is written; removed again if the
    /// command is refused). False if the email is taken.
    pub async fn reserve_user(&self, row: &UserRow, system: bool) -> Result<bool, sqlx::Error> {
        let sql = "INSERT INTO api_users (user_id, email, name, role, department_id, active, system, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING";
        let id = row.id.to_string();
        let dept = row.department_id.map(|d| d.to_string());
        let done = on_pool!(&self.pool, |p| {
            sqlx::query(sql)
                .bind(&id)
                .bind(&row.email)
                .bind(&row.name)
                .bind(&row.role)
                .bind(&dept)
                .bind(row.active)
                .bind(system)
                .bind(now())
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    /// Remove a reserved user whose creation was refused.
    pub async fn unreserve_user(&self, id: Uuid) -> Result<(), sqlx::Error> {
        let id = id.to_string();
        on_pool!(&self.pool, |p| {
            sqlx::query("DELETE FROM api_credentials WHERE user_id = $1")
                .bind(&id)
                .execute(p)
                .await?;
            sqlx::query("DELETE FROM api_users WHERE user_id = $1")
                .bind(&id)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Copy a user's role and activity (from its stream, after a command)
    /// into the account that sessions and logins are checked against.
    pub async fn update_account(
        &self,
        id: Uuid,
        role: &str,
        active: bool,
    ) -> Result<(), sqlx::Error> {
        let sql = "UPDATE api_users SET role = $2, active = $3 WHERE user_id = $1";
        let id = id.to_string();
        on_pool!(&self.pool, |p| {
            sqlx::query(sql)
                .bind(&id)
                .bind(role)
                .bind(active)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// The system account that records what happens to unknown accounts.
    pub async fn system_user(&self) -> Result<Option<Uuid>, sqlx::Error> {
        let row: Option<(String,)> = on_pool!(&self.pool, |p| {
            sqlx::query_as("SELECT user_id FROM api_users WHERE system = TRUE LIMIT 1")
                .fetch_optional(p)
                .await?
        });
        Ok(row.map(|(id,)| parse_uuid(&id)))
    }

    /// Set (or replace) a password hash.
    pub async fn set_password(&self, user_id: Uuid, hash: &str) -> Result<(), sqlx::Error> {
        let sql = "INSERT INTO api_credentials (user_id, password_hash, updated_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash, updated_at = excluded.updated_at";
        let id = user_id.to_string();
        on_pool!(&self.pool, |p| {
            sqlx::query(sql)
                .bind(&id)
                .bind(hash)
                .bind(now())
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// The credentials of a (normalised) email, if it has any.
    pub async fn login(&self, email: &str) -> Result<Option<LoginRow>, sqlx::Error> {
        let sql = "SELECT u.user_id, c.password_hash, u.active FROM api_users u \
                   JOIN api_credentials c ON c.user_id = u.user_id WHERE u.email = $1";
        let row: Option<(String, String, bool)> = on_pool!(&self.pool, |p| {
            sqlx::query_as(sql).bind(email).fetch_optional(p).await?
        });
        Ok(row.map(|(id, password_hash, active)| LoginRow {
            user_id: parse_uuid(&id),
            password_hash,
            active,
        }))
    }

    /// The user id of an email, with or without credentials.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<Uuid>, sqlx::Error> {
        let row: Option<(String,)> = on_pool!(&self.pool, |p| {
            sqlx::query_as("SELECT user_id FROM api_users WHERE email = $1 AND system = FALSE")
                .bind(email)
                .fetch_optional(p)
                .await?
        });
        Ok(row.map(|(id,)| parse_uuid(&id)))
    }

    /// Open a session.
    pub async fn create_session(
        &self,
        token_hash: &str,
        user_id: Uuid,
        expires_at: i64,
    ) -> Result<(), sqlx::Error> {
        let sql = "INSERT INTO api_sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
        let id = user_id.to_string();
        on_pool!(&self.pool, |p| {
            sqlx::query(sql)
                .bind(token_hash)
                .bind(&id)
                .bind(now())
                .bind(expires_at)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// The live session of a token hash: not revoked, not expired.
    pub async fn session(&self, token_hash: &str) -> Result<Option<SessionRow>, sqlx::Error> {
        let sql = "SELECT s.user_id, u.role, u.active, s.expires_at FROM api_sessions s \
                   JOIN api_users u ON u.user_id = s.user_id \
                   WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2";
        let row: Option<(String, String, bool, i64)> = on_pool!(&self.pool, |p| {
            sqlx::query_as(sql)
                .bind(token_hash)
                .bind(now())
                .fetch_optional(p)
                .await?
        });
        Ok(row.map(|(id, role, active, expires_at)| SessionRow {
            user_id: parse_uuid(&id),
            role,
            active,
            expires_at,
        }))
    }

    /// Revoke one session.
    pub async fn revoke_session(&self, token_hash: &str) -> Result<(), sqlx::Error> {
        on_pool!(&self.pool, |p| {
            sqlx::query("UPDATE api_sessions SET revoked_at = $2 WHERE token_hash = $1")
                .bind(token_hash)
                .bind(now())
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Revoke every session of a user (deactivation, password change) but
    /// the one with `keep` (the caller's own, when they change themselves).
    pub async fn revoke_sessions_of(&self, user_id: Uuid, keep: &str) -> Result<(), sqlx::Error> {
        let id = user_id.to_string();
        on_pool!(&self.pool, |p| {
            sqlx::query(
                "UPDATE api_sessions SET revoked_at = $2 \
                 WHERE user_id = $1 AND revoked_at IS NULL AND token_hash <> $3",
            )
            .bind(&id)
            .bind(now())
            .bind(keep)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Claim `(user, key)` for a request, or say what the key already holds.
    /// A claim older than `stale_after` seconds without a response (a crash
    /// mid-request) is taken over.
    pub async fn begin_idempotent(
        &self,
        user_id: Uuid,
        key: &str,
        request_hash: &str,
        stale_after: i64,
    ) -> Result<Idempotency, sqlx::Error> {
        let id = user_id.to_string();
        let now = now();
        let inserted = on_pool!(&self.pool, |p| {
            sqlx::query(
                "INSERT INTO api_idempotency (user_id, idem_key, request_hash, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(&id)
            .bind(key)
            .bind(request_hash)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        if inserted == 1 {
            return Ok(Idempotency::Started);
        }
        let row: Option<StoredTuple> = on_pool!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT request_hash, status, headers, body, created_at FROM api_idempotency \
                 WHERE user_id = $1 AND idem_key = $2",
            )
            .bind(&id)
            .bind(key)
            .fetch_optional(p)
            .await?
        });
        let Some((hash, status, headers, body, created_at)) = row else {
            // Purged in between: try once more as a first use.
            return Box::pin(self.begin_idempotent(user_id, key, request_hash, stale_after)).await;
        };
        if hash != request_hash {
            return Ok(Idempotency::Mismatch);
        }
        match status {
            Some(status) => Ok(Idempotency::Replay(StoredResponse {
                status: u16::try_from(status).unwrap_or(200),
                headers: headers
                    .and_then(|h| serde_json::from_str(&h).ok())
                    .unwrap_or_default(),
                body: body.unwrap_or_default(),
            })),
            None if now - created_at > stale_after => {
                let taken = on_pool!(&self.pool, |p| {
                    sqlx::query(
                        "UPDATE api_idempotency SET created_at = $3 \
                         WHERE user_id = $1 AND idem_key = $2 AND status IS NULL AND created_at = $4",
                    )
                    .bind(&id)
                    .bind(key)
                    .bind(now)
                    .bind(created_at)
                    .execute(p)
                    .await?
                    .rows_affected()
                });
                Ok(if taken == 1 {
                    Idempotency::Started
                } else {
                    Idempotency::InFlight
                })
            }
            None => Ok(Idempotency::InFlight),
        }
    }

    /// Keep the first response for the key.
    pub async fn complete_idempotent(
        &self,
        user_id: Uuid,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), sqlx::Error> {
        let id = user_id.to_string();
        let headers = serde_json::to_string(&response.headers).unwrap_or_else(|_| "[]".into());
        on_pool!(&self.pool, |p| {
            sqlx::query(
                "UPDATE api_idempotency SET status = $3, headers = $4, body = $5 \
                 WHERE user_id = $1 AND idem_key = $2",
            )
            .bind(&id)
            .bind(key)
            .bind(i64::from(response.status))
            .bind(&headers)
            .bind(&response.body)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Release a key whose request failed (it wrote nothing; it may be sent again).
    pub async fn abandon_idempotent(&self, user_id: Uuid, key: &str) -> Result<(), sqlx::Error> {
        let id = user_id.to_string();
        on_pool!(&self.pool, |p| {
            sqlx::query(
                "DELETE FROM api_idempotency WHERE user_id = $1 AND idem_key = $2 AND status IS NULL",
            )
            .bind(&id)
            .bind(key)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Forget idempotency records and sessions older than `before` (seconds).
    pub async fn purge(&self, idempotency_before: i64) -> Result<(), sqlx::Error> {
        on_pool!(&self.pool, |p| {
            sqlx::query("DELETE FROM api_idempotency WHERE created_at < $1")
                .bind(idempotency_before)
                .execute(p)
                .await?;
            sqlx::query("DELETE FROM api_sessions WHERE expires_at < $1")
                .bind(now())
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Index an uploaded file (a second upload of the same bytes keeps the
    /// first entry, but makes bytes that an erasure destroyed available
    /// again: they are on disk once more, and attached to a held ticket).
    pub async fn insert_file(
        &self,
        sha256: &str,
        size: i64,
        content_type: &str,
    ) -> Result<(), sqlx::Error> {
        on_pool!(&self.pool, |p| {
            sqlx::query(
                "INSERT INTO api_files (sha256, size, content_type, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (sha256) DO UPDATE SET erased_at = NULL",
            )
            .bind(sha256)
            .bind(size)
            .bind(content_type)
            .bind(now())
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// A file's index entry.
    pub async fn file(&self, sha256: &str) -> Result<Option<FileRow>, sqlx::Error> {
        let row: Option<(i64, String, Option<i64>)> = on_pool!(&self.pool, |p| {
            sqlx::query_as("SELECT size, content_type, erased_at FROM api_files WHERE sha256 = $1")
                .bind(sha256)
                .fetch_optional(p)
                .await?
        });
        Ok(row.map(|(size, content_type, erased_at)| FileRow {
            size,
            content_type,
            erased: erased_at.is_some(),
        }))
    }

    /// Record that `sha256` is attached to a ticket of data subject `subject`.
    pub async fn link_file(&self, sha256: &str, subject: Uuid) -> Result<(), sqlx::Error> {
        on_pool!(&self.pool, |p| {
            sqlx::query(
                "INSERT INTO api_file_subjects (sha256, subject_id) VALUES ($1, $2) \
                 ON CONFLICT (sha256, subject_id) DO NOTHING",
            )
            .bind(sha256)
            .bind(subject.to_string())
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Mark `subject`'s file links erased, and every file of theirs that no
    /// held subject's ticket shares as erased too; returns those files,
    /// whose bytes the caller destroys. Repeating it returns them again, so
    /// an erasure interrupted before the bytes were gone can be finished.
    pub async fn erase_files_of(&self, subject: Uuid) -> Result<Vec<String>, sqlx::Error> {
        let id = subject.to_string();
        let at = now();
        let only_theirs = "SELECT sha256 FROM api_file_subjects WHERE subject_id = $1 \
             AND sha256 NOT IN (SELECT sha256 FROM api_file_subjects WHERE erased_at IS NULL)";
        let shas: Vec<String> = on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await?;
            sqlx::query(
                "UPDATE api_file_subjects SET erased_at = $2 WHERE subject_id = $1 AND erased_at IS NULL",
            )
            .bind(&id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            let shas: Vec<String> = sqlx::query_scalar(only_theirs)
                .bind(&id)
                .fetch_all(&mut *tx)
                .await?;
            for sha in &shas {
                sqlx::query(
                    "UPDATE api_files SET erased_at = $2 WHERE sha256 = $1 AND erased_at IS NULL",
                )
                .bind(sha)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            shas
        });
        Ok(shas)
    }
}

type StoredTuple = (String, Option<i64>, Option<String>, Option<String>, i64);
