//! The API's own tables (migration `0010_api.sql`): credentials, sessions
//! and idempotency records. The index of uploaded files is
//! [`ledgerdesk_store::files`]; accounts (`api_users`: the email
//! reservation, role and activity) are the app's, through
//! [`ledgerdesk_store::accounts`]; sessions and logins read them. The user
//! and department lists are the `people` projection's; `api_departments`
//! is no longer read (landed migrations stay as they are).
//! The SQL is the same on both backends (`$n` placeholders, `ON CONFLICT`,
//! integer seconds) and runs through the store's layer ([`ledgerdesk_store::db`]).

use ledgerdesk_store::db::{self, Arg, DbRow, Record};
use ledgerdesk_store::DbPool;
use uuid::Uuid;

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The API tables on the store's pool.
#[derive(Debug, Clone)]
pub struct Db {
    pool: DbPool,
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

impl Record for LoginRow {
    fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(LoginRow {
            user_id: parse_uuid(&row.text("user_id")?.unwrap_or_default()),
            password_hash: row.text("password_hash")?.unwrap_or_default(),
            active: row.boolean("active")?.unwrap_or_default(),
        })
    }
}

impl Record for SessionRow {
    fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(SessionRow {
            user_id: parse_uuid(&row.text("user_id")?.unwrap_or_default()),
            role: row.text("role")?.unwrap_or_default(),
            active: row.boolean("active")?.unwrap_or_default(),
            expires_at: row.int0("expires_at")?,
        })
    }
}

/// An idempotency record as stored.
struct IdempotencyRow {
    hash: String,
    status: Option<i64>,
    headers: Option<String>,
    body: Option<String>,
    created_at: i64,
}

impl Record for IdempotencyRow {
    fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(IdempotencyRow {
            hash: row.text("request_hash")?.unwrap_or_default(),
            status: row.int("status")?,
            headers: row.text("headers")?,
            body: row.text("body")?,
            created_at: row.int0("created_at")?,
        })
    }
}

impl Db {
    /// On the store's pool.
    pub fn new(pool: DbPool) -> Self {
        Self { pool }
    }

    async fn run(&self, sql: &str, args: Vec<Arg>) -> Result<u64, sqlx::Error> {
        db::execute(&self.pool, sql, args).await
    }

    /// Set (or replace) a password hash.
    pub async fn set_password(&self, user_id: Uuid, hash: &str) -> Result<(), sqlx::Error> {
        let sql = "INSERT INTO api_credentials (user_id, password_hash, updated_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash, updated_at = excluded.updated_at";
        self.run(
            sql,
            vec![Arg::from(user_id), Arg::from(hash), Arg::from(now())],
        )
        .await?;
        Ok(())
    }

    /// The credentials of a (normalised) email, if it has any.
    pub async fn login(&self, email: &str) -> Result<Option<LoginRow>, sqlx::Error> {
        let sql = "SELECT u.user_id, c.password_hash, u.active FROM api_users u \
                   JOIN api_credentials c ON c.user_id = u.user_id WHERE u.email = $1";
        db::fetch_one(&self.pool, sql, vec![Arg::from(email)]).await
    }

    /// Open a session.
    pub async fn create_session(
        &self,
        token_hash: &str,
        user_id: Uuid,
        expires_at: i64,
    ) -> Result<(), sqlx::Error> {
        let sql = "INSERT INTO api_sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
        let args = vec![
            Arg::from(token_hash),
            Arg::from(user_id),
            Arg::from(now()),
            Arg::from(expires_at),
        ];
        self.run(sql, args).await?;
        Ok(())
    }

    /// The live session of a token hash: not revoked, not expired.
    pub async fn session(&self, token_hash: &str) -> Result<Option<SessionRow>, sqlx::Error> {
        let sql = "SELECT s.user_id, u.role, u.active, s.expires_at FROM api_sessions s \
                   JOIN api_users u ON u.user_id = s.user_id \
                   WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2";
        db::fetch_one(
            &self.pool,
            sql,
            vec![Arg::from(token_hash), Arg::from(now())],
        )
        .await
    }

