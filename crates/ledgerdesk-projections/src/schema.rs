//! Tables as DDL templates. The same text creates the live tables (the
//! newest read-model migration, [`MIGRATION`], holds exactly
//! [`migration_sql`]), the shadow tables of a rebuild and the tables of an
//! as-of file.
//!
//! Read models are derived, so a schema change never alters them in place:
//! it ships as a new migration that drops every read-model table and creates
//! them afresh. The workers then find their checkpoints at 0 and rebuild
//! from the log, which also fills columns that did not exist before. Older
//! read-model migrations stay as they were applied (sqlx checks their
//! checksums on every start).
//!
//! Templates use `{int}` / `{real}` for the dialect's type names and
//! `{t}` for the table's (possibly suffixed) name.

use crate::db::Dialect;

/// One table of a projection.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// The live name, e.g. `tickets`.
    pub name: &'static str,
    /// The column list (the inside of `CREATE TABLE t (…)`).
    pub columns: &'static str,
    /// Secondary indexes: (name, column list).
    pub indexes: &'static [(&'static str, &'static str)],
}

impl Table {
    /// `CREATE TABLE` for this table named `name`.
    pub fn create_table(&self, dialect: Dialect, name: &str) -> String {
        format!(
            "CREATE TABLE {name} (\n{}\n);\n",
            dialect.ddl(self.columns.trim_matches('\n'))
        )
    }

    /// `CREATE INDEX` statements on the table named `name`, index names
    /// suffixed with `index_suffix`.
    pub fn create_indexes(&self, name: &str, index_suffix: &str) -> String {
        self.indexes
            .iter()
            .map(|(index, cols)| {
                format!("CREATE INDEX {index}{index_suffix} ON {name} ({cols});\n")
            })
            .collect()
    }
}

/// A projection that stopped on an event it could not apply: one row per
/// failed projection, deleted when a page applies again or a rebuild swaps
/// in. Kept in the database, not only in the worker's memory, so that every
/// process (`ledgerdesk projections status`, other servers' `/readyz`)
/// sees it. Operational state rather than a read model: created by
/// [`Projector::ensure_schema`](crate::Projector::ensure_schema) if absent,
/// outside the read-model migration, and never dropped by an upgrade.
pub const FAILURES: Table = Table {
    name: "projection_failures",
    columns: "
    name       TEXT PRIMARY KEY,   -- the projection
    position   {int} NOT NULL,     -- the log position it cannot apply
    error      TEXT NOT NULL,      -- why, as the database or projection said it
    failed_at  {int} NOT NULL      -- when it was first marked failed (µs)
",
    indexes: &[],
};

/// Where each projection stands.
pub const CHECKPOINTS: Table = Table {
    name: "projection_checkpoints",
    columns: "
    name       TEXT PRIMARY KEY,   -- the projection
    position   {int} NOT NULL,     -- last log position applied
    event_time {int},              -- recorded_at (µs) of the event at `position`
    updated_at {int} NOT NULL      -- when the checkpoint last moved (µs)
",
    indexes: &[],
};

/// The file name, under `migrations/{sqlite,postgres}/`, of the newest
/// read-model migration.
pub const MIGRATION: &str = "0030_read_models.sql";

/// The projections whose tables [`MIGRATION`] creates. A projection added
/// since has tables no database holds yet, so
/// [`Projector::ensure_schema`](crate::Projector::ensure_schema) creates
/// them at start and its worker fills them from position 0: a new read
/// model needs no migration (a changed one still does).
pub const MIGRATED: &[&str] = &["tickets", "audit", "presence", "reports"];

/// The read-model part of the schema: what [`MIGRATION`] of `dialect` runs.
/// It drops the tables an earlier migration created, then creates the
/// current ones.
pub fn migration_sql(dialect: Dialect) -> String {
    let tables: Vec<Table> = std::iter::once(CHECKPOINTS)
        .chain(
            crate::builtin()
                .iter()
                .filter(|p| MIGRATED.contains(&p.name()))
                .flat_map(|p| p.tables().iter().copied()),
        )
        .collect();
    let mut sql = String::new();
    for t in tables.iter().rev() {
        sql.push_str(&format!("DROP TABLE IF EXISTS {};\n", t.name));
    }
    for t in &tables {
        sql.push('\n');
        sql.push_str(&t.create_table(dialect, t.name));
        sql.push_str(&t.create_indexes(t.name, ""));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "\
-- Read models: projections of the event log, rebuildable from it at any time
-- (docs/projections.md). Generated from crates/ledgerdesk-projections
-- (schema::migration_sql); a unit test keeps the two identical.
-- Timestamps are microseconds since the Unix epoch (UTC), ids are UUID text.
-- Replaces the tables of 0003_read_models.sql (added: tickets.data_subject
-- for erasure, the audit_log (actor_id, action, position) index). Checkpoints
-- start again at 0, so the projection workers rebuild every table from the log.
";

    fn strip(sql: &str) -> String {
        sql.lines()
            .map(|l| l.split("--").next().unwrap_or_default().trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn table_templates_hold_no_semicolon() {
        // `Tx::batch` splits DDL on `;`: one in a column comment breaks
        // every shadow rebuild and ensure_schema of that table.
        for p in crate::builtin() {
            for t in p.tables() {
                assert!(!t.columns.contains(';'), "{}: `;` in {}", p.name(), t.name);
            }
        }
    }

    #[test]
    fn migrations_hold_exactly_the_crate_schema() {
        // `LEDGERDESK_WRITE_MIGRATIONS=1 cargo test -p ledgerdesk-projections`
        // regenerates the files after a schema change.
        if std::env::var_os("LEDGERDESK_WRITE_MIGRATIONS").is_some() {
            for (dir, dialect) in [("sqlite", Dialect::Sqlite), ("postgres", Dialect::Postgres)] {
                let path = format!(
                    "{}/../../migrations/{dir}/{MIGRATION}",
                    env!("CARGO_MANIFEST_DIR")
                );
                std::fs::write(path, format!("{HEADER}\n{}", migration_sql(dialect))).unwrap();
            }
        }
        let files = [
            (
                Dialect::Sqlite,
                include_str!("../../../migrations/sqlite/0030_read_models.sql"),
            ),
            (
                Dialect::Postgres,
                include_str!("../../../migrations/postgres/0030_read_models.sql"),
            ),
        ];
        for (dialect, file) in files {
            let expected = migration_sql(dialect);
            assert_eq!(
                strip(file),
                strip(&expected),
                "migrations/{dialect:?}/{MIGRATION} is out of date; it should read:\n{expected}"
            );
        }
    }
}
