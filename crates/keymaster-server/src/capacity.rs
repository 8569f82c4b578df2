//! Bounds on work that outlives an ordinary request slot: open event streams (per key and
//! server-wide) and server-side key generation.
//!
//! Both are admitted by trying, never by waiting: a client beyond a bound gets
//! `429 rate_limited` with `Retry-After` at once, so that nothing queues up behind a long-lived
//! stream or a multi-second RSA generation. A permit is held by the work itself (the stream's
//! body, the blocking generation task) and given back when that ends, however it ends: the
//! stream finishing, the client going away, or a generation finishing after its request timed
//! out.
//!
//! The counts are per process: with several replicas, each enforces its own bounds.
//!
//! Not responsible for ordinary requests (`max_concurrent_requests`, a tower layer in
//! `routes`) or for connections (`max_connections`, the accept loop in `startup`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Settings;
use crate::error::ApiError;

/// Event streams one key (one holder token) may have open at once.
pub const STREAMS_PER_KEY: usize = 4;

/// `Retry-After` of a refused stream: streams are long-lived, so a place frees slowly.
const STREAM_RETRY_AFTER_SECONDS: u64 = 5;
/// `Retry-After` of a refused generation: a generation takes up to a few seconds.
const GENERATION_RETRY_AFTER_SECONDS: u64 = 2;

/// The server's bounds and what is in use of them.
pub struct Capacity {
    /// Open event streams, all keys together (`max_event_streams`).
    streams: Arc<Semaphore>,
    /// Open event streams per key id; an entry exists only while its count is positive.
    per_key: Arc<Mutex<HashMap<String, usize>>>,
    /// Key generations running (`max_concurrent_generations`).
    generations: Arc<Semaphore>,
}

/// A place among the server's event streams; the stream's body holds it.
pub struct StreamSlot {
    _permit: OwnedSemaphorePermit,
}

/// A place among one key's event streams (and the server's); the stream's body holds it.
pub struct KeyStreamSlot {
    _server: StreamSlot,
    per_key: Arc<Mutex<HashMap<String, usize>>>,
    key_id: String,
}

/// A place among the running key generations; the generation task holds it.
pub struct GenerationSlot {
    _permit: OwnedSemaphorePermit,
}

impl Capacity {
    /// The bounds of `settings`, all free.
    pub fn new(settings: &Settings) -> Capacity {
        Capacity {
            streams: Arc::new(Semaphore::new(settings.max_event_streams)),
            per_key: Arc::new(Mutex::new(HashMap::new())),
            generations: Arc::new(Semaphore::new(settings.max_concurrent_generations)),
        }
    }

    /// A place among the server's event streams, or `429` when all are taken. Taken before
    /// the holder is authenticated, so that the lookups of stream requests are bounded too
    /// (they take no request slot).
    pub fn try_stream(&self) -> Result<StreamSlot, ApiError> {
        match self.streams.clone().try_acquire_owned() {
            Ok(permit) => Ok(StreamSlot { _permit: permit }),
            Err(_) => {
                metrics::counter!("keymaster_limit_refusals_total", "limit" => "max_event_streams")
                    .increment(1);
                Err(ApiError::Busy(
                    "the server has as many event streams open as it serves",
                    STREAM_RETRY_AFTER_SECONDS,
                ))
            }
        }
    }

    /// Turns a server-wide place into one of `key_id`'s [`STREAMS_PER_KEY`], or `429` when
    /// the key has that many open.
    pub fn try_key_stream(
        &self,
        server: StreamSlot,
        key_id: &str,
    ) -> Result<KeyStreamSlot, ApiError> {
        let mut per_key = lock(&self.per_key);
        let open = per_key.entry(key_id.to_owned()).or_insert(0);
        if *open >= STREAMS_PER_KEY {
            metrics::counter!("keymaster_limit_refusals_total", "limit" => "streams_per_key")
                .increment(1);
            return Err(ApiError::Busy(
                "this key has 4 event streams open, the most one holder may have",
                STREAM_RETRY_AFTER_SECONDS,
            ));
        }
        *open += 1;
        Ok(KeyStreamSlot {
            _server: server,
            per_key: self.per_key.clone(),
            key_id: key_id.to_owned(),
        })
    }

    /// A place among the running key generations, or `429` when all are taken.
    pub fn try_generation(&self) -> Result<GenerationSlot, ApiError> {
        match self.generations.clone().try_acquire_owned() {
            Ok(permit) => Ok(GenerationSlot { _permit: permit }),
            Err(_) => {
                metrics::counter!("keymaster_limit_refusals_total", "limit" => "max_concurrent_generations")
                    .increment(1);
                Err(ApiError::Busy(
                    "the server is generating as many keys as it has cores",
                    GENERATION_RETRY_AFTER_SECONDS,
                ))
            }
        }
    }
}

impl Drop for KeyStreamSlot {
    fn drop(&mut self) {
        let mut per_key = lock(&self.per_key);
        if let Some(open) = per_key.get_mut(&self.key_id) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                per_key.remove(&self.key_id);
            }
        }
    }
}

/// The map's lock; a panic while it was held cannot leave a count half-written (each
/// critical section is one increment or decrement), so a poisoned lock is used as it is.
fn lock(m: &Mutex<HashMap<String, usize>>) -> MutexGuard<'_, HashMap<String, usize>> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Capacity {
        fn streams_of(&self, key_id: &str) -> usize {
            lock(&self.per_key).get(key_id).copied().unwrap_or(0)
        }
    }

    fn capacity(streams: usize, generations: usize) -> Capacity {
        Capacity::new(&Settings {
            max_event_streams: streams,
            max_concurrent_generations: generations,
            ..Settings::default()
        })
    }

    #[test]
    fn a_key_has_at_most_four_streams_and_a_closed_one_frees_its_place() {
        let c = capacity(100, 1);
        let mut open: Vec<_> = (0..STREAMS_PER_KEY)
            .map(|_| c.try_key_stream(c.try_stream().unwrap(), "key_a").unwrap())
            .collect();
        let refused = c.try_key_stream(c.try_stream().unwrap(), "key_a");
        assert!(matches!(refused, Err(ApiError::Busy(_, 5))));
        // Another key is not affected, and the refused attempt gave its server place back.
        let _b = c.try_key_stream(c.try_stream().unwrap(), "key_b").unwrap();
        assert_eq!(c.streams.available_permits(), 100 - STREAMS_PER_KEY - 1);
        open.pop();
        assert_eq!(c.streams_of("key_a"), STREAMS_PER_KEY - 1);
        open.push(c.try_key_stream(c.try_stream().unwrap(), "key_a").unwrap());
        drop(open);
        assert_eq!(c.streams_of("key_a"), 0);
        assert!(
            lock(&c.per_key).get("key_a").is_none(),
            "no entry is left behind"
        );
    }

    #[test]
    fn the_server_wide_bound_holds_over_all_keys() {
        let c = capacity(3, 1);
        let held: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|k| c.try_key_stream(c.try_stream().unwrap(), k).unwrap())
            .collect();
        assert!(matches!(c.try_stream(), Err(ApiError::Busy(..))));
        drop(held);
        assert!(c.try_stream().is_ok());
    }

    #[test]
    fn generations_are_tried_not_queued() {
        let c = capacity(1, 2);
        let first = c.try_generation().unwrap();
        let _second = c.try_generation().unwrap();
        assert!(matches!(c.try_generation(), Err(ApiError::Busy(_, 2))));
        drop(first);
        assert!(c.try_generation().is_ok());
    }
}
