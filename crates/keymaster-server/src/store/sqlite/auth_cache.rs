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

/// The credentials of both kinds; a deletion of either empties both.
#[derive(Default)]
pub struct AuthCache {
    pub apps: Credentials<AppKeyAuth>,
    pub services: Credentials<ServiceAuth>,
}

impl AuthCache {
    /// Forgets everything: called after an app key or a service was deleted.
    pub fn invalidate(&self) {
        self.apps.invalidate();
        self.services.invalidate();
    }
}

/// One kind of credential by token hash.
pub struct Credentials<T> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    generation: u64,
    entries: HashMap<Vec<u8>, T>,
}

impl<T> Default for Credentials<T> {
    fn default() -> Self {
        Credentials {
            inner: Mutex::new(Inner {
                generation: 0,
                entries: HashMap::new(),
            }),
        }
    }
}

impl<T: Clone> Credentials<T> {
    /// The credential of `hash`: from memory, else from `read` (the database), remembered when
    /// found and no deletion happened meanwhile.
    pub fn get_or_read<E>(
        &self,
        hash: &[u8],
        read: impl FnOnce() -> Result<Option<T>, E>,
    ) -> Result<Option<T>, E> {
        let generation = {
            let inner = self.lock();
            if let Some(found) = inner.entries.get(hash) {
                return Ok(Some(found.clone()));
            }
            inner.generation
        };
        let found = read()?;
        if let Some(auth) = &found {
            let mut inner = self.lock();
            if inner.generation == generation {
                if inner.entries.len() >= MAX_ENTRIES {
                    inner.entries.clear();
                }
                inner.entries.insert(hash.to_vec(), auth.clone());
            }
        }
        Ok(found)
    }

    fn invalidate(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        // A panic while holding this lock leaves a plain map behind; nothing half-done.
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

    type Read = Result<Option<AppKeyAuth>, ()>;

    #[test]
    fn a_read_from_before_an_invalidation_is_not_remembered() {
        let cache = AuthCache::default();
        // The key is deleted while the lookup reads the database.
        let found = cache.apps.get_or_read(b"h", || -> Read {
            cache.invalidate();
            Ok(Some(app("ak_1")))
        });
        assert_eq!(found.unwrap().unwrap().id, "ak_1");
        let again = cache.apps.get_or_read(b"h", || -> Read { Ok(None) });
        assert!(again.unwrap().is_none(), "the stale read was remembered");
    }

    #[test]
    fn a_read_is_remembered_until_an_invalidation() {
        let cache = AuthCache::default();
        cache
            .apps
            .get_or_read(b"h", || -> Read { Ok(Some(app("ak_1"))) })
            .unwrap();
        let hit = cache
            .apps
            .get_or_read(b"h", || -> Read { panic!("read the database again") });
        assert_eq!(hit.unwrap().unwrap().id, "ak_1");
        cache.invalidate();
        let gone = cache.apps.get_or_read(b"h", || -> Read { Ok(None) });
        assert!(gone.unwrap().is_none());
    }

    #[test]
    fn unknown_tokens_are_not_remembered() {
        let cache = AuthCache::default();
        cache
            .apps
            .get_or_read(b"h", || -> Read { Ok(None) })
            .unwrap();
        let later = cache
            .apps
            .get_or_read(b"h", || -> Read { Ok(Some(app("ak_2"))) });
        assert_eq!(later.unwrap().unwrap().id, "ak_2");
    }
}
