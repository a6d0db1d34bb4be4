//! `people`: users and departments as their streams have them, for the
//! lists of the API and for names anywhere a read model shows an id.
//!
//! Tables: `people_users` (one row per user: the fold of its stream, as
//! `ledgerdesk_domain::User::apply` defines it) and `people_departments`
//! (one row per department). A page loads the rows it touches, folds the
//! events with the domain's own `apply` and writes the rows back, so the
//! lists can never disagree with what a command sees.
//!
//! What is not derived from events (passwords, sessions, which account is
//! the system one) stays in the API's own tables; queries that must leave
//! an account out take its id.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use ledgerdesk_domain::department::Department;
use ledgerdesk_domain::user::{Presence, Role, User};
use ledgerdesk_domain::{Aggregate, AnyEvent};
use ledgerdesk_store::DbPool;
use serde::Serialize;
use uuid::Uuid;

use crate::db::{self, upsert_clause, Arg, DbRow, Record, Tx};
use crate::projection::{Event, Names as Tables, Projection};
use crate::schema::Table;
use crate::{clamp_limit, Page, ProjectionError};

const TABLES: &[Table] = &[
    Table {
        name: "people_users",
        columns: "
    user_id    TEXT PRIMARY KEY,
    email      TEXT NOT NULL,         -- lowercase
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,         -- agent, admin, auditor
    department TEXT,
    active     {int} NOT NULL,        -- 1, or 0 when deactivated
    logged_in  {int} NOT NULL,
    state      TEXT NOT NULL,         -- available, away, offline
    viewing    TEXT NOT NULL,         -- JSON array of ticket ids
    version    {int} NOT NULL,        -- the user stream's version
    position   {int} NOT NULL         -- the log position of its last event
",
        indexes: &[("people_users_email", "email, user_id")],
    },
    Table {
        name: "people_departments",
        columns: "
    department_id TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    active        {int} NOT NULL,
    version       {int} NOT NULL,
    position      {int} NOT NULL
",
        indexes: &[("people_departments_name", "name, department_id")],
    },
];

const USER_COLUMNS: &[&str] = &[
    "user_id",
    "email",
    "name",
    "role",
    "department",
    "active",
    "logged_in",
    "state",
    "viewing",
    "version",
    "position",
];
const DEPARTMENT_COLUMNS: &[&str] = &["department_id", "name", "active", "version", "position"];

/// A user as the `people` projection has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Person {
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
    /// Whether a session is open.
    pub logged_in: bool,
    /// `available`, `away` or `offline`.
    pub state: String,
    /// Tickets the user is viewing.
    pub viewing: Vec<Uuid>,
    /// The user stream's version.
    pub version: u64,
}

impl Record for Person {
    fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(Person {
            id: r.uuid("user_id")?.unwrap_or_default(),
            email: r.text("email")?.unwrap_or_default(),
            name: r.text("name")?.unwrap_or_default(),
            role: r.text("role")?.unwrap_or_default(),
            department_id: r.uuid("department")?,
            active: r.int0("active")? != 0,
            logged_in: r.int0("logged_in")? != 0,
            state: r.text("state")?.unwrap_or_default(),
            viewing: r
                .text("viewing")?
                .and_then(|v| serde_json::from_str(&v).ok())
                .unwrap_or_default(),
            version: r.int0("version")?.max(0) as u64,
        })
    }
}

impl Person {
    /// The domain state this row was folded to, to fold further events.
    fn state(&self) -> User {
        User {
            id: Some(self.id),
            name: self.name.clone(),
            email: self.email.clone(),
            role: Role::parse(&self.role).unwrap_or_default(),
            department: self.department_id,
            deactivated: !self.active,
            logged_in: self.logged_in,
            presence: Presence::parse(&self.state).unwrap_or_default(),
            viewing: self.viewing.iter().copied().collect(),
        }
    }
}

/// A department as the `people` projection has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DepartmentRow {
    /// The department id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Whether it takes tickets.
    pub active: bool,
    /// The department stream's version.
    pub version: u64,
}

impl Record for DepartmentRow {
    fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(DepartmentRow {
            id: r.uuid("department_id")?.unwrap_or_default(),
            name: r.text("name")?.unwrap_or_default(),
            active: r.int0("active")? != 0,
            version: r.int0("version")?.max(0) as u64,
        })
    }
}

/// The `people` projection.
pub struct PeopleProjection;

