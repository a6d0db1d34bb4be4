//! The one way ledgerdesk runs SQL outside the event writer: a handle on the
//! database ([`DbPool`], which [`EventStore::db`](crate::EventStore::db)
//! gives out), a transaction of either kind ([`Tx`]), dynamically typed bind
//! values ([`Arg`]) and rows read by column name ([`DbRow`]). The store's own
//! tables (Merkle tree, checkpoints), the vault, data subjects, the read
//! models and the API's tables all go through it, so SQL is written once for
//! both backends and no caller holds a backend's raw pool.
//!
//! Both dialects accept `$N` parameters, `INSERT … ON CONFLICT … DO UPDATE`
//! with `excluded.`, row-value comparisons and `ALTER TABLE … RENAME TO`;
//! the one difference the DDL needs is the integer and float type names
//! ([`Dialect::ddl`]).

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Connection, PgPool, Postgres, Row, Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::sync::Arc;
use uuid::Uuid;

/// The database behind a store, for everything that lives beside the log
/// (read models, the vault, the API's tables). Opaque: SQL on it goes
/// through this module's functions, never through a backend's own pool.
#[derive(Debug, Clone)]
pub struct DbPool(pub(crate) Pool, pub(crate) Option<SqliteWrites>);

/// How a SQLite store's writers share its one write lock in this process.
#[derive(Debug, Clone)]
pub(crate) struct SqliteWrites {
    /// Taken by the event writer and by every [`begin_rebuildable`]
    /// transaction for as long as they hold SQLite's write lock, so that
    /// they queue here in order instead of sleeping in SQLite's busy
    /// handler (1, 2, 5, 10 … ms), which is what made request latency's
    /// tail.
    pub gate: Arc<tokio::sync::Mutex<()>>,
    /// Read-model writers hold this for their whole transaction, so at
    /// most one of them holds or waits for the gate: an append (which a
    /// client is waiting for) waits for at most one read-model transaction,
    /// however many projections there are.
    pub behind: Arc<tokio::sync::Mutex<()>>,
    /// Connections whose commits do not wait for the disk
    /// (`synchronous=NORMAL`): for tables rebuilt from the log.
    pub relaxed: SqlitePool,
}

