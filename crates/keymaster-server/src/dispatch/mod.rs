//! The dispatcher: delivers events from the outbox to webhooks and e-mail, at least once.
//!
//! Every `TICK` it claims due deliveries with a lease (so two dispatchers never work on the same
//! row at once), attempts each, and records the result: delivered, retry later with exponential
//! backoff (`webhook_backoff_base`, doubling, at most one hour), or — after
//! `webhook_max_attempts` — failed, which the operator sees in `GET /v1/admin/deliveries`.
//! The event id is the idempotency key: it is the `webhook-id` of every attempt.
//!
//! Not responsible for deciding which events exist or where they go: the store writes the
//! deliveries in the transaction of each event.

pub mod email;
pub mod signature;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

use crate::config::Settings;
use crate::crypto::Keys;
use crate::store::outbox::{AttemptResult, Channel, ClaimedDelivery};
use crate::store::Store;

/// How often the dispatcher looks for due deliveries.
const TICK: Duration = Duration::from_millis(200);
/// How long a claim keeps other dispatchers away; longer than any attempt can take.
const LEASE: Duration = Duration::from_secs(120);
/// Most deliveries attempted at once by one dispatcher.
const BATCH: u32 = 32;
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// What the dispatcher needs.
pub struct Dispatcher {
    pub store: Arc<dyn Store>,
    pub keys: Arc<Keys>,
    pub settings: Arc<Settings>,
    pub mailer: Option<email::Mailer>,
}

/// The delay before the attempt after `failed_attempts` failures.
pub fn backoff(base: Duration, failed_attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(failed_attempts.saturating_sub(1).min(30));
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

impl Dispatcher {
    /// Runs until `shutdown` fires.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            ticks += 1;
            if ticks.is_multiple_of(5) {
                self.report_queue().await;
            }
            let claimed = match self
                .store
                .claim_deliveries(Timestamp::now(), LEASE, BATCH)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "dispatcher cannot claim deliveries");
                    continue;
                }
            };
            let attempts = claimed.into_iter().map(|d| self.attempt(d));
            futures::future::join_all(attempts).await;
        }
    }

    async fn report_queue(&self) {
        if let Ok(stats) = self.store.outbox_stats(Timestamp::now()).await {
            metrics::gauge!("keymaster_outbox_pending").set(stats.pending as f64);
            metrics::gauge!("keymaster_outbox_oldest_age_seconds").set(stats.oldest_age_seconds);
        }
    }

    async fn attempt(&self, d: ClaimedDelivery) {
        let channel = d.channel.as_str();
        metrics::counter!("keymaster_delivery_attempts_total", "channel" => channel).increment(1);
        let outcome = match d.channel {
            Channel::Webhook => webhook::send(self, &d).await,
            Channel::Email => match &self.mailer {
                Some(m) => m.send(&d.target, &d.event).await,
                None => Err("e-mail is not configured (smtp_url)".to_owned()),
            },
        };
        let now = Timestamp::now();
        let failed_attempts = d.attempts + 1;
        let result = match outcome {
            Ok(()) => {
                metrics::counter!("keymaster_deliveries_total", "channel" => channel, "outcome" => "delivered").increment(1);
                AttemptResult::Delivered
            }
            Err(error) if failed_attempts >= self.settings.webhook_max_attempts => {
                tracing::warn!(delivery = d.id, event = %d.event.id, %error, "delivery failed for good");
                metrics::counter!("keymaster_deliveries_total", "channel" => channel, "outcome" => "failed").increment(1);
                AttemptResult::Failed { error }
            }
            Err(error) => {
                let wait = backoff(self.settings.webhook_backoff_base, failed_attempts);
                let at = now
                    .saturating_add(SignedDuration::try_from(wait).unwrap_or(SignedDuration::MAX))
                    .unwrap_or(now);
                tracing::info!(delivery = d.id, event = %d.event.id, %error, ?wait, "delivery will be retried");
                metrics::counter!("keymaster_deliveries_total", "channel" => channel, "outcome" => "retry").increment(1);
                AttemptResult::Retry { at, error }
            }
        };
        if let Err(e) = self.store.finish_delivery(d.id, result, now).await {
            // The lease runs out and the delivery is attempted again: at least once.
            tracing::warn!(error = %e, delivery = d.id, "cannot record a delivery attempt");
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