#[async_trait]
impl Projection for PeopleProjection {
    fn name(&self) -> &'static str {
        "people"
    }

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    fn wants(&self, stream_type: &str, event_type: &str) -> bool {
        // Failed logins, general actions and audit searches change nothing
        // a list shows; skipping them saves decoding the busiest user events.
        match stream_type {
            "department" => true,
            "user" => !matches!(
                event_type,
                "user.login_failed"
                    | "user.general_action"
                    | "user.audit_searched"
                    | "user.audit_exported"
                    | "user.personal_data_erased"
            ),
            _ => false,
        }
    }

    async fn apply(
        &self,
        events: &[Event],
        names: &Tables,
        tx: &mut Tx,
    ) -> Result<(), ProjectionError> {
        let users_table = names.table("people_users");
        let departments_table = names.table("people_departments");
        let mut user_ids = BTreeSet::new();
        let mut department_ids = BTreeSet::new();
        for e in events {
            match &e.domain {
                Some(AnyEvent::User(u)) => {
                    user_ids.insert(u.user_id().to_string());
                }
                Some(AnyEvent::Department(d)) => {
                    department_ids.insert(d.department_id().to_string());
                }
                _ => {}
            }
        }
        if user_ids.is_empty() && department_ids.is_empty() {
            return Ok(());
        }
        let user_ids: Vec<String> = user_ids.into_iter().collect();
        let department_ids: Vec<String> = department_ids.into_iter().collect();
        // (state, stream version, log position) per id.
        let mut users: BTreeMap<Uuid, (User, u64, u64)> = tx
            .fetch_in::<Person>(
                &format!(
                    "SELECT {} FROM {users_table} WHERE user_id IN",
                    USER_COLUMNS.join(", ")
                ),
                &user_ids,
            )
            .await?
            .into_iter()
            .map(|p| (p.id, (p.state(), p.version, 0)))
            .collect();
        let mut departments: BTreeMap<Uuid, (Department, u64, u64)> = tx
            .fetch_in::<DepartmentRow>(
                &format!(
                    "SELECT {} FROM {departments_table} WHERE department_id IN",
                    DEPARTMENT_COLUMNS.join(", ")
                ),
                &department_ids,
            )
            .await?
            .into_iter()
            .map(|d| {
                let state = Department {
                    id: Some(d.id),
                    name: d.name,
                    deactivated: !d.active,
                };
                (d.id, (state, d.version, 0))
            })
            .collect();
        let mut dirty_users = BTreeSet::new();
        let mut dirty_departments = BTreeSet::new();
        for e in events {
            let (version, position) = (e.record.version, e.record.position);
            match &e.domain {
                Some(AnyEvent::User(u)) => {
                    let id = u.user_id();
                    let entry = users.entry(id).or_default();
                    entry.0 = std::mem::take(&mut entry.0).apply(u);
                    entry.1 = version;
                    entry.2 = position;
                    dirty_users.insert(id);
                }
                Some(AnyEvent::Department(d)) => {
                    let id = d.department_id();
                    let entry = departments.entry(id).or_default();
                    entry.0 = std::mem::take(&mut entry.0).apply(d);
                    entry.1 = version;
                    entry.2 = position;
                    dirty_departments.insert(id);
                }
                _ => {}
            }
        }
        let user_rows = dirty_users
            .iter()
            .filter_map(|id| users.get(id).map(|u| (id, u)))
            // An event for a user whose `user.created` never came has no
            // row to show: the list keeps created users only.
            .filter(|(_, (u, _, _))| u.id.is_some())
            .map(|(id, (u, version, position))| {
                let viewing: Vec<Uuid> = u.viewing.iter().copied().collect();
                vec![
                    Arg::from(*id),
                    u.email.trim().to_lowercase().into(),
                    u.name.clone().into(),
                    u.role.as_str().into(),
                    u.department.into(),
                    i64::from(!u.deactivated).into(),
                    i64::from(u.logged_in).into(),
                    u.presence.as_str().into(),
                    serde_json::to_string(&viewing)
                        .unwrap_or_else(|_| "[]".into())
                        .into(),
                    (*version).into(),
                    (*position).into(),
                ]
            })
            .collect();
        tx.insert(
            &users_table,
            USER_COLUMNS,
            &upsert_clause(&["user_id"], USER_COLUMNS),
            user_rows,
        )
        .await?;
        let department_rows = dirty_departments
            .iter()
            .filter_map(|id| departments.get(id).map(|d| (id, d)))
            .filter(|(_, (d, _, _))| d.id.is_some())
            .map(|(id, (d, version, position))| {
                vec![
                    Arg::from(*id),
                    d.name.clone().into(),
                    i64::from(!d.deactivated).into(),
                    (*version).into(),
                    (*position).into(),
                ]
            })
            .collect();
        tx.insert(
            &departments_table,
            DEPARTMENT_COLUMNS,
            &upsert_clause(&["department_id"], DEPARTMENT_COLUMNS),
            department_rows,
        )
        .await?;
        Ok(())
    }
}