/// The backend's pool, for the store's own code (the writer, advisory locks).
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl DbPool {
    /// Its dialect.
    pub fn dialect(&self) -> Dialect {
        Dialect::of(self)
    }

    /// A SQLite file of its own, apart from the store's database (as-of
    /// builds of a read model); created when `create`.
    pub async fn open_sqlite_file(path: &Path, create: bool) -> Result<Self, sqlx::Error> {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        Ok(DbPool(Pool::Sqlite(pool), None))
    }

    /// Close its connections.
    pub async fn close(&self) {
        match &self.0 {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }

    /// A session of its own for advisory locks, which belong to the
    /// session that took them. On PostgreSQL one connection kept out of the
    /// pool, so that closing it (also by a crash) releases its locks; on
    /// SQLite, where one process writes, there are no sessions and every
    /// lock is granted.
    pub async fn session(&self) -> Result<Session, sqlx::Error> {
        Ok(Session(match &self.0 {
            Pool::Sqlite(_) => None,
            Pool::Postgres(p) => Some(p.acquire().await?.detach()),
        }))
    }
}

/// See [`DbPool::session`].
#[derive(Debug)]
pub struct Session(Option<sqlx::PgConnection>);

impl Session {
    /// Take the advisory lock `key` if it is free; whether it was taken.
    pub async fn try_lock(&mut self, key: i64) -> Result<bool, sqlx::Error> {
        match &mut self.0 {
            None => Ok(true),
            Some(conn) => {
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(&mut *conn)
                    .await
            }
        }
    }

    /// Whether the session still answers (its locks are held while it does).
    pub async fn alive(&mut self) -> bool {
        match &mut self.0 {
            None => true,
            Some(conn) => conn.ping().await.is_ok(),
        }
    }

    /// End the session, which releases its advisory locks.
    pub async fn close(self) {
        if let Some(conn) = self.0 {
            let _ = conn.close().await;
        }
    }
}

/// Which SQL dialect a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Dialect {
    /// The dialect of a pool.
    pub fn of(pool: &DbPool) -> Self {
        match pool.0 {
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
        }
    }

    /// DDL with `{int}` and `{real}` replaced by this dialect's type names.
    /// SQLite's `INTEGER` keeps `INTEGER PRIMARY KEY` a rowid alias.
    pub fn ddl(self, template: &str) -> String {
        let (int, real) = match self {
            Dialect::Sqlite => ("INTEGER", "REAL"),
            Dialect::Postgres => ("BIGINT", "DOUBLE PRECISION"),
        };
        template.replace("{int}", int).replace("{real}", real)
    }

    /// Rows per multi-row statement. SQLite binds by position and, with
    /// plain `?` placeholders (see [`Dialect::placeholders`]), in linear
    /// time, so its statements can be as large as PostgreSQL's.
    fn max_rows(self) -> usize {
        match self {
            Dialect::Sqlite => 1000,
            Dialect::Postgres => 1000,
        }
    }

    /// The most bind parameters one statement may carry (kept under the
    /// engines' limits: 32,766 for SQLite, 65,535 for PostgreSQL).
    fn max_params(self) -> usize {
        match self {
            Dialect::Sqlite => 32_000,
            Dialect::Postgres => 65_000,
        }
    }

    /// `n` placeholders numbered from `from`, as this dialect binds them
    /// fastest: `$N` on PostgreSQL, plain `?` on SQLite. sqlx asks SQLite
    /// for every `$N` parameter's name, which SQLite finds by walking a
    /// list, so a statement of `$N`s costs O(params²) to bind; `?`s have no
    /// names. A statement must not mix both, so only SQL generated whole
    /// here (inserts, `IN` lists) uses this; hand-written SQL keeps `$N`.
    pub fn placeholders(self, from: usize, n: usize) -> String {
        match self {
            Dialect::Postgres => placeholders(from, n),
            Dialect::Sqlite => {
                let mut s = String::with_capacity(n * 3);
                for i in 0..n {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    s.push('?');
                }
                s
            }
        }
    }
}

/// A bind value.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// 64-bit integer (also timestamps, as microseconds since the epoch).
    Int(Option<i64>),
    /// Text (also UUIDs and JSON).
    Text(Option<String>),
    /// Float.
    Real(Option<f64>),
    /// Boolean.
    Bool(Option<bool>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<u64> for Arg {
    fn from(v: u64) -> Self {
        Arg::Int(Some(i64::try_from(v).unwrap_or(i64::MAX)))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_owned()))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<Uuid> for Arg {
    fn from(v: Uuid) -> Self {
        Arg::Text(Some(v.to_string()))
    }
}
impl From<Option<Uuid>> for Arg {
    fn from(v: Option<Uuid>) -> Self {
        Arg::Text(v.map(|v| v.to_string()))
    }
}
impl From<f64> for Arg {
    fn from(v: f64) -> Self {
        Arg::Real(Some(v))
    }
}
impl From<Option<f64>> for Arg {
    fn from(v: Option<f64>) -> Self {
        Arg::Real(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(Some(v))
    }
}
impl From<DateTime<Utc>> for Arg {
    fn from(v: DateTime<Utc>) -> Self {
        Arg::Int(Some(v.timestamp_micros()))
    }
}
impl From<Option<DateTime<Utc>>> for Arg {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        Arg::Int(v.map(|v| v.timestamp_micros()))
    }
}

/// Text as a read model keeps it: NUL becomes U+FFFD (the replacement
/// character).
///
/// A PostgreSQL `TEXT` cannot hold NUL, yet a log may: JSON escapes it
/// (`\u0000`), and logs written before the API refused it exist. A
/// projection must store every valid event, so every text bound by this
/// layer (values written and values searched for alike) goes through here,
/// on both backends so that they answer the same. The log keeps the
/// original; read models are derived and lose only what they cannot hold.
/// Other control characters are valid `TEXT` and are kept, and no read
/// model has a `jsonb` column (JSON is kept as text, where `\u0000` is six
/// plain characters).
pub fn storable(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}")
    } else {
        text
    }
}

