//! The dispatcher: delivers events from the outbox to webhooks and e-mail, at least once, each
//! endpoint in its own queue.
//!
//! It claims due deliveries when the store says events were committed (`Store::commits`; a
//! timer of [`FALLBACK`] covers retries that fall due and commits it cannot hear of), when an
//! endpoint's queue has room again, and at start. A claim takes a fair share per endpoint
//! (`endpoints`): a full or paused endpoint gets none, so one endpoint's backlog cannot fill the
//! claims. Each claimed delivery waits for a slot of its own endpoint (at most
//! `webhook_concurrency` in flight each), is attempted, and its result goes to the recorder,
//! which writes every result waiting in one store call (one group commit on SQLite, one
//! statement on PostgreSQL).
//!
//! A claim is a lease of [`LEASE`], renewed every [`RENEW_EVERY`] while the delivery is not yet
//! recorded, so that the deliveries of a process that dies go out again within seconds (on
//! SQLite at once: the store drops every lease when it opens). An attempt that ends in failure
//! is retried with exponential backoff (`webhook_backoff_base`, doubling, at most one hour) or,
//! after `webhook_max_attempts`, marked failed, which the operator sees in
//! `GET /v1/admin/deliveries`. The event id is the idempotency key: it is the `webhook-id` of
//! every attempt.
//!
//! Not responsible for deciding which events exist or where they go: the store writes the
//! deliveries in the transaction of each event.

pub mod email;
pub mod endpoints;
pub mod signature;
pub mod webhook;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;

use self::endpoints::{add, Change, Endpoints, Go, Outcome};
use crate::config::Settings;
use crate::crypto::Keys;
use crate::store::outbox::{AttemptResult, Channel, ClaimedDelivery};
use crate::store::Store;

/// Longest wait for due deliveries without any notification.
const FALLBACK: Duration = Duration::from_millis(200);
/// How long a claim keeps other dispatchers away unless renewed.
const LEASE: Duration = Duration::from_secs(10);
/// How often the leases of deliveries not yet recorded are renewed.
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// Most deliveries claimed at once.
const CLAIM_LIMIT: u32 = 512;
/// While an endpoint's queue is full, a commit makes a claim at most this often: each such claim
/// walks past that endpoint's due backlog.
const BUSY_GAP: Duration = Duration::from_millis(20);
/// Least time between two claims woken by commits. On SQLite a claim is a job of the writer,
/// and under load every batch the writer commits is a commit: without a gap the dispatcher
/// would add a claim to nearly every batch, deliveries or not. 5 ms bounds that to 200 claims a
/// second and adds at most 5 ms to a delivery.
const COMMIT_GAP: Duration = Duration::from_millis(5);
/// Most results recorded in one store call.
const RECORD_BATCH: usize = 1024;
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long a stopping dispatcher tries to hand back what it has claimed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What the dispatcher needs.
pub struct Dispatcher {
    pub store: Arc<dyn Store>,
    pub keys: Arc<Keys>,
    pub settings: Arc<Settings>,
    pub mailer: Option<email::Mailer>,
    /// The state of each endpoint, shared with `GET /v1/admin/endpoints`.
    pub endpoints: Arc<Endpoints>,
    /// The HTTP clients kept per endpoint.
    pub clients: webhook::Clients,
}

