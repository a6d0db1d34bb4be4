//! `presence`: each user's availability now, the tickets they are viewing,
//! and time spent available, away and logged in per UTC day.
//!
//! Tables: `presence_agents` (one row per user), `presence_viewing` (one row
//! per user and ticket open now) and `presence_daily` (closed intervals,
//! in µs, per user and day; [`daily`] adds the open ones up to `now`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use ledgerdesk_domain::user::Presence;
use ledgerdesk_domain::{AnyEvent, UserEvent};
use ledgerdesk_store::DbPool;
use serde::Serialize;
use uuid::Uuid;

use crate::db::{self, upsert_clause, Arg, DbRow, Record, Tx, Where};
use crate::projection::{Event, Names, Projection};
use crate::schema::Table;
use crate::ProjectionError;

const TABLES: &[Table] = &[
    Table {
        name: "presence_agents",
        columns: "
    user_id     TEXT PRIMARY KEY,
    name        TEXT,
    state       TEXT NOT NULL,        -- available, away or offline
    logged_in   BOOLEAN NOT NULL,
    state_since {int},                -- µs
    login_since {int},                -- µs, while logged in
    updated_at  {int} NOT NULL
",
        indexes: &[("presence_agents_state", "state")],
    },
    Table {
        name: "presence_viewing",
        columns: "
    user_id   TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    since     {int} NOT NULL,
    PRIMARY KEY (user_id, ticket_id)
",
        indexes: &[("presence_viewing_ticket", "ticket_id")],
    },
    Table {
        name: "presence_daily",
        columns: "
    user_id      TEXT NOT NULL,
    day          TEXT NOT NULL,       -- YYYY-MM-DD, UTC
    available_us {int} NOT NULL,
    away_us      {int} NOT NULL,
    logged_in_us {int} NOT NULL,
    PRIMARY KEY (user_id, day)
",
        indexes: &[],
    },
];

const AGENT_COLUMNS: &[&str] = &[
    "user_id",
    "name",
    "state",
    "logged_in",
    "state_since",
    "login_since",
    "updated_at",
];

/// One user's presence now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentPresence {
    /// The user.
    pub user_id: Uuid,
    /// Their name.
    pub name: Option<String>,
    /// `available`, `away` or `offline`.
    pub state: String,
    /// Whether a session is open.
    pub logged_in: bool,
    /// Since when in `state`.
    pub state_since: Option<DateTime<Utc>>,
    /// Since when logged in.
    pub login_since: Option<DateTime<Utc>>,
    /// Tickets open in their view now.
    pub viewing: Vec<Uuid>,
    /// Last presence event.
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Agent {
    name: Option<String>,
    state: Presence,
    logged_in: bool,
    state_since: Option<i64>,
    login_since: Option<i64>,
    updated_at: i64,
}

impl Default for Agent {
    fn default() -> Self {
        Agent {
            name: None,
            state: Presence::Offline,
            logged_in: false,
            state_since: None,
            login_since: None,
            updated_at: 0,
        }
    }
}

struct AgentRow(Uuid, Agent);

impl Record for AgentRow {
    fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(AgentRow(
            r.uuid("user_id")?.unwrap_or_default(),
            Agent {
                name: r.text("name")?,
                state: r
                    .text("state")?
                    .and_then(|s| Presence::parse(&s).ok())
                    .unwrap_or(Presence::Offline),
                logged_in: r.boolean("logged_in")?.unwrap_or(false),
                state_since: r.int("state_since")?,
                login_since: r.int("login_since")?,
                updated_at: r.int0("updated_at")?,
            },
        ))
    }
}

struct ViewingRow(Uuid, Uuid, i64);

impl Record for ViewingRow {
    fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(ViewingRow(
            r.uuid("user_id")?.unwrap_or_default(),
            r.uuid("ticket_id")?.unwrap_or_default(),
            r.int0("since")?,
        ))
    }
}

const DAY_US: i64 = 86_400_000_000;