macro_rules! bind_args {
    ($query:expr, $args:expr) => {{
        let mut q = $query;
        for arg in $args {
            q = match arg {
                Arg::Int(v) => q.bind(v),
                Arg::Text(v) => q.bind(v.map(storable)),
                Arg::Real(v) => q.bind(v),
                Arg::Bool(v) => q.bind(v),
            };
        }
        q
    }};
}

/// A row of either backend, read by column name.
pub trait DbRow {
    /// An integer column.
    fn int(&self, col: &str) -> Result<Option<i64>, sqlx::Error>;
    /// A text column.
    fn text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    /// A float column.
    fn real(&self, col: &str) -> Result<Option<f64>, sqlx::Error>;
    /// A boolean column.
    fn boolean(&self, col: &str) -> Result<Option<bool>, sqlx::Error>;

    /// A UUID kept as text.
    fn uuid(&self, col: &str) -> Result<Option<Uuid>, sqlx::Error> {
        self.text(col)?
            .map(|s| s.parse().map_err(|e| decode_error(col, e)))
            .transpose()
    }
    /// A timestamp kept as microseconds.
    fn time(&self, col: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        Ok(self.int(col)?.and_then(DateTime::from_timestamp_micros))
    }
    /// An integer that must be present.
    fn int0(&self, col: &str) -> Result<i64, sqlx::Error> {
        Ok(self.int(col)?.unwrap_or_default())
    }
}

fn decode_error(col: &str, e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: col.to_owned(),
        source: e.to_string().into(),
    }
}

macro_rules! impl_db_row {
    ($row:ty) => {
        impl DbRow for $row {
            fn int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(col)
            }
            fn text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(col)
            }
            fn real(&self, col: &str) -> Result<Option<f64>, sqlx::Error> {
                self.try_get(col)
            }
            fn boolean(&self, col: &str) -> Result<Option<bool>, sqlx::Error> {
                self.try_get(col)
            }
        }
    };
}
impl_db_row!(SqliteRow);
impl_db_row!(PgRow);

/// A type read from one row.
pub trait Record: Sized {
    /// Reads it.
    fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error>;
}

