//! The aggregates this process decided on last, so that a command does not
//! read and fold its stream's whole history again.
//!
//! An entry is a hint, never the truth: a command decided on a cached state
//! appends with the cached version as its expected version, so a state made
//! stale by another process (or by an append that went around the cache)
//! is a version conflict, after which the entry is dropped and the command
//! decided again on a fresh load. A refusal or a decision to append nothing
//! is never answered from the cache alone either (see
//! [`Helpdesk::run`](crate::Helpdesk)): those leave no conflict behind to
//! catch a stale state.
//!
//! Only aggregate state is kept, and aggregate state holds no customer
//! personal data (ids of data subjects, never their names or addresses), so
//! an erasure has nothing to take out of it.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Entries kept before the older half is dropped: about 200 bytes of state
/// each for a ticket, so a few megabytes at most.
const CAPACITY: usize = 20_000;

/// A stream's state as of its version.
#[derive(Clone)]
pub(crate) struct Cached<A> {
    pub state: A,
    pub version: u64,
    pub position: u64,
}

/// The state (a `Cached<A>`) and its version, readable without its type.
type Entry = (u64, Arc<dyn Any + Send + Sync>);

/// Two generations: lookups promote from the old one, and when the young
/// one is full the old one is dropped. A bounded, nearly-LRU cache in
/// constant time per operation, without another crate.
#[derive(Default)]
pub(crate) struct AggregateCache {
    inner: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    young: HashMap<String, Entry>,
    old: HashMap<String, Entry>,
}

impl AggregateCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // A panic while holding the lock cannot leave a map half-updated in
        // a way that matters: every entry is only a hint.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached state of `stream_id`, if it is there and of type `A`.
    pub(crate) fn get<A: Clone + Send + Sync + 'static>(
        &self,
        stream_id: &str,
    ) -> Option<Cached<A>> {
        let mut g = self.lock();
        let entry = match g.young.get(stream_id) {
            Some(e) => e.clone(),
            None => {
                let e = g.old.remove(stream_id)?;
                g.insert(stream_id.to_string(), e.clone());
                e
            }
        };
        entry.1.downcast_ref::<Cached<A>>().cloned()
    }

    /// Remember `stream_id` at `version`, unless a newer version is there
    /// already (a load that finished after a later append to the stream).
    pub(crate) fn put<A: Clone + Send + Sync + 'static>(&self, stream_id: &str, cached: Cached<A>) {
        let mut g = self.lock();
        let newer =
            |m: &HashMap<String, Entry>| m.get(stream_id).is_some_and(|e| e.0 > cached.version);
        if newer(&g.young) || newer(&g.old) {
            return;
        }
        g.insert(stream_id.to_string(), (cached.version, Arc::new(cached)));
    }

    /// Forget `stream_id`: its entry is stale, or may be.
    pub(crate) fn evict(&self, stream_id: &str) {
        let mut g = self.lock();
        g.young.remove(stream_id);
        g.old.remove(stream_id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.lock();
        g.young.len() + g.old.len()
    }
}

impl Generations {
    fn insert(&mut self, key: String, entry: Entry) {
        if self.young.len() >= CAPACITY / 2 && !self.young.contains_key(&key) {
            self.old = std::mem::take(&mut self.young);
        }
        self.old.remove(&key);
        self.young.insert(key, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(version: u64) -> Cached<u64> {
        Cached {
            state: version * 10,
            version,
            position: version,
        }
    }

    #[test]
    fn entries_are_found_by_stream_and_type() {
        let cache = AggregateCache::default();
        cache.put("ticket-a", at(3));
        assert_eq!(cache.get::<u64>("ticket-a").map(|c| c.version), Some(3));
        assert!(
            cache.get::<String>("ticket-a").is_none(),
            "another type is a miss"
        );
        assert!(cache.get::<u64>("ticket-b").is_none());
        cache.put("ticket-a", at(4));
        assert_eq!(cache.get::<u64>("ticket-a").map(|c| c.state), Some(40));
        cache.put("ticket-a", at(2));
        assert_eq!(
            cache.get::<u64>("ticket-a").map(|c| c.version),
            Some(4),
            "an older state never replaces a newer one"
        );
        cache.evict("ticket-a");
        assert!(cache.get::<u64>("ticket-a").is_none());
    }

    #[test]
    fn the_cache_stays_bounded_and_keeps_what_was_used_recently() {
        let cache = AggregateCache::default();
        cache.put("hot", at(1));
        for i in 0..(3 * CAPACITY) {
            cache.put(&format!("ticket-{i}"), at(1));
            if i % 1000 == 0 {
                assert!(cache.get::<u64>("hot").is_some(), "a stream in use stays");
            }
        }
        assert!(cache.len() <= CAPACITY, "{} entries", cache.len());
        assert!(cache.get::<u64>("ticket-0").is_none(), "the oldest went");
    }
}