/// The delay before the attempt after `failed_attempts` failures.
pub fn backoff(base: Duration, failed_attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(failed_attempts.saturating_sub(1).min(30));
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// The parts of a running dispatcher that its attempts share.
struct Running {
    dispatcher: Dispatcher,
    /// Results on their way to the recorder.
    results: mpsc::UnboundedSender<(i64, AttemptResult)>,
    /// Claimed by this process and not yet recorded: their leases are renewed.
    outstanding: Outstanding,
    /// An endpoint's queue has room again.
    room: Notify,
}

/// The ids of deliveries claimed by this process and not yet recorded.
#[derive(Clone, Default)]
struct Outstanding(Arc<Mutex<HashSet<i64>>>);

impl Outstanding {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ids(&self) -> Vec<i64> {
        self.lock().iter().copied().collect()
    }
}

impl Dispatcher {
    /// Runs until `shutdown` fires.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let store = self.store.clone();
        let mut commits = store.commits();
        let (results, results_rx) = mpsc::unbounded_channel();
        let outstanding = Outstanding::default();
        let run = Arc::new(Running {
            dispatcher: self,
            results,
            outstanding: outstanding.clone(),
            room: Notify::new(),
        });
        let recorder = tokio::spawn(record(store.clone(), outstanding.clone(), results_rx));
        let renewer = tokio::spawn(renew(run.clone()));
        let mut attempts = JoinSet::new();
        let mut fallback = tokio::time::interval(FALLBACK);
        fallback.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut report = tokio::time::interval(Duration::from_secs(1));
        let mut commits_open = true;
        let mut last_claim = tokio::time::Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                () = run.room.notified() => {}
                changed = commits.changed(), if commits_open => {
                    if changed.is_err() {
                        commits_open = false;
                        continue;
                    }
                    let gap = if run.dispatcher.endpoints.any_full() { BUSY_GAP } else { COMMIT_GAP };
                    tokio::time::sleep_until(last_claim + gap).await;
                }
                _ = fallback.tick() => {}
                _ = report.tick() => {
                    run.dispatcher.report().await;
                    continue;
                }
            }
            while attempts.try_join_next().is_some() {}
            last_claim = tokio::time::Instant::now();
            claim_all(&run, &mut attempts).await;
        }
        // Stopping: attempts in flight are abandoned, and what was claimed is handed back so
        // that it goes out at once after a restart (or from another replica).
        attempts.abort_all();
        while attempts.join_next().await.is_some() {}
        renewer.abort();
        let _ = renewer.await;
        // The last sender of results goes with `run`: the recorder writes what it has, then ends.
        drop(run);
        let handed_back = tokio::time::timeout(STOP_GRACE, async {
            let _ = recorder.await;
            let now = Timestamp::now();
            let back: Vec<(i64, AttemptResult)> = outstanding
                .ids()
                .into_iter()
                .map(|id| (id, AttemptResult::Postponed { at: now }))
                .collect();
            if back.is_empty() {
                return Ok(());
            }
            store.finish_deliveries(back, now).await
        })
        .await;
        if !matches!(handed_back, Ok(Ok(()))) {
            tracing::info!("claimed deliveries not handed back; their leases will run out");
        }
    }

    async fn report(&self) {
        if let Ok(stats) = self.store.outbox_stats(Timestamp::now()).await {
            metrics::gauge!("keymaster_outbox_pending").set(stats.pending as f64);
            metrics::gauge!("keymaster_outbox_oldest_age_seconds").set(stats.oldest_age_seconds);
        }
        metrics::gauge!("keymaster_endpoints_paused").set(self.endpoints.paused() as f64);
    }

    async fn attempt(&self, d: &ClaimedDelivery) -> Result<(), String> {
        match d.channel {
            Channel::Webhook => webhook::send(self, d).await,
            Channel::Email => match &self.mailer {
                Some(m) => m.send(&d.target, &d.event).await,
                None => Err("e-mail is not configured (smtp_url)".to_owned()),
            },
        }
    }
}

/// Claims until nothing more is due for an endpoint with room; starts an attempt per delivery.
async fn claim_all(run: &Arc<Running>, attempts: &mut JoinSet<()>) {
    let d = &run.dispatcher;
    loop {
        let req = d
            .endpoints
            .claim_request(Timestamp::now(), LEASE, CLAIM_LIMIT);
        let claimed = match d.store.claim_deliveries(req).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "dispatcher cannot claim deliveries");
                return;
            }
        };
        let n = claimed.len();
        {
            let mut outstanding = run.outstanding.lock();
            outstanding.extend(claimed.iter().map(|c| c.id));
        }
        for delivery in claimed {
            let slots = d.endpoints.claimed(&delivery.endpoint);
            let run = run.clone();
            attempts.spawn(async move {
                // The semaphore is never closed; without a permit there is nothing to do.
                let Ok(_slot) = slots.acquire_owned().await else {
                    return;
                };
                attempt(&run, delivery).await;
            });
        }
        // A full claim may have left more behind; otherwise what is left waits for room.
        if n < CLAIM_LIMIT as usize {
            return;
        }
    }
}