/// A transaction on either backend.
pub enum Tx {
    /// SQLite.
    Sqlite(Transaction<'static, Sqlite>),
    /// PostgreSQL.
    Postgres(Transaction<'static, Postgres>),
}

/// Begin a transaction on `pool`.
pub async fn begin(pool: &DbPool) -> Result<Tx, sqlx::Error> {
    Ok(match &pool.0 {
        Pool::Sqlite(p) => Tx::Sqlite(p.begin().await?),
        Pool::Postgres(p) => Tx::Postgres(p.begin().await?),
    })
}

/// Begin a transaction that reads before it writes. On SQLite it takes the
/// write lock at once: a deferred one could not upgrade once another
/// connection had committed (SQLITE_BUSY_SNAPSHOT, which no busy timeout
/// waits out), so a rebuild's pages failed while the live worker ran.
pub async fn begin_write(pool: &DbPool) -> Result<Tx, sqlx::Error> {
    Ok(match &pool.0 {
        Pool::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
        Pool::Postgres(p) => Tx::Postgres(p.begin().await?),
    })
}

/// A write transaction on tables that are rebuilt from the log (read
/// models, their checkpoints): nothing is lost for good if its commit does
/// not reach the disk before a power cut, since the log it was derived from
/// did (and a lost commit takes its checkpoint with it, so the projection
/// applies those events again). Its commit therefore does not wait for the
/// disk: `synchronous=NORMAL` on SQLite, `synchronous_commit = off` on
/// PostgreSQL. A later durable commit (any append) flushes it too, since
/// both backends write their log in order. On SQLite it also takes the
/// process's write gate, then SQLite's write lock at once (`BEGIN
/// IMMEDIATE`, as [`begin_write`] does; `begin_write` itself does not take
/// the gate). For read models and their projection checkpoints only; never
/// for the log, subject keys or signed checkpoints.
pub async fn begin_rebuildable(pool: &DbPool) -> Result<WriteTx, sqlx::Error> {
    match (&pool.0, &pool.1) {
        (Pool::Sqlite(_), Some(writes)) => {
            let behind = writes.behind.clone().lock_owned().await;
            let gate = writes.gate.clone().lock_owned().await;
            let tx = writes.relaxed.begin_with("BEGIN IMMEDIATE").await?;
            Ok(WriteTx {
                tx: Tx::Sqlite(tx),
                _gate: Some((gate, behind)),
            })
        }
        (Pool::Sqlite(_), None) => Ok(WriteTx {
            tx: begin_write(pool).await?,
            _gate: None,
        }),
        (Pool::Postgres(p), _) => {
            let mut tx = p.begin().await?;
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await?;
            Ok(WriteTx {
                tx: Tx::Postgres(tx),
                _gate: None,
            })
        }
    }
}

/// A [`Tx`] from [`begin_rebuildable`], holding the write gate until it
/// commits or is dropped.
pub struct WriteTx {
    tx: Tx,
    /// The gate, then the read-model writers' own queue (see
    /// [`SqliteWrites::behind`]); dropped in this order.
    _gate: Option<(
        tokio::sync::OwnedMutexGuard<()>,
        tokio::sync::OwnedMutexGuard<()>,
    )>,
}

impl WriteTx {
    /// Commit, then open the gate.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = Tx;
    fn deref(&self) -> &Tx {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Tx {
        &mut self.tx
    }
}

impl Tx {
    /// Its dialect.
    pub fn dialect(&self) -> Dialect {
        match self {
            Tx::Sqlite(_) => Dialect::Sqlite,
            Tx::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Run one statement; the number of rows it touched.
    pub fn execute<'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<Arg>,
    ) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
        async move {
            Ok(match self {
                Tx::Sqlite(tx) => bind_args!(sqlx::query(sql), args)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected(),
                Tx::Postgres(tx) => bind_args!(sqlx::query(sql), args)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected(),
            })
        }
        .boxed()
    }

    /// Run a script without parameters, unprepared (see [`script`]).
    pub fn script<'a>(&'a mut self, sql: &'a str) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
        async move {
            Ok(match self {
                // A bare `&str` runs unprepared (simple query) on both.
                Tx::Sqlite(tx) => sqlx::Executor::execute(&mut **tx, sql)
                    .await?
                    .rows_affected(),
                Tx::Postgres(tx) => sqlx::Executor::execute(&mut **tx, sql)
                    .await?
                    .rows_affected(),
            })
        }
        .boxed()
    }

    /// Run several `;`-separated statements without parameters (DDL, whose
    /// text holds no `;` of its own).
    pub async fn batch(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        for statement in sql.split(';') {
            let code = statement
                .lines()
                .map(|l| l.split("--").next().unwrap_or_default())
                .collect::<String>();
            if !code.trim().is_empty() {
                self.execute(statement, vec![]).await?;
            }
        }
        Ok(())
    }

    /// Fetch rows.
    pub fn fetch<'a, T: Record + Send + 'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<Arg>,
    ) -> BoxFuture<'a, Result<Vec<T>, sqlx::Error>> {
        async move {
            match self {
                Tx::Sqlite(tx) => bind_args!(sqlx::query(sql), args)
                    .fetch_all(&mut **tx)
                    .await?
                    .iter()
                    .map(|r| T::read(r))
                    .collect(),
                Tx::Postgres(tx) => bind_args!(sqlx::query(sql), args)
                    .fetch_all(&mut **tx)
                    .await?
                    .iter()
                    .map(|r| T::read(r))
                    .collect(),
            }
        }
        .boxed()
    }

    /// Commit.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }

