//! The dispatcher's view of each endpoint (a webhook URL's scheme and authority, or the SMTP
//! relay): how many of its deliveries are claimed and in flight, and its circuit breaker.
//!
//! Each endpoint has its own bounded number of deliveries in flight (`webhook_concurrency`) and
//! of deliveries claimed (eight times that), so a slow or hanging endpoint fills only its own
//! queue. After `webhook_breaker_failures` failed attempts in a row the endpoint is paused
//! (open): none of its deliveries is claimed or attempted until the pause ends
//! (`webhook_breaker_pause`, doubling with every failed probe, at most an hour); then one
//! delivery is attempted as a probe (half open), and its success closes the breaker.
//!
//! This state is per process (each PostgreSQL replica has its own); the pause is also written
//! to the store (`Store::pause_endpoint`), so that every replica leaves the paused deliveries
//! alone. Not responsible for sending or for recording results.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use tokio::sync::Semaphore;

use crate::store::outbox::{ClaimRequest, EndpointBacklog};

/// Claimed deliveries per endpoint, as a multiple of those in flight: enough that the endpoint
/// never waits for the next claim, few enough that one claim serves many endpoints.
const CLAIMED_PER_SLOT: usize = 8;
/// Longest pause of an endpoint.
const MAX_PAUSE: Duration = Duration::from_secs(3600);
/// An idle, healthy endpoint is forgotten after this long.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// The state of an endpoint's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// Deliveries go out.
    Closed,
    /// Paused until this time: nothing is attempted.
    Open { until: Timestamp },
    /// The pause is over: one delivery is attempted as a probe (`probing` while it is out).
    HalfOpen { probing: bool },
}

impl Breaker {
    /// The name the operator sees.
    pub fn as_str(self) -> &'static str {
        match self {
            Breaker::Closed => "closed",
            Breaker::Open { .. } => "open",
            Breaker::HalfOpen { .. } => "half_open",
        }
    }
}

/// One endpoint.
struct Endpoint {
    /// Permits to send: at most this many deliveries of the endpoint in flight.
    slots: Arc<Semaphore>,
    /// Claimed and not yet attempted to the end (waiting for a slot or in flight).
    claimed: usize,
    in_flight: usize,
    breaker: Breaker,
    /// Failed attempts in a row.
    failures: u32,
    /// Pauses in a row without a successful attempt between them.
    pauses: u32,
    delivered: u64,
    failed_attempts: u64,
    last_error: Option<String>,
    last_active: Instant,
}

/// What a delivery waiting for its endpoint does once it has a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Go {
    /// Attempt it.
    Send,
    /// Attempt it as the endpoint's probe.
    Probe,
    /// Do not attempt it; it is due again at this time.
    Postpone(Timestamp),
}

/// The outcome of an attempt, as the breaker counts it.
pub enum Outcome<'a> {
    Delivered,
    Failed(&'a str),
}

/// A change of the breaker that the dispatcher acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    /// The endpoint was paused until this time: pause its deliveries in the store.
    Paused(Timestamp),
    /// The endpoint has room again after being full: claim.
    Room,
}

/// Every endpoint this process has worked with recently.
pub struct Endpoints {
    map: Mutex<HashMap<String, Endpoint>>,
    concurrency: usize,
    failures_to_pause: u32,
    pause: Duration,
}

/// One endpoint's state, for the operator (`GET /v1/admin/endpoints`, whose answer type is the
/// API's, `routes::admin::EndpointInfo`).
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointReport {
    /// A webhook URL's scheme and authority, or `smtp`.
    pub endpoint: String,
    /// `closed` (delivering), `open` (paused after repeated failures) or `half_open` (probing).
    pub state: String,
    /// End of the pause, while `open`.
    pub paused_until: Option<Timestamp>,
    /// Deliveries waiting in the store (due or not), across all replicas.
    pub pending: u64,
    /// Creation time of the oldest pending delivery.
    pub oldest_pending: Option<Timestamp>,
    /// Claimed by this process and not yet finished.
    pub claimed: u64,
    /// Being attempted by this process now.
    pub in_flight: u64,
    /// Failed attempts in a row.
    pub consecutive_failures: u32,
    /// Delivered by this process since it started (or since the endpoint was last idle).
    pub delivered: u64,
    /// Failed attempts by this process, likewise.
    pub failed_attempts: u64,
    pub last_error: Option<String>,
}