    /// Revoke one session.
    pub async fn revoke_session(&self, token_hash: &str) -> Result<(), sqlx::Error> {
        self.run(
            "UPDATE api_sessions SET revoked_at = $2 WHERE token_hash = $1",
            vec![Arg::from(token_hash), Arg::from(now())],
        )
        .await?;
        Ok(())
    }

    /// Revoke every session of a user (deactivation, password change) but
    /// the one with `keep` (the caller's own, when they change themselves).
    pub async fn revoke_sessions_of(&self, user_id: Uuid, keep: &str) -> Result<(), sqlx::Error> {
        self.run(
            "UPDATE api_sessions SET revoked_at = $2 \
             WHERE user_id = $1 AND revoked_at IS NULL AND token_hash <> $3",
            vec![Arg::from(user_id), Arg::from(now()), Arg::from(keep)],
        )
        .await?;
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
        let now = now();
        let inserted = self
            .run(
                "INSERT INTO api_idempotency (user_id, idem_key, request_hash, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                vec![
                    Arg::from(user_id),
                    Arg::from(key),
                    Arg::from(request_hash),
                    Arg::from(now),
                ],
            )
            .await?;
        if inserted == 1 {
            return Ok(Idempotency::Started);
        }
        let row = db::fetch_one::<IdempotencyRow>(
            &self.pool,
            "SELECT request_hash, status, headers, body, created_at FROM api_idempotency \
             WHERE user_id = $1 AND idem_key = $2",
            vec![Arg::from(user_id), Arg::from(key)],
        )
        .await?;
        let Some(row) = row else {
            // Purged in between: try once more as a first use.
            return Box::pin(self.begin_idempotent(user_id, key, request_hash, stale_after)).await;
        };
        if row.hash != request_hash {
            return Ok(Idempotency::Mismatch);
        }
        match row.status {
            Some(status) => Ok(Idempotency::Replay(StoredResponse {
                status: u16::try_from(status).unwrap_or(200),
                headers: row
                    .headers
                    .and_then(|h| serde_json::from_str(&h).ok())
                    .unwrap_or_default(),
                body: row.body.unwrap_or_default(),
            })),
            None if now - row.created_at > stale_after => {
                let taken = self
                    .run(
                        "UPDATE api_idempotency SET created_at = $3 \
                         WHERE user_id = $1 AND idem_key = $2 AND status IS NULL AND created_at = $4",
                        vec![
                            Arg::from(user_id),
                            Arg::from(key),
                            Arg::from(now),
                            Arg::from(row.created_at),
                        ],
                    )
                    .await?;
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
        let headers = serde_json::to_string(&response.headers).unwrap_or_else(|_| "[]".into());
        self.run(
            "UPDATE api_idempotency SET status = $3, headers = $4, body = $5 \
             WHERE user_id = $1 AND idem_key = $2",
            vec![
                Arg::from(user_id),
                Arg::from(key),
                Arg::from(i64::from(response.status)),
                Arg::from(headers),
                Arg::from(response.body.as_str()),
            ],
        )
        .await?;
        Ok(())
    }

    /// Release a key whose request failed (it wrote nothing; it may be sent again).
    pub async fn abandon_idempotent(&self, user_id: Uuid, key: &str) -> Result<(), sqlx::Error> {
        self.run(
            "DELETE FROM api_idempotency WHERE user_id = $1 AND idem_key = $2 AND status IS NULL",
            vec![Arg::from(user_id), Arg::from(key)],
        )
        .await?;
        Ok(())
    }

    /// Forget idempotency records and sessions older than `before` (seconds).
    pub async fn purge(&self, idempotency_before: i64) -> Result<(), sqlx::Error> {
        self.run(
            "DELETE FROM api_idempotency WHERE created_at < $1",
            vec![Arg::from(idempotency_before)],
        )
        .await?;
        self.run(
            "DELETE FROM api_sessions WHERE expires_at < $1",
            vec![Arg::from(now())],
        )
        .await?;
        Ok(())
    }
}