    /// Insert rows of `columns` into `table`, many rows per statement;
    /// `conflict` is appended to each statement (`""`, `ON CONFLICT … DO …`).
    pub async fn insert(
        &mut self,
        table: &str,
        columns: &[&str],
        conflict: &str,
        rows: Vec<Vec<Arg>>,
    ) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        if let Tx::Postgres(tx) = self {
            if let Some(columns_of) = Columns::of(columns.len(), &rows) {
                return insert_unnest(tx, table, columns, conflict, columns_of, rows).await;
            }
        }
        let per = (self.dialect().max_params() / columns.len()).clamp(1, self.dialect().max_rows());
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<Vec<Arg>> = rows.by_ref().take(per).collect();
            let sql = insert_sql(self.dialect(), table, columns, chunk.len(), conflict);
            self.execute(&sql, chunk.into_iter().flatten().collect())
                .await?;
        }
        Ok(())
    }

    /// Rows of `select` (which ends in `… IN `) for every key of `keys`,
    /// asked in chunks.
    pub async fn fetch_in<T: Record + Send>(
        &mut self,
        select: &str,
        keys: &[String],
    ) -> Result<Vec<T>, sqlx::Error> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(1000) {
            let sql = format!("{select} ({})", self.dialect().placeholders(1, chunk.len()));
            out.extend(
                self.fetch::<T>(&sql, chunk.iter().map(|k| Arg::from(k.as_str())).collect())
                    .await?,
            );
        }
        Ok(out)
    }

    /// Delete the rows whose `column` is one of `keys`.
    pub async fn delete_in(
        &mut self,
        table: &str,
        column: &str,
        keys: &[String],
    ) -> Result<(), sqlx::Error> {
        for chunk in keys.chunks(1000) {
            let sql = format!(
                "DELETE FROM {table} WHERE {column} IN ({})",
                self.dialect().placeholders(1, chunk.len())
            );
            self.execute(&sql, chunk.iter().map(|k| Arg::from(k.as_str())).collect())
                .await?;
        }
        Ok(())
    }
}

/// Rows per `UNNEST` insert on PostgreSQL: one array per column, so the
/// parameter count does not grow with the rows.
const UNNEST_ROWS: usize = 5_000;

/// Rows turned into one array per column, for `INSERT … SELECT * FROM
/// UNNEST($1::…[], …)` on PostgreSQL. The SQL text depends only on the
/// table, the column types and the conflict clause, so it is prepared once
/// and stays in sqlx's statement cache, and PostgreSQL parses and plans
/// one short statement instead of a `VALUES` list of thousands of
/// parameters.
enum Column {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
    Real(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
}

struct Columns(Vec<Column>);

impl Column {
    /// An empty column of the same type, with room for `n` values.
    fn empty(&self, n: usize) -> Column {
        match self {
            Column::Int(_) => Column::Int(Vec::with_capacity(n)),
            Column::Text(_) => Column::Text(Vec::with_capacity(n)),
            Column::Real(_) => Column::Real(Vec::with_capacity(n)),
            Column::Bool(_) => Column::Bool(Vec::with_capacity(n)),
        }
    }
}

impl Columns {
    /// Each column's type (as an empty column), from the first row; `None`
    /// when a row is of another width or a column changes type (then the
    /// rows go as `VALUES`).
    fn of(width: usize, rows: &[Vec<Arg>]) -> Option<Vec<Column>> {
        let first = rows.first()?;
        if first.len() != width {
            return None;
        }
        let kinds: Vec<std::mem::Discriminant<Arg>> =
            first.iter().map(std::mem::discriminant).collect();
        let same = rows.iter().all(|r| {
            r.len() == width
                && r.iter()
                    .zip(&kinds)
                    .all(|(a, k)| std::mem::discriminant(a) == *k)
        });
        if !same {
            return None;
        }
        Some(
            first
                .iter()
                .map(|a| match a {
                    Arg::Int(_) => Column::Int(Vec::new()),
                    Arg::Text(_) => Column::Text(Vec::new()),
                    Arg::Real(_) => Column::Real(Vec::new()),
                    Arg::Bool(_) => Column::Bool(Vec::new()),
                })
                .collect(),
        )
    }

