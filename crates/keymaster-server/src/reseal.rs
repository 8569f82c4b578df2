//! Re-sealing after a rotation of the server secret: once after start, every blob sealed under
//! a previous secret (`secret` keys, tenants' webhook secrets) is opened and sealed again under
//! the current one, a page at a time, while `keymaster_sealed_under_previous_secret` counts
//! down to 0.
//!
//! Not responsible for codes: the store keeps only their HMAC, which cannot be recomputed
//! without the code; a code is rehashed when it is next presented (`store::rotation`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::crypto::Keys;
use crate::store::rotation::{Resealed, SealedPlace};
use crate::store::{Store, StoreError};

/// Blobs read and replaced per transaction.
const PAGE: u32 = 200;
/// Pause between pages, so that the SQLite writer's queue is never held up for long.
const BETWEEN_PAGES: Duration = Duration::from_millis(20);
/// Pause before trying again after the database failed.
const AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Passes at most: a second one picks up a blob that a concurrent change moved behind the
/// first (a webhook secret rotated during it); after that only blobs no secret opens remain.
const MAX_PASSES: usize = 3;

const GAUGE: &str = "keymaster_sealed_under_previous_secret";

/// Runs once after start; returns when nothing is left that a configured secret opens, or at
/// `shutdown`. Without previous secrets it only sets the gauge to 0: nothing is read.
pub async fn run(store: Arc<dyn Store>, keys: Arc<Keys>, mut shutdown: watch::Receiver<bool>) {
    if !keys.rotating() {
        metrics::gauge!(GAUGE).set(0.0);
        return;
    }
    loop {
        tokio::select! {
            done = reseal_all(store.as_ref(), &keys) => match done {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "re-sealing under the new secret failed; will retry"),
            },
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(AFTER_FAILURE) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn reseal_all(store: &dyn Store, keys: &Keys) -> Result<(), StoreError> {
    let current = keys.current_key_id();
    let mut left = store.count_sealed_not_under(current).await?;
    metrics::gauge!(GAUGE).set(left as f64);
    if left > 0 {
        tracing::info!(left, "re-sealing data sealed under a previous secret");
    }
    for _ in 0..MAX_PASSES {
        let mut resealed = 0u64;
        let mut unopened = 0u64;
        for place in SealedPlace::ALL {
            let mut after = None;
            loop {
                let page = store.sealed_not_under(place, current, after, PAGE).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.id.clone());
                let full = page.len() == PAGE as usize;
                let changes: Vec<Resealed> = page
                    .into_iter()
                    .filter_map(|b| match keys.reseal(&b.blob, b.id.as_bytes()) {
                        Some(new) => Some(Resealed {
                            id: b.id,
                            old: b.blob,
                            new,
                        }),
                        None => {
                            unopened += 1;
                            None
                        }
                    })
                    .collect();
                let n = changes.len() as u64;
                if n > 0 {
                    // A row that changed meanwhile (a key ended, a webhook secret rotated) is
                    // left as it is; it no longer holds this blob either way.
                    store.replace_sealed(place, changes).await?;
                    resealed += n;
                    left = left.saturating_sub(n);
                    metrics::gauge!(GAUGE).set(left as f64);
                }
                if !full {
                    break;
                }
                tokio::time::sleep(BETWEEN_PAGES).await;
            }
        }
        left = store.count_sealed_not_under(current).await?;
        metrics::gauge!(GAUGE).set(left as f64);
        if resealed == 0 || left == 0 {
            if unopened > 0 {
                tracing::error!(
                    unopened,
                    "sealed data that no configured secret opens: a secret was removed from \
                     previous_secrets too early; put it back"
                );
            } else {
                tracing::info!("everything sealed is under the current secret");
            }
            return Ok(());
        }
    }
    Ok(())
}