/// Split `[from, to)` (µs) into (day, µs) pieces at UTC midnights.
fn by_day(from: i64, to: i64) -> Vec<(NaiveDate, i64)> {
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        let next = (t.div_euclid(DAY_US) + 1) * DAY_US;
        let end = next.min(to);
        if let Some(day) = DateTime::from_timestamp_micros(t) {
            out.push((day.date_naive(), end - t));
        }
        t = end;
    }
    out
}

#[derive(Default, Clone, Copy)]
struct Totals {
    available: i64,
    away: i64,
    logged_in: i64,
}

enum Bucket {
    State(Presence),
    LoggedIn,
}

fn add(
    totals: &mut BTreeMap<(Uuid, NaiveDate), Totals>,
    user: Uuid,
    bucket: Bucket,
    from: Option<i64>,
    to: i64,
) {
    let Some(from) = from else { return };
    for (day, us) in by_day(from, to) {
        let t = totals.entry((user, day)).or_default();
        match bucket {
            Bucket::State(Presence::Available) => t.available += us,
            Bucket::State(Presence::Away) => t.away += us,
            Bucket::State(Presence::Offline) => {}
            Bucket::LoggedIn => t.logged_in += us,
        }
    }
}

/// The `presence` projection.
pub struct PresenceProjection;

#[async_trait]
impl Projection for PresenceProjection {
    fn name(&self) -> &'static str {
        "presence"
    }

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    fn wants(&self, stream_type: &str, _: &str) -> bool {
        stream_type == "user"
    }

    async fn apply(
        &self,
        events: &[Event],
        names: &Names,
        tx: &mut Tx,
    ) -> Result<(), ProjectionError> {
        let agents_table = names.table("presence_agents");
        let viewing_table = names.table("presence_viewing");
        let daily_table = names.table("presence_daily");
        let ids: BTreeSet<Uuid> = events
            .iter()
            .filter_map(|e| match &e.domain {
                Some(AnyEvent::User(u)) => Some(u.user_id()),
                _ => None,
            })
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let mut agents: HashMap<Uuid, Agent> = tx
            .fetch_in::<AgentRow>(
                &format!(
                    "SELECT {} FROM {agents_table} WHERE user_id IN",
                    AGENT_COLUMNS.join(", ")
                ),
                &keys,
            )
            .await?
            .into_iter()
            .map(|AgentRow(id, a)| (id, a))
            .collect();
        let mut viewing: HashMap<Uuid, BTreeMap<Uuid, i64>> = HashMap::new();
        for ViewingRow(user, ticket, since) in tx
            .fetch_in::<ViewingRow>(
                &format!("SELECT user_id, ticket_id, since FROM {viewing_table} WHERE user_id IN"),
                &keys,
            )
            .await?
        {
            viewing.entry(user).or_default().insert(ticket, since);
        }
        let mut totals = BTreeMap::new();
        let mut viewing_dirty = BTreeSet::new();
        for e in events {
            let Some(AnyEvent::User(u)) = &e.domain else {
                continue;
            };
            let at = e.at();
            let id = u.user_id();
            let a = agents.entry(id).or_default();
            a.updated_at = at;
            match u {
                UserEvent::Created { name, .. } => a.name = Some(name.clone()),
                UserEvent::Updated { name, .. } => {
                    if let Some(n) = name {
                        a.name = Some(n.after.clone());
                    }
                }
                UserEvent::LoggedIn { .. } => {
                    if !a.logged_in {
                        a.logged_in = true;
                        a.login_since = Some(at);
                    }
                }
                UserEvent::LoggedOut { .. } => {
                    add(&mut totals, id, Bucket::State(a.state), a.state_since, at);
                    add(&mut totals, id, Bucket::LoggedIn, a.login_since, at);
                    a.state = Presence::Offline;
                    a.state_since = Some(at);
                    a.logged_in = false;
                    a.login_since = None;
                    if viewing.remove(&id).is_some() {
                        viewing_dirty.insert(id);
                    }
                }
                UserEvent::StateChanged { to, .. } => {
                    add(&mut totals, id, Bucket::State(a.state), a.state_since, at);
                    a.state = *to;
                    a.state_since = Some(at);
                }
                UserEvent::ViewingTicket { ticket_id, .. } => {
                    viewing
                        .entry(id)
                        .or_default()
                        .entry(*ticket_id)
                        .or_insert(at);
                    viewing_dirty.insert(id);
                }
                UserEvent::LeftTicket { ticket_id, .. } => {
                    if let Some(v) = viewing.get_mut(&id) {
                        v.remove(ticket_id);
                    }
                    viewing_dirty.insert(id);
                }
                UserEvent::LoginFailed { .. }
                | UserEvent::GeneralAction { .. }
                | UserEvent::AuditSearched { .. }
                | UserEvent::AuditExported { .. }
                | UserEvent::PersonalDataErased { .. } => {}
            }
        }
        let rows = agents
            .iter()
            .filter(|(id, _)| ids.contains(id))
            .map(|(id, a)| {
                vec![
                    Arg::from(*id),
                    a.name.clone().into(),
                    a.state.as_str().into(),
                    a.logged_in.into(),
                    a.state_since.into(),
                    a.login_since.into(),
                    a.updated_at.into(),
                ]
            })
            .collect();
        tx.insert(
            &agents_table,
            AGENT_COLUMNS,
            &upsert_clause(&["user_id"], AGENT_COLUMNS),
            rows,
        )
        .await?;
        if !viewing_dirty.is_empty() {
            let keys: Vec<String> = viewing_dirty.iter().map(Uuid::to_string).collect();
            tx.delete_in(&viewing_table, "user_id", &keys).await?;
            let rows = viewing_dirty
                .iter()
                .flat_map(|u| {
                    viewing.get(u).into_iter().flatten().map(move |(t, since)| {
                        vec![Arg::from(*u), Arg::from(*t), Arg::from(*since)]
                    })
                })
                .collect();
            tx.insert(&viewing_table, &["user_id", "ticket_id", "since"], "", rows)
                .await?;
        }
        let rows = totals
            .iter()
            .map(|((user, day), t)| {
                vec![
                    Arg::from(*user),
                    Arg::from(day.to_string()),
                    t.available.into(),
                    t.away.into(),
                    t.logged_in.into(),
                ]
            })
            .collect();
        let conflict = format!(
            "ON CONFLICT (user_id, day) DO UPDATE SET \
             available_us = {daily_table}.available_us + excluded.available_us, \
             away_us = {daily_table}.away_us + excluded.away_us, \
             logged_in_us = {daily_table}.logged_in_us + excluded.logged_in_us"
        );
        tx.insert(
            &daily_table,
            &["user_id", "day", "available_us", "away_us", "logged_in_us"],
            &conflict,
            rows,
        )
        .await?;
        Ok(())
    }
}

