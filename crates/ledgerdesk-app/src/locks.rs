//! One writer per stream per process.
//!
//! Commands on one stream from one process would otherwise race each other
//! through the store's version check, and under load most of them would lose
//! and burn their retries. Queueing them here leaves the version check (and
//! the retries) to what it is for: writers in other processes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::OwnedMutexGuard;

/// Per-stream async locks, forgotten once nobody holds or waits for them.
#[derive(Debug, Default)]
pub(crate) struct StreamLocks {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

/// Held while a command on its streams is decided and appended.
pub(crate) struct StreamGuard {
    _guards: Vec<OwnedMutexGuard<()>>,
}

impl StreamLocks {
    /// Locks `streams`, always in sorted order so two commands locking the
    /// same pair (merge a→b while b→a) cannot deadlock.
    pub(crate) async fn lock(&self, streams: &[&str]) -> StreamGuard {
        let mut names: Vec<&str> = streams.to_vec();
        names.sort_unstable();
        names.dedup();
        let mutexes: Vec<_> = names.iter().map(|name| self.mutex(name)).collect();
        let mut guards = Vec::with_capacity(mutexes.len());
        for mutex in mutexes {
            guards.push(mutex.lock_owned().await);
        }
        StreamGuard { _guards: guards }
    }

    fn mutex(&self, stream: &str) -> Arc<tokio::sync::Mutex<()>> {
        // A poisoned map only means another thread panicked while inserting;
        // its entries are still usable.
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mutex) = locks.get(stream).and_then(Weak::upgrade) {
            return mutex;
        }
        if locks.len() >= 1024 {
            locks.retain(|_, weak| weak.strong_count() > 0);
        }
        let mutex = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(stream.to_string(), Arc::downgrade(&mutex));
        mutex
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_stream_and_forgotten_when_free() {
        let locks = StreamLocks::default();
        let held = locks.lock(&["ticket-b", "ticket-a"]).await;
        let other = locks.lock(&["ticket-c"]).await;
        let blocked = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            locks.lock(&["ticket-a"]),
        )
        .await;
        assert!(blocked.is_err(), "ticket-a was locked twice");
        drop((held, other));
        let _again = locks.lock(&["ticket-a", "ticket-a"]).await;
        let live = locks.locks.lock().unwrap();
        assert_eq!(live.values().filter(|w| w.strong_count() > 0).count(), 1);
    }
}
