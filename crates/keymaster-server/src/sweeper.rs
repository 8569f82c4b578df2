//! The sweeper: every `sweep_interval`, reports keys that reached their expiry
//! (`key.expired`), ends held keys whose grace passed, and purges what is past retention.
//!
//! It never decides a retrieval; expiry is enforced at the moment of each request.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use crate::store::retention::Retention;
use crate::store::Store;

/// Most batches run back to back in one tick before yielding to the next interval.
const MAX_BATCHES_PER_TICK: usize = 1000;

/// Runs until `shutdown` fires.
pub async fn run(
    store: Arc<dyn Store>,
    interval: Duration,
    retention: Retention,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        for _ in 0..MAX_BATCHES_PER_TICK {
            match store.sweep(Timestamp::now(), retention).await {
                Ok(r) => {
                    if r.expired > 0 {
                        metrics::counter!("keymaster_keys_expired_total")
                            .increment(r.expired as u64);
                    }
                    if !r.more {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sweep failed; will retry");
                    break;
                }
            }
        }
    }
}