    fn push(&mut self, row: Vec<Arg>) {
        for (column, arg) in self.0.iter_mut().zip(row) {
            match (column, arg) {
                (Column::Int(c), Arg::Int(v)) => c.push(v),
                (Column::Text(c), Arg::Text(v)) => c.push(v.map(storable)),
                (Column::Real(c), Arg::Real(v)) => c.push(v),
                (Column::Bool(c), Arg::Bool(v)) => c.push(v),
                // `Columns::of` checked every row's types.
                _ => {}
            }
        }
    }
}

fn unnest_sql(table: &str, columns: &[&str], types: &[Column], conflict: &str) -> String {
    let arrays: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ty = match c {
                Column::Int(_) => "int8",
                Column::Text(_) => "text",
                Column::Real(_) => "float8",
                Column::Bool(_) => "bool",
            };
            format!("${}::{ty}[]", i + 1)
        })
        .collect();
    let mut sql = format!(
        "INSERT INTO {table} ({}) SELECT * FROM UNNEST({})",
        columns.join(", "),
        arrays.join(", ")
    );
    if !conflict.is_empty() {
        sql.push(' ');
        sql.push_str(conflict);
    }
    sql
}

async fn insert_unnest(
    tx: &mut Transaction<'static, Postgres>,
    table: &str,
    columns: &[&str],
    conflict: &str,
    types: Vec<Column>,
    rows: Vec<Vec<Arg>>,
) -> Result<(), sqlx::Error> {
    let mut rows = rows.into_iter().peekable();
    let mut sql = None;
    while rows.peek().is_some() {
        let n = rows.len().min(UNNEST_ROWS);
        let mut chunk = Columns(types.iter().map(|c| c.empty(n)).collect());
        for row in rows.by_ref().take(n) {
            chunk.push(row);
        }
        let sql: &String =
            sql.get_or_insert_with(|| unnest_sql(table, columns, &chunk.0, conflict));
        let mut q = sqlx::query(sql);
        for column in chunk.0 {
            q = match column {
                Column::Int(v) => q.bind(v),
                Column::Text(v) => q.bind(v),
                Column::Real(v) => q.bind(v),
                Column::Bool(v) => q.bind(v),
            };
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// `$from, $from+1, …` — `n` placeholders.
pub fn placeholders(from: usize, n: usize) -> String {
    let mut s = String::with_capacity(n * 5);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('$');
        s.push_str(&(from + i).to_string());
    }
    s
}

fn insert_sql(
    dialect: Dialect,
    table: &str,
    columns: &[&str],
    rows: usize,
    conflict: &str,
) -> String {
    let width = columns.len();
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&dialect.placeholders(r * width + 1, width));
        sql.push(')');
    }
    if !conflict.is_empty() {
        sql.push(' ');
        sql.push_str(conflict);
    }
    sql
}

/// `ON CONFLICT (key) DO UPDATE SET c = excluded.c, …` for every non-key column.
pub fn upsert_clause(key: &[&str], columns: &[&str]) -> String {
    let set: Vec<String> = columns
        .iter()
        .filter(|c| !key.contains(c))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "ON CONFLICT ({}) DO UPDATE SET {}",
        key.join(", "),
        set.join(", ")
    )
}

/// Fetch rows from a pool. Boxed, like [`Tx::fetch`]: sqlx's executor
/// lifetimes otherwise defeat the compiler's higher-ranked `Send` check on
/// callers' futures (the checkpointer and workers must be spawnable).
pub fn fetch<'a, T: Record + Send + 'a>(
    pool: &'a DbPool,
    sql: &'a str,
    args: Vec<Arg>,
) -> BoxFuture<'a, Result<Vec<T>, sqlx::Error>> {
    async move {
        match &pool.0 {
            Pool::Sqlite(p) => bind_args!(sqlx::query(sql), args)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| T::read(r))
                .collect(),
            Pool::Postgres(p) => bind_args!(sqlx::query(sql), args)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| T::read(r))
                .collect(),
        }
    }
    .boxed()
}

