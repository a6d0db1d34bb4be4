//! Accounts (the `api_users` table of migration `0010_api.sql`): the email
//! reservation that keeps login emails unique, the system flag, and the
//! role and activity that sessions are checked against at once (a
//! deactivation must not wait for a projection). The user stream stays the
//! record; the app writes these rows around its user commands. The name and
//! department columns are no longer read (the `people` projection has
//! them); landed migrations stay as they are.

use uuid::Uuid;

use crate::db::{self, Arg, DbPool, DbRow, Record};

/// An account to reserve before the user's first event is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The user id.
    pub id: Uuid,
    /// Login email, normalised (trimmed, lowercase).
    pub email: String,
    /// Display name, as created.
    pub name: String,
    /// `agent`, `admin` or `auditor`.
    pub role: String,
    /// Home department, as created.
    pub department_id: Option<Uuid>,
    /// The system account, which records what happens to unknown accounts.
    pub system: bool,
}

/// One text column named `id`.
struct Id(String);

impl Record for Id {
    fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(Id(row.text("id")?.unwrap_or_default()))
    }
}

/// One integer column named `n`.
struct Count(i64);

impl Record for Count {
    fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(Count(row.int0("n")?))
    }
}

fn parse(id: &str) -> Uuid {
    Uuid::parse_str(id).unwrap_or_default()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// How many accounts exist (the system account included).
pub async fn count(pool: &DbPool) -> Result<i64, sqlx::Error> {
    let n = db::fetch_one::<Count>(pool, "SELECT COUNT(*) AS n FROM api_users", vec![]).await?;
    Ok(n.map_or(0, |c| c.0))
}

/// Reserve an account, active; false if the email is taken.
pub async fn reserve(pool: &DbPool, r: &Reservation) -> Result<bool, sqlx::Error> {
    let sql = "INSERT INTO api_users (user_id, email, name, role, department_id, active, system, created_at) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING";
    let args = vec![
        Arg::from(r.id),
        Arg::from(r.email.as_str()),
        Arg::from(r.name.as_str()),
        Arg::from(r.role.as_str()),
        Arg::from(r.department_id),
        Arg::from(true),
        Arg::from(r.system),
        Arg::from(now()),
    ];
    Ok(db::execute(pool, sql, args).await? == 1)
}

/// Remove a reserved account whose creation was refused (and any
/// credentials it was given).
pub async fn release(pool: &DbPool, id: Uuid) -> Result<(), sqlx::Error> {
    let mut tx = db::begin(pool).await?;
    tx.execute(
        "DELETE FROM api_credentials WHERE user_id = $1",
        vec![Arg::from(id)],
    )
    .await?;
    tx.execute(
        "DELETE FROM api_users WHERE user_id = $1",
        vec![Arg::from(id)],
    )
    .await?;
    tx.commit().await
}

/// Copy a user's role and activity (from its stream) into its account.
pub async fn set_access(
    pool: &DbPool,
    id: Uuid,
    role: &str,
    active: bool,
) -> Result<(), sqlx::Error> {
    db::execute(
        pool,
        "UPDATE api_users SET role = $2, active = $3 WHERE user_id = $1",
        vec![Arg::from(id), Arg::from(role), Arg::from(active)],
    )
    .await?;
    Ok(())
}

/// The system account.
pub async fn system_user(pool: &DbPool) -> Result<Option<Uuid>, sqlx::Error> {
    let sql = "SELECT user_id AS id FROM api_users WHERE system = TRUE LIMIT 1";
    let row = db::fetch_one::<Id>(pool, sql, vec![]).await?;
    Ok(row.map(|id| parse(&id.0)))
}

/// The account of a (normalised) email, the system account aside.
pub async fn by_email(pool: &DbPool, email: &str) -> Result<Option<Uuid>, sqlx::Error> {
    let sql = "SELECT user_id AS id FROM api_users WHERE email = $1 AND system = FALSE";
    let row = db::fetch_one::<Id>(pool, sql, vec![Arg::from(email)]).await?;
    Ok(row.map(|id| parse(&id.0)))
}