/// Attempts one claimed delivery (holding a slot of its endpoint) and hands on the result.
async fn attempt(run: &Running, d: ClaimedDelivery) {
    let dispatcher = &run.dispatcher;
    let channel = d.channel.as_str();
    let now = Timestamp::now();
    let (result, change) = match dispatcher.endpoints.start(&d.endpoint, now) {
        Go::Postpone(at) => {
            metrics::counter!("keymaster_deliveries_total", "channel" => channel, "outcome" => "postponed").increment(1);
            (
                AttemptResult::Postponed { at },
                dispatcher.endpoints.skipped(&d.endpoint),
            )
        }
        Go::Send | Go::Probe => {
            metrics::counter!("keymaster_delivery_attempts_total", "channel" => channel)
                .increment(1);
            let outcome = dispatcher.attempt(&d).await;
            let now = Timestamp::now();
            let change = dispatcher.endpoints.finished(
                &d.endpoint,
                match &outcome {
                    Ok(()) => Outcome::Delivered,
                    Err(e) => Outcome::Failed(e),
                },
                now,
            );
            (result_of(dispatcher, &d, outcome, now), change)
        }
    };
    match change {
        Change::None => {}
        Change::Room => run.room.notify_one(),
        Change::Paused(until) => {
            tracing::warn!(endpoint = %d.endpoint, %until, "endpoint paused after repeated failures");
            let store = dispatcher.store.clone();
            let endpoint = d.endpoint.clone();
            tokio::spawn(async move {
                if let Err(e) = store
                    .pause_endpoint(&endpoint, until, Timestamp::now())
                    .await
                {
                    tracing::warn!(error = %e, "cannot pause the endpoint's deliveries");
                }
            });
        }
    }
    // The receiver lives as long as the recorder, which outlives every attempt.
    let _ = run.results.send((d.id, result));
}

/// What to record for an attempt that ended with `outcome`.
fn result_of(
    dispatcher: &Dispatcher,
    d: &ClaimedDelivery,
    outcome: Result<(), String>,
    now: Timestamp,
) -> AttemptResult {
    let channel = d.channel.as_str();
    let failed_attempts = d.attempts + 1;
    match outcome {
        Ok(()) => {
            metrics::counter!("keymaster_deliveries_total", "channel" => channel, "outcome" => "delivered").increment(1);
            AttemptResult::Delivered
        }
        Err(error) if failed_attempts >= dispatcher.settings.webhook_max_attempts => {
            tracing::warn!(delivery = d.id, event = %d.event.id, %error, "delivery failed for good");
            metrics::counter!("keymaster_deliveries_total", "channel" => channel, "outcome" => "failed").increment(1);
            AttemptResult::Failed { error }
        }
        Err(error) => {
            let wait = backoff(dispatcher.settings.webhook_backoff_base, failed_attempts);
            tracing::info!(delivery = d.id, event = %d.event.id, %error, ?wait, "delivery will be retried");
            metrics::counter!("keymaster_deliveries_total", "channel" => channel, "outcome" => "retry").increment(1);
            AttemptResult::Retry {
                at: add(now, wait),
                error,
            }
        }
    }
}

/// Writes results in batches: everything waiting when the previous write ends goes in the next.
/// Ends when every sender is gone and everything received is written.
async fn record(
    store: Arc<dyn Store>,
    outstanding: Outstanding,
    mut rx: mpsc::UnboundedReceiver<(i64, AttemptResult)>,
) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while rx.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
        let results = std::mem::take(&mut batch);
        let mut tries = 0u32;
        loop {
            match store
                .finish_deliveries(results.clone(), Timestamp::now())
                .await
            {
                Ok(()) => {
                    metrics::histogram!("keymaster_delivery_record_batch_size")
                        .record(ids.len() as f64);
                    break;
                }
                Err(e) if tries < 3 => {
                    tries += 1;
                    tracing::warn!(error = %e, "cannot record delivery attempts; retrying");
                    tokio::time::sleep(Duration::from_millis(100 << tries)).await;
                }
                Err(e) => {
                    // Their leases run out and they are attempted again: at least once.
                    tracing::warn!(error = %e, n = ids.len(), "cannot record delivery attempts");
                    break;
                }
            }
        }
        let mut outstanding = outstanding.lock();
        for id in &ids {
            outstanding.remove(id);
        }
    }
}

/// Renews the leases of deliveries claimed and not yet recorded.
async fn renew(run: Arc<Running>) {
    let mut every = tokio::time::interval(RENEW_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        let ids = run.outstanding.ids();
        if ids.is_empty() {
            continue;
        }
        let until = add(Timestamp::now(), LEASE);
        if let Err(e) = run.dispatcher.store.renew_leases(ids, until).await {
            tracing::warn!(error = %e, "cannot renew the leases of deliveries in flight");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_an_hour() {
        let base = Duration::from_secs(2);
        assert_eq!(backoff(base, 1), Duration::from_secs(2));
        assert_eq!(backoff(base, 2), Duration::from_secs(4));
        assert_eq!(backoff(base, 3), Duration::from_secs(8));
        assert_eq!(backoff(base, 12), Duration::from_secs(3600));
        assert_eq!(backoff(base, 1000), Duration::from_secs(3600));
    }
}
