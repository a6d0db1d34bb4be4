//! The right to run one projection (or one rebuild) across processes.

use ledgerdesk_store::DbPool;

use crate::db;

/// The advisory-lock key of a lease: FNV-1a of the name, stable across
/// processes and builds.
pub fn lease_key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "ledgerdesk.projection:".bytes().chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// The right to run one projection: on PostgreSQL a session-level advisory
/// lock held by a dedicated connection; on SQLite always granted.
pub(super) struct Lease {
    key: i64,
    conn: Option<db::Session>,
    held: bool,
}

impl Lease {
    pub(super) fn new(projection: &str) -> Self {
        Self::named(projection)
    }

    pub(super) fn named(name: &str) -> Self {
        Lease {
            key: lease_key(name),
            conn: None,
            held: false,
        }
    }

    pub(super) async fn acquire(&mut self, pool: &DbPool) -> Result<bool, sqlx::Error> {
        if self.conn.is_none() {
            self.conn = Some(pool.session().await?);
        }
        let conn = self.conn.as_mut().expect("session just set");
        let got = conn.try_lock(self.key).await?;
        self.held = got;
        Ok(got)
    }

    pub(super) async fn alive(&mut self) -> bool {
        match &mut self.conn {
            None => self.held,
            Some(conn) => self.held && conn.alive().await,
        }
    }

    pub(super) async fn release(&mut self) {
        self.held = false;
        if let Some(conn) = self.conn.take() {
            // Closing the session releases its advisory locks.
            conn.close().await;
        }
    }
}