/// Users by email (then id), leaving out the accounts in `hidden` (the
/// system account, which the API keeps apart): a page of at most `limit`
/// (default 50, at most 500) after `cursor`, the previous page's
/// `next_cursor` (keyset on email and id).
pub async fn users(
    pool: &DbPool,
    hidden: &[Uuid],
    limit: Option<usize>,
    cursor: Option<&str>,
) -> Result<Page<Person>, ProjectionError> {
    let limit = clamp_limit(limit);
    let mut w = db::Where::default();
    w.none_of("user_id", hidden.iter().map(|id| Arg::from(*id)).collect());
    if let Some(c) = cursor {
        let (id, email) = decode_cursor(c)?;
        let (pe, pi) = (w.arg(email), w.arg(id));
        w.and(format!("(email, user_id) > ({pe}, {pi})"));
    }
    let limit_arg = w.arg((limit + 1) as i64);
    let sql = format!(
        "SELECT {} FROM people_users {} ORDER BY email, user_id LIMIT {limit_arg}",
        USER_COLUMNS.join(", "),
        w.sql()
    );
    let items = db::fetch(pool, &sql, w.args).await?;
    Ok(page(items, limit, |p: &Person| {
        encode_cursor(p.id, &p.email)
    }))
}

/// `<id>_<sort key>`: an id has no `_`, so the first one splits them.
fn encode_cursor(id: Uuid, key: &str) -> String {
    format!("{id}_{key}")
}

fn decode_cursor(c: &str) -> Result<(Uuid, String), ProjectionError> {
    let (id, key) = c.split_once('_').ok_or(ProjectionError::InvalidCursor)?;
    let id = id.parse().map_err(|_| ProjectionError::InvalidCursor)?;
    Ok((id, key.to_owned()))
}

/// The first `limit` of `items` (fetched one more, to know whether a next
/// page exists) and the cursor after the last of them.
fn page<T>(mut items: Vec<T>, limit: usize, cursor: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(cursor)
    } else {
        None
    };
    Page { items, next_cursor }
}

/// One user, if the projection has it.
pub async fn user(pool: &DbPool, id: Uuid) -> Result<Option<Person>, ProjectionError> {
    let sql = format!(
        "SELECT {} FROM people_users WHERE user_id = $1",
        USER_COLUMNS.join(", ")
    );
    Ok(db::fetch(pool, &sql, vec![id.into()])
        .await?
        .into_iter()
        .next())
}

/// Departments by name (then id): a page of at most `limit` (default 50,
/// at most 500) after `cursor`, the previous page's `next_cursor`.
pub async fn departments(
    pool: &DbPool,
    limit: Option<usize>,
    cursor: Option<&str>,
) -> Result<Page<DepartmentRow>, ProjectionError> {
    let limit = clamp_limit(limit);
    let mut w = db::Where::default();
    if let Some(c) = cursor {
        let (id, name) = decode_cursor(c)?;
        let (pn, pi) = (w.arg(name), w.arg(id));
        w.and(format!("(name, department_id) > ({pn}, {pi})"));
    }
    let limit_arg = w.arg((limit + 1) as i64);
    let sql = format!(
        "SELECT {} FROM people_departments {} ORDER BY name, department_id LIMIT {limit_arg}",
        DEPARTMENT_COLUMNS.join(", "),
        w.sql()
    );
    let items = db::fetch(pool, &sql, w.args).await?;
    Ok(page(items, limit, |d: &DepartmentRow| {
        encode_cursor(d.id, &d.name)
    }))
}

/// Display names of users and departments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// User id → name.
    pub users: HashMap<Uuid, String>,
    /// Department id → name.
    pub departments: HashMap<Uuid, String>,
}

struct IdName(Option<Uuid>, String);

impl Record for IdName {
    fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(IdName(r.uuid("id")?, r.text("name")?.unwrap_or_default()))
    }
}

/// The names of `users` and `departments`, as far as the projection knows
/// them; ids it does not know are absent from the maps.
pub async fn names(
    pool: &DbPool,
    users: &[Uuid],
    departments: &[Uuid],
) -> Result<Names, ProjectionError> {
    async fn lookup(
        pool: &DbPool,
        table: &str,
        key: &str,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, String>, ProjectionError> {
        let ids: BTreeSet<Uuid> = ids.iter().copied().collect();
        let ids: Vec<Uuid> = ids.into_iter().collect();
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "SELECT {key} AS id, name FROM {table} WHERE {key} IN ({})",
                db::placeholders(1, chunk.len())
            );
            let args = chunk.iter().map(|id| Arg::from(*id)).collect();
            for IdName(id, name) in db::fetch::<IdName>(pool, &sql, args).await? {
                if let Some(id) = id {
                    out.insert(id, name);
                }
            }
        }
        Ok(out)
    }
    Ok(Names {
        users: lookup(pool, "people_users", "user_id", users).await?,
        departments: lookup(pool, "people_departments", "department_id", departments).await?,
    })
}