impl Endpoints {
    /// `concurrency` deliveries in flight per endpoint; paused after `failures_to_pause` failed
    /// attempts in a row, for `pause` (doubling while probes fail).
    pub fn new(concurrency: usize, failures_to_pause: u32, pause: Duration) -> Endpoints {
        Endpoints {
            map: Mutex::default(),
            concurrency: concurrency.max(1),
            failures_to_pause: failures_to_pause.max(1),
            pause,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Endpoint>> {
        // A panic while holding the lock cannot leave the counters unusable: recover them.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn queue_cap(&self) -> usize {
        self.concurrency * CLAIMED_PER_SLOT
    }

    /// What to claim now: a share per endpoint, none for a paused or full one, one probe for an
    /// endpoint whose pause is over. Also ends the pauses that are over, and forgets idle
    /// endpoints.
    pub fn claim_request(&self, now: Timestamp, lease: Duration, limit: u32) -> ClaimRequest {
        let cap = self.queue_cap();
        let mut map = self.lock();
        map.retain(|_, e| {
            e.claimed > 0
                || e.breaker != Breaker::Closed
                || e.failures > 0
                || e.last_active.elapsed() < FORGET_AFTER
        });
        let mut room = HashMap::new();
        for (name, e) in map.iter_mut() {
            if let Breaker::Open { until } = e.breaker {
                if now >= until {
                    e.breaker = Breaker::HalfOpen { probing: false };
                }
            }
            let n = match e.breaker {
                Breaker::Open { .. } => 0,
                Breaker::HalfOpen { probing } => usize::from(!probing && e.claimed == 0),
                Breaker::Closed => cap.saturating_sub(e.claimed),
            };
            if n < cap {
                room.insert(name.clone(), u32::try_from(n).unwrap_or(u32::MAX));
            }
        }
        ClaimRequest {
            now,
            lease,
            limit,
            per_endpoint: u32::try_from(cap).unwrap_or(u32::MAX),
            room,
        }
    }

    /// Counts a claimed delivery of `endpoint`; the slots it must wait for.
    pub fn claimed(&self, endpoint: &str) -> Arc<Semaphore> {
        let mut map = self.lock();
        let e = map.entry(endpoint.to_owned()).or_insert_with(|| Endpoint {
            slots: Arc::new(Semaphore::new(self.concurrency)),
            claimed: 0,
            in_flight: 0,
            breaker: Breaker::Closed,
            failures: 0,
            pauses: 0,
            delivered: 0,
            failed_attempts: 0,
            last_error: None,
            last_active: Instant::now(),
        });
        e.claimed += 1;
        e.last_active = Instant::now();
        e.slots.clone()
    }

    /// Whether endpoints are full: then a commit is not worth a claim at once.
    pub fn any_full(&self) -> bool {
        let cap = self.queue_cap();
        self.lock().values().any(|e| e.claimed >= cap)
    }

    /// A claimed delivery of `endpoint` has a slot: whether to attempt it.
    pub fn start(&self, endpoint: &str, now: Timestamp) -> Go {
        let mut map = self.lock();
        let Some(e) = map.get_mut(endpoint) else {
            return Go::Send;
        };
        let go = match e.breaker {
            Breaker::Closed => Go::Send,
            Breaker::Open { until } => Go::Postpone(until),
            Breaker::HalfOpen { probing: false } => {
                e.breaker = Breaker::HalfOpen { probing: true };
                metrics::counter!("keymaster_endpoint_breaker_total", "transition" => "probe")
                    .increment(1);
                Go::Probe
            }
            // Another delivery is the probe: this one waits for the probe's verdict.
            Breaker::HalfOpen { probing: true } => {
                Go::Postpone(add(now, self.pause.min(Duration::from_secs(5))))
            }
        };
        if go != Go::Send && go != Go::Probe {
            return go;
        }
        e.in_flight += 1;
        go
    }

    /// A delivery of `endpoint` that was not attempted is done with.
    pub fn skipped(&self, endpoint: &str) -> Change {
        self.release(endpoint)
    }

    /// An attempt ended: counts it and moves the breaker.
    pub fn finished(&self, endpoint: &str, outcome: Outcome<'_>, now: Timestamp) -> Change {
        let mut paused = None;
        let mut resumed = false;
        {
            let mut map = self.lock();
            let Some(e) = map.get_mut(endpoint) else {
                return Change::None;
            };
            e.in_flight = e.in_flight.saturating_sub(1);
            match outcome {
                Outcome::Delivered => {
                    e.delivered += 1;
                    e.failures = 0;
                    e.pauses = 0;
                    if e.breaker != Breaker::Closed {
                        e.breaker = Breaker::Closed;
                        resumed = true;
                        metrics::counter!("keymaster_endpoint_breaker_total", "transition" => "closed")
                            .increment(1);
                    }
                }
                Outcome::Failed(error) => {
                    e.failed_attempts += 1;
                    e.failures = e.failures.saturating_add(1);
                    e.last_error = Some(error.to_owned());
                    let probe_failed = matches!(e.breaker, Breaker::HalfOpen { .. });
                    let closed_too_often =
                        e.breaker == Breaker::Closed && e.failures >= self.failures_to_pause;
                    if probe_failed || closed_too_often {
                        e.pauses = e.pauses.saturating_add(1);
                        let factor = 2u32.saturating_pow(e.pauses.saturating_sub(1).min(20));
                        let until = add(now, self.pause.saturating_mul(factor).min(MAX_PAUSE));
                        e.breaker = Breaker::Open { until };
                        paused = Some(until);
                        metrics::counter!("keymaster_endpoint_breaker_total", "transition" => "opened")
                            .increment(1);
                    }
                }
            }
        }
        let change = self.release(endpoint);
        match paused {
            Some(until) => Change::Paused(until),
            // The deliveries held back during the pause are due: claim them now.
            None if resumed => Change::Room,
            None => change,
        }
    }

    fn release(&self, endpoint: &str) -> Change {
        let cap = self.queue_cap();
        let mut map = self.lock();
        let Some(e) = map.get_mut(endpoint) else {
            return Change::None;
        };
        e.claimed = e.claimed.saturating_sub(1);
        e.last_active = Instant::now();
        // Claim again once half the endpoint's queue has gone out, not after every delivery.
        if e.claimed == cap / 2 || (e.claimed == 0 && e.breaker != Breaker::Closed) {
            Change::Room
        } else {
            Change::None
        }
    }

    /// Endpoints for the operator: those this process knows, and those with pending
    /// deliveries in the store.
    pub fn report(&self, backlog: Vec<EndpointBacklog>) -> Vec<EndpointReport> {
        let map = self.lock();
        let mut out: HashMap<String, EndpointReport> = HashMap::new();
        for (name, e) in map.iter() {
            out.insert(
                name.clone(),
                EndpointReport {
                    endpoint: name.clone(),
                    state: e.breaker.as_str().to_owned(),
                    paused_until: match e.breaker {
                        Breaker::Open { until } => Some(until),
                        _ => None,
                    },
                    pending: 0,
                    oldest_pending: None,
                    claimed: e.claimed as u64,
                    in_flight: e.in_flight as u64,
                    consecutive_failures: e.failures,
                    delivered: e.delivered,
                    failed_attempts: e.failed_attempts,
                    last_error: e.last_error.clone(),
                },
            );
        }
        for b in backlog {
            let info = out
                .entry(b.endpoint.clone())
                .or_insert_with(|| EndpointReport {
                    endpoint: b.endpoint.clone(),
                    state: Breaker::Closed.as_str().to_owned(),
                    paused_until: None,
                    pending: 0,
                    oldest_pending: None,
                    claimed: 0,
                    in_flight: 0,
                    consecutive_failures: 0,
                    delivered: 0,
                    failed_attempts: 0,
                    last_error: None,
                });
            info.pending = b.pending;
            info.oldest_pending = Some(b.oldest);
        }
        let mut v: Vec<EndpointReport> = out.into_values().collect();
        v.sort_by(|a, b| {
            b.pending
                .cmp(&a.pending)
                .then_with(|| a.endpoint.cmp(&b.endpoint))
        });
        v
    }

    /// How many endpoints are paused now, for the metrics.
    pub fn paused(&self) -> usize {
        self.lock()
            .values()
            .filter(|e| matches!(e.breaker, Breaker::Open { .. }))
            .count()
    }
}

/// `t + d`, saturating.
pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.saturating_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(e: &Endpoints, name: &str, now: Timestamp) -> Change {
        e.claimed(name);
        assert!(matches!(e.start(name, now), Go::Send | Go::Probe));
        e.finished(name, Outcome::Failed("answered 500"), now)
    }

    #[test]
    fn repeated_failures_pause_then_one_probe_decides() {
        let e = Endpoints::new(4, 3, Duration::from_secs(10));
        let now = Timestamp::UNIX_EPOCH;
        assert_eq!(fail(&e, "a", now), Change::None);
        assert_eq!(fail(&e, "a", now), Change::None);
        let until = add(now, Duration::from_secs(10));
        assert_eq!(fail(&e, "a", now), Change::Paused(until));
        // Paused: nothing of it is claimed, and a delivery already waiting is not attempted.
        let req = e.claim_request(now, Duration::from_secs(1), 100);
        assert_eq!(req.room_for("a"), 0);
        assert_eq!(req.room_for("b"), 32, "other endpoints are not affected");
        e.claimed("a");
        assert_eq!(e.start("a", now), Go::Postpone(until));
        e.skipped("a");
        // The pause is over: one probe.
        let req = e.claim_request(until, Duration::from_secs(1), 100);
        assert_eq!(req.room_for("a"), 1);
        e.claimed("a");
        assert_eq!(e.start("a", until), Go::Probe);
        assert_eq!(
            e.claim_request(until, Duration::from_secs(1), 100)
                .room_for("a"),
            0
        );
        // It fails: paused twice as long.
        let change = e.finished("a", Outcome::Failed("timed out"), until);
        assert_eq!(change, Change::Paused(add(until, Duration::from_secs(20))));
        // The next probe succeeds: closed, full share again.
        let later = add(until, Duration::from_secs(20));
        e.claim_request(later, Duration::from_secs(1), 100);
        e.claimed("a");
        assert_eq!(e.start("a", later), Go::Probe);
        e.finished("a", Outcome::Delivered, later);
        assert_eq!(
            e.claim_request(later, Duration::from_secs(1), 100)
                .room_for("a"),
            32
        );
        let report = e.report(Vec::new());
        assert_eq!(report[0].state, "closed");
        assert_eq!(report[0].failed_attempts, 4);
        assert_eq!(report[0].delivered, 1);
    }

    #[test]
    fn a_full_endpoint_gets_no_room_and_says_when_half_is_out() {
        let e = Endpoints::new(2, 5, Duration::from_secs(10));
        let now = Timestamp::UNIX_EPOCH;
        for _ in 0..16 {
            e.claimed("a");
        }
        assert!(e.any_full());
        assert_eq!(
            e.claim_request(now, Duration::from_secs(1), 100)
                .room_for("a"),
            0
        );
        let mut changes = Vec::new();
        for _ in 0..8 {
            assert_eq!(e.start("a", now), Go::Send);
            changes.push(e.finished("a", Outcome::Delivered, now));
        }
        assert_eq!(changes.iter().filter(|c| **c == Change::Room).count(), 1);
        assert_eq!(
            e.claim_request(now, Duration::from_secs(1), 100)
                .room_for("a"),
            8
        );
    }
}
