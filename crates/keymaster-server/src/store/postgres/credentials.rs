//! PostgreSQL: the app keys and services this replica has authenticated lately, so that a
//! request under load does not spend a round trip on its token (a statement of its own, about a
//! fifth of a deposit's cost on both sides: docs/scaling.md, "Credentials kept in memory").
//!
//! What makes a kept credential safe to use:
//!
//! - **Only what the database said exists is kept**: an unknown token is looked up every time,
//!   so a new app key or service works at once and unknown tokens cannot fill the memory.
//! - **A credential changes only by its deletion** (an app key's tenant and a service's name,
//!   domains, networks and confinement are fixed when it is made). Every deletion sends
//!   `NOTIFY keymaster_credentials` in its own transaction, so at its commit; each replica's
//!   listener forgets everything it keeps when that arrives, and the deleting replica forgets
//!   at once after its commit, before it answers.
//! - **Nothing is kept while the listener may have missed a deletion**: before it first
//!   listens, and from a failed receive until it hears again. A connection it found broken and
//!   made again (`try_recv`'s `None`) may have lost notifications: everything is forgotten.
//! - **A lookup that raced a deletion is not kept**: it takes the generation before its query
//!   and keeps its answer only if nothing was forgotten meanwhile. A query whose snapshot
//!   predates a deletion's commit therefore ends before the notification is handled (and its
//!   answer is kept, then forgotten with the rest) or after it (and is not kept).
//! - **A kept credential is used for at most [`FRESH_FOR`]**: the bound if the listener's
//!   connection died without either side noticing (no TCP keepalive), the one case the above
//!   does not cover.
//!
//! So a deleted credential stops working on the replica that deleted it before the deletion is
//! answered, and on the others when the notification arrives (milliseconds), or within
//! [`FRESH_FOR`] if their listener is cut off silently — as a request that had read the token
//! just before the deletion could finish after it today.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::{AppKeyAuth, ServiceAuth};

/// How long a kept credential is used before it is looked up again.
pub const FRESH_FOR: Duration = Duration::from_secs(5);

/// Most credentials of each kind kept; past it the oldest half is let go.
const MOST: usize = 4096;

/// The channel every deletion of an app key or a service notifies.
pub const CHANNEL: &str = "keymaster_credentials";

/// The credentials one replica keeps, by token hash (SHA-256 of the token: the token itself is
/// never here).
#[derive(Default)]
pub struct Credentials {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Raised by every forgetting; a lookup keeps its answer only under the value it began with.
    generation: u64,
    /// Whether the listener is listening (nothing is kept otherwise).
    listening: bool,
    app_keys: Kept<AppKeyAuth>,
    services: Kept<ServiceAuth>,
}

/// Taken before a lookup's query; see [`Credentials::keep_app_key`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl Credentials {
    /// The app key of `hash`, if kept and fresh.
    pub fn app_key(&self, hash: &[u8], now: Instant) -> Option<AppKeyAuth> {
        self.lock().app_keys.get(hash, now)
    }

    /// The service of `hash`, if kept and fresh.
    pub fn service(&self, hash: &[u8], now: Instant) -> Option<ServiceAuth> {
        self.lock().services.get(hash, now)
    }

    /// To take before looking a token up in the database.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.lock().generation)
    }

    /// Keeps what a lookup found, unless something was forgotten since its `ticket`.
    pub fn keep_app_key(&self, t: Ticket, hash: &[u8], auth: &AppKeyAuth, now: Instant) {
        let mut i = self.lock();
        if i.may_keep(t) {
            i.app_keys.put(hash, auth.clone(), now);
        }
    }

    /// Keeps what a lookup found, unless something was forgotten since its `ticket`.
    pub fn keep_service(&self, t: Ticket, hash: &[u8], auth: &ServiceAuth, now: Instant) {
        let mut i = self.lock();
        if i.may_keep(t) {
            i.services.put(hash, auth.clone(), now);
        }
    }

    /// Forgets everything (a credential was deleted, or a notification may have been lost).
    pub fn forget(&self) {
        self.lock().forget();
    }

    /// Whether the listener is listening; a change either way forgets everything.
    pub fn listening(&self, yes: bool) {
        let mut i = self.lock();
        if i.listening != yes {
            i.forget();
            i.listening = yes;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves maps that are still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn forget(&mut self) {
        self.generation += 1;
        self.app_keys.0.clear();
        self.services.0.clear();
    }

    fn may_keep(&self, t: Ticket) -> bool {
        self.listening && self.generation == t.0
    }
}

/// One kind of credential, with the moment each was read from the database.
struct Kept<T>(HashMap<Vec<u8>, (T, Instant)>);

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept(HashMap::new())
    }
}