/// The first row, if any.
pub async fn fetch_one<T: Record + Send>(
    pool: &DbPool,
    sql: &str,
    args: Vec<Arg>,
) -> Result<Option<T>, sqlx::Error> {
    Ok(fetch::<T>(pool, sql, args).await?.into_iter().next())
}

/// Run one statement on a pool; the number of rows it touched.
pub fn execute<'a>(
    pool: &'a DbPool,
    sql: &'a str,
    args: Vec<Arg>,
) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
    async move {
        Ok(match &pool.0 {
            Pool::Sqlite(p) => bind_args!(sqlx::query(sql), args)
                .execute(p)
                .await?
                .rows_affected(),
            Pool::Postgres(p) => bind_args!(sqlx::query(sql), args)
                .execute(p)
                .await?
                .rows_affected(),
        })
    }
    .boxed()
}

/// Run a script without parameters, unprepared: several statements, which
/// may hold `;` of their own (trigger bodies), or one-off statements that
/// would only fill the statement cache. The number of rows touched.
pub fn script<'a>(pool: &'a DbPool, sql: &'a str) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
    async move {
        Ok(match &pool.0 {
            Pool::Sqlite(p) => sqlx::raw_sql(sql).execute(p).await?.rows_affected(),
            Pool::Postgres(p) => sqlx::raw_sql(sql).execute(p).await?.rows_affected(),
        })
    }
    .boxed()
}

/// Escape `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern and wrap the
/// text in `%…%`.
pub fn contains_pattern(q: &str) -> String {
    let mut p = String::with_capacity(q.len() + 2);
    p.push('%');
    for ch in q.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

/// Builds a `WHERE` clause and its arguments, numbering placeholders.
#[derive(Default)]
pub struct Where {
    clauses: Vec<String>,
    /// The arguments, in placeholder order.
    pub args: Vec<Arg>,
}

impl Where {
    /// The next placeholder (`$N`) for `arg`.
    pub fn arg(&mut self, arg: impl Into<Arg>) -> String {
        self.args.push(arg.into());
        format!("${}", self.args.len())
    }

    /// Adds a condition built with placeholders from [`Where::arg`].
    pub fn and(&mut self, clause: String) {
        self.clauses.push(clause);
    }

    /// A condition true when one of `columns` contains `text`, ignoring
    /// case. The columns go through the database's `LOWER`, which folds
    /// ASCII everywhere but other letters only on PostgreSQL (by its
    /// locale), never on SQLite. So a text with such letters is tried twice:
    /// lowercased here (for stored text already in lowercase: "über") and as
    /// typed through the same `LOWER` (for the same case as stored:
    /// "Ärger"). ASCII-only text needs one pattern.
    pub fn contains_text(&mut self, columns: &[&str], text: &str) -> String {
        let lowered = text.to_lowercase();
        let mut patterns = vec![self.arg(contains_pattern(&lowered))];
        if lowered != text.to_ascii_lowercase() {
            let typed = self.arg(contains_pattern(text));
            patterns.push(format!("LOWER({typed})"));
        }
        let tests: Vec<String> = columns
            .iter()
            .flat_map(|c| {
                patterns
                    .iter()
                    .map(move |p| format!("LOWER({c}) LIKE {p} ESCAPE '\\'"))
            })
            .collect();
        format!("({})", tests.join(" OR "))
    }

    /// `column IN (…)` for a non-empty list.
    pub fn any_of(&mut self, column: &str, values: Vec<Arg>) {
        if values.is_empty() {
            return;
        }
        let ps: Vec<String> = values.into_iter().map(|v| self.arg(v)).collect();
        self.and(format!("{column} IN ({})", ps.join(", ")));
    }

    /// `column NOT IN (…)` for a non-empty list; rows where `column` is
    /// NULL stay in.
    pub fn none_of(&mut self, column: &str, values: Vec<Arg>) {
        if values.is_empty() {
            return;
        }
        let ps: Vec<String> = values.into_iter().map(|v| self.arg(v)).collect();
        self.and(format!(
            "({column} IS NULL OR {column} NOT IN ({}))",
            ps.join(", ")
        ));
    }

    /// `WHERE …` or nothing.
    pub fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}