/// Every user's presence now, by name.
pub async fn agents(pool: &DbPool) -> Result<Vec<AgentPresence>, ProjectionError> {
    let rows: Vec<AgentRow> = db::fetch(
        pool,
        &format!(
            "SELECT {} FROM presence_agents ORDER BY name, user_id",
            AGENT_COLUMNS.join(", ")
        ),
        vec![],
    )
    .await?;
    let viewing: Vec<ViewingRow> = db::fetch(
        pool,
        "SELECT user_id, ticket_id, since FROM presence_viewing ORDER BY since, ticket_id",
        vec![],
    )
    .await?;
    let mut by_user: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for ViewingRow(u, t, _) in viewing {
        by_user.entry(u).or_default().push(t);
    }
    Ok(rows
        .into_iter()
        .map(|AgentRow(id, a)| AgentPresence {
            user_id: id,
            name: a.name,
            state: a.state.as_str().to_owned(),
            logged_in: a.logged_in,
            state_since: a.state_since.and_then(DateTime::from_timestamp_micros),
            login_since: a.login_since.and_then(DateTime::from_timestamp_micros),
            viewing: by_user.remove(&id).unwrap_or_default(),
            updated_at: DateTime::from_timestamp_micros(a.updated_at).unwrap_or_default(),
        })
        .collect())
}

