//! Rebuilds running in this process, for the console's progress bar: a
//! component of [`crate::state::AppState`], so it sits below the routes
//! that start rebuilds.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Events done and to do, per projection being rebuilt.
#[derive(Debug, Default)]
pub struct Rebuilds(Mutex<HashMap<String, (u64, u64)>>);

impl Rebuilds {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (u64, u64)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `(done, total)` of the running rebuild of `name`.
    pub fn progress(&self, name: &str) -> Option<(u64, u64)> {
        self.lock().get(name).copied()
    }

    /// Claim the rebuild of `name`: false when one is already running.
    /// Only the caller that claimed it may [`finish`](Self::finish) it.
    pub fn try_start(&self, name: &str) -> bool {
        let mut running = self.lock();
        if running.contains_key(name) {
            return false;
        }
        running.insert(name.to_string(), (0, 0));
        true
    }

    /// Record how far the rebuild of `name` has come.
    pub fn set(&self, name: &str, done: u64, total: u64) {
        self.lock().insert(name.to_string(), (done, total));
    }

    /// The rebuild of `name` ended (done or failed).
    pub fn finish(&self, name: &str) {
        self.lock().remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rebuild_per_projection_at_a_time() {
        let r = Rebuilds::default();
        assert!(r.try_start("audit"));
        assert!(!r.try_start("audit"));
        assert!(r.try_start("tickets"));
        r.set("audit", 5, 10);
        assert_eq!(r.progress("audit"), Some((5, 10)));
        r.finish("audit");
        assert_eq!(r.progress("audit"), None);
        assert!(r.try_start("audit"));
    }
}
