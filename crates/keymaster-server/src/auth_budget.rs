//! The budget of failed authentications per source address: bad or missing tokens from one
//! address beyond `failed_auth_per_minute` get `429 rate_limited` for the rest of the minute,
//! whatever they send.
//!
//! Kept in memory, per replica: it throttles token guessing and noisy clients cheaply, without a
//! database write per bad request (which would itself be a way to load the database). With N
//! replicas behind a balancer an address gets at most N budgets. The per-service budget of failed
//! retrievals, which guards the codes, is in the database and shared.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The fixed window of the budget.
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; beyond it, windows that ended are dropped first.
const MAX_TRACKED: usize = 100_000;

/// Failed authentications per address in the current window.
pub struct AuthBudget {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthBudget {
    /// A budget of `per_minute` failures per address.
    pub fn new(per_minute: u32) -> AuthBudget {
        AuthBudget {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds to wait, when `ip` has spent its budget.
    pub fn spent(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let map = self.windows.lock().ok()?;
        let (start, failures) = map.get(&ip)?;
        let elapsed = now.saturating_duration_since(*start);
        (elapsed < WINDOW && *failures >= self.per_minute)
            .then(|| (WINDOW - elapsed).as_secs().max(1))
    }

    /// Counts one failure of `ip`.
    pub fn record(&self, ip: IpAddr, now: Instant) {
        let Ok(mut map) = self.windows.lock() else {
            return;
        };
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, (start, _)| now.saturating_duration_since(*start) < WINDOW);
            if map.len() >= MAX_TRACKED {
                // Still full of live windows: a flood from many addresses. Forget the oldest
                // half rather than grow without bound.
                let mut starts: Vec<Instant> = map.values().map(|(s, _)| *s).collect();
                starts.sort_unstable();
                let cut = starts[starts.len() / 2];
                map.retain(|_, (start, _)| *start > cut);
            }
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_spent_after_n_failures_and_renews_after_a_minute() {
        let b = AuthBudget::new(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(b.spent(ip, t0).is_none());
            b.record(ip, t0);
        }
        let wait = b.spent(ip, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(wait, 50);
        assert!(b.spent(other, t0).is_none());
        assert!(b.spent(ip, t0 + WINDOW).is_none());
        b.record(ip, t0 + WINDOW);
        assert!(b.spent(ip, t0 + WINDOW).is_none());
    }
}