impl<T: Clone> Kept<T> {
    fn get(&self, hash: &[u8], now: Instant) -> Option<T> {
        let (auth, read) = self.0.get(hash)?;
        (now.saturating_duration_since(*read) < FRESH_FOR).then(|| auth.clone())
    }

    fn put(&mut self, hash: &[u8], auth: T, now: Instant) {
        if self.0.len() >= MOST {
            let mut ages: Vec<Instant> = self.0.values().map(|(_, read)| *read).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            self.0.retain(|_, (_, read)| *read > cut);
        }
        self.0.insert(hash.to_vec(), (auth, now));
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

    fn listening() -> Credentials {
        let c = Credentials::default();
        c.listening(true);
        c
    }

    #[test]
    fn nothing_is_kept_until_the_listener_listens_nor_after_it_fails() {
        let c = Credentials::default();
        let now = Instant::now();
        c.keep_app_key(c.ticket(), b"h", &app("a"), now);
        assert!(c.app_key(b"h", now).is_none(), "kept before listening");
        c.listening(true);
        c.keep_app_key(c.ticket(), b"h", &app("a"), now);
        assert_eq!(c.app_key(b"h", now).unwrap().id, "a");
        c.listening(true);
        assert!(
            c.app_key(b"h", now).is_some(),
            "forgotten by a listener still listening"
        );
        c.listening(false);
        assert!(
            c.app_key(b"h", now).is_none(),
            "kept past a failed listener"
        );
        c.keep_app_key(c.ticket(), b"h", &app("a"), now);
        assert!(c.app_key(b"h", now).is_none(), "kept while not listening");
    }

    #[test]
    fn a_lookup_that_began_before_a_deletion_is_not_kept() {
        let c = listening();
        let now = Instant::now();
        let before = c.ticket();
        c.forget();
        c.keep_app_key(before, b"h", &app("a"), now);
        assert!(c.app_key(b"h", now).is_none());
        c.keep_app_key(c.ticket(), b"h", &app("a"), now);
        assert!(c.app_key(b"h", now).is_some());
    }

    #[test]
    fn forgetting_drops_both_kinds_and_a_kept_credential_goes_stale() {
        let c = listening();
        let now = Instant::now();
        let svc = ServiceAuth {
            id: "svc_1".into(),
            name: "s".into(),
            domains: vec![],
            allowed_cidrs: vec![],
            confined_tenant_id: None,
        };
        c.keep_service(c.ticket(), b"s", &svc, now);
        c.keep_app_key(c.ticket(), b"a", &app("a"), now);
        assert_eq!(c.service(b"s", now).unwrap().id, "svc_1");
        assert!(
            c.service(b"s", now + FRESH_FOR).is_none(),
            "used past FRESH_FOR"
        );
        assert!(c.app_key(b"other", now).is_none());
        c.forget();
        assert!(c.service(b"s", now).is_none());
        assert!(c.app_key(b"a", now).is_none());
    }

    #[test]
    fn the_memory_is_bounded() {
        let c = listening();
        let start = Instant::now();
        for i in 0..(MOST * 3) {
            let at = start + Duration::from_micros(i as u64);
            c.keep_app_key(c.ticket(), &i.to_be_bytes(), &app("a"), at);
        }
        let kept = c.lock().app_keys.0.len();
        assert!(kept <= MOST, "{kept} kept");
        let newest = (MOST * 3 - 1).to_be_bytes();
        assert!(c.app_key(&newest, start).is_some());
    }
}
