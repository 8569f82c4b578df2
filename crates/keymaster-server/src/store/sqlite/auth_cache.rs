//! SQLite: the credentials of app keys and services, kept in memory after their first use, so
//! that a request does not read the database to authenticate.
//!
//! Exact, not a time-limited cache: one process owns the database file (`SqliteStore::open`
//! holds a lock on it), so every change to credentials goes through this store, and deleting an
//! app key or a service empties the cache once the deletion is committed, before it is
//! acknowledged. A lookup that began before a deletion cannot put the deleted entry back: each
//! fill carries the generation it read under, and a deletion moves the generation on. Unknown
//! tokens are never cached. Keys are token hashes (SHA-256), as in the database.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::{AppKeyAuth, ServiceAuth};

/// Most entries of each kind; past it the cache starts empty again.
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct AuthCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    apps: HashMap<Vec<u8>, AppKeyAuth>,
    services: HashMap<Vec<u8>, ServiceAuth>,
}

/// What a lookup found in the cache: the entry, or the generation to fill under.
pub enum Cached<T> {
    Hit(T),
    Miss(u64),
}

impl AuthCache {
    pub fn app(&self, hash: &[u8]) -> Cached<AppKeyAuth> {
        let inner = self.lock();
        match inner.apps.get(hash) {
            Some(a) => Cached::Hit(a.clone()),
            None => Cached::Miss(inner.generation),
        }
    }

    pub fn service(&self, hash: &[u8]) -> Cached<ServiceAuth> {
        let inner = self.lock();
        match inner.services.get(hash) {
            Some(s) => Cached::Hit(s.clone()),
            None => Cached::Miss(inner.generation),
        }
    }

    /// Remembers an app key read from the database under `generation`.
    pub fn fill_app(&self, generation: u64, hash: &[u8], auth: &AppKeyAuth) {
        let mut inner = self.lock();
        if inner.generation == generation {
            if inner.apps.len() >= MAX_ENTRIES {
                inner.apps.clear();
            }
            inner.apps.insert(hash.to_vec(), auth.clone());
        }
    }

    /// Remembers a service read from the database under `generation`.
    pub fn fill_service(&self, generation: u64, hash: &[u8], auth: &ServiceAuth) {
        let mut inner = self.lock();
        if inner.generation == generation {
            if inner.services.len() >= MAX_ENTRIES {
                inner.services.clear();
            }
            inner.services.insert(hash.to_vec(), auth.clone());
        }
    }

    /// Forgets everything: called after an app key or a service was deleted.
    pub fn invalidate(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.apps.clear();
        inner.services.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain maps behind; nothing half-done.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str) -> AppKeyAuth {
        AppKeyAuth {
            id: id.into(),
            tenant_id: "ten_1".into(),
        }
    }

    #[test]
    fn a_fill_from_before_an_invalidation_is_dropped() {
        let cache = AuthCache::default();
        let Cached::Miss(generation) = cache.app(b"h") else {
            panic!("empty cache hit")
        };
        cache.invalidate(); // the key is deleted while the lookup reads the database
        cache.fill_app(generation, b"h", &app("ak_1"));
        assert!(matches!(cache.app(b"h"), Cached::Miss(_)));
    }

    #[test]
    fn a_fill_is_found_until_an_invalidation() {
        let cache = AuthCache::default();
        let Cached::Miss(generation) = cache.app(b"h") else {
            panic!("empty cache hit")
        };
        cache.fill_app(generation, b"h", &app("ak_1"));
        assert!(matches!(cache.app(b"h"), Cached::Hit(a) if a.id == "ak_1"));
        cache.invalidate();
        assert!(matches!(cache.app(b"h"), Cached::Miss(_)));
    }
}