/// Users viewing `ticket` now.
pub async fn viewers(pool: &DbPool, ticket: Uuid) -> Result<Vec<Uuid>, ProjectionError> {
    let rows: Vec<ViewingRow> = db::fetch(
        pool,
        "SELECT user_id, ticket_id, since FROM presence_viewing WHERE ticket_id = $1 ORDER BY since, user_id",
        vec![ticket.into()],
    )
    .await?;
    Ok(rows.into_iter().map(|ViewingRow(u, _, _)| u).collect())
}

/// Seconds one user spent available, away and logged in on one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PresenceDay {
    /// The user.
    pub user_id: Uuid,
    /// The day (UTC).
    pub day: NaiveDate,
    /// Seconds available.
    pub available_seconds: f64,
    /// Seconds away.
    pub away_seconds: f64,
    /// Seconds logged in.
    pub logged_in_seconds: f64,
}

struct DailyRow(Uuid, String, Totals);

impl Record for DailyRow {
    fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(DailyRow(
            r.uuid("user_id")?.unwrap_or_default(),
            r.text("day")?.unwrap_or_default(),
            Totals {
                available: r.int0("available_us")?,
                away: r.int0("away_us")?,
                logged_in: r.int0("logged_in_us")?,
            },
        ))
    }
}

/// Time per user and day for days `from..=to` (UTC), optionally for one
/// user. Intervals still open (an agent available right now) count up to
/// `now`.
pub async fn daily(
    pool: &DbPool,
    user: Option<Uuid>,
    from: NaiveDate,
    to: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Vec<PresenceDay>, ProjectionError> {
    let mut w = Where::default();
    let (pf, pt) = (w.arg(from.to_string()), w.arg(to.to_string()));
    w.and(format!("day >= {pf} AND day <= {pt}"));
    if let Some(u) = user {
        let p = w.arg(u);
        w.and(format!("user_id = {p}"));
    }
    let rows: Vec<DailyRow> = db::fetch(
        pool,
        &format!(
            "SELECT user_id, day, available_us, away_us, logged_in_us FROM presence_daily {}",
            w.sql()
        ),
        w.args,
    )
    .await?;
    let mut totals: BTreeMap<(Uuid, NaiveDate), Totals> = BTreeMap::new();
    for DailyRow(u, day, t) in rows {
        if let Ok(day) = day.parse::<NaiveDate>() {
            let e = totals.entry((u, day)).or_default();
            e.available += t.available;
            e.away += t.away;
            e.logged_in += t.logged_in;
        }
    }
    let now_us = now.timestamp_micros();
    let mut open = BTreeMap::new();
    for AgentRow(id, a) in db::fetch::<AgentRow>(
        pool,
        &format!("SELECT {} FROM presence_agents", AGENT_COLUMNS.join(", ")),
        vec![],
    )
    .await?
    {
        if user.is_some_and(|u| u != id) {
            continue;
        }
        add(&mut open, id, Bucket::State(a.state), a.state_since, now_us);
        if a.logged_in {
            add(&mut open, id, Bucket::LoggedIn, a.login_since, now_us);
        }
    }
    for ((u, day), t) in open {
        if day >= from && day <= to {
            let e = totals.entry((u, day)).or_default();
            e.available += t.available;
            e.away += t.away;
            e.logged_in += t.logged_in;
        }
    }
    Ok(totals
        .into_iter()
        .map(|((user_id, day), t)| PresenceDay {
            user_id,
            day,
            available_seconds: t.available as f64 / 1e6,
            away_seconds: t.away as f64 / 1e6,
            logged_in_seconds: t.logged_in as f64 / 1e6,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_split_at_utc_midnight() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap().timestamp_micros();
        let parts = by_day(t("2024-01-01T23:00:00Z"), t("2024-01-02T01:30:00Z"));
        assert_eq!(
            parts,
            vec![
                ("2024-01-01".parse().unwrap(), 3_600_000_000),
                ("2024-01-02".parse().unwrap(), 5_400_000_000)
            ]
        );
        assert!(by_day(5, 5).is_empty());
    }
}
