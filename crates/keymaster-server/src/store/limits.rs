//! The backend-neutral arithmetic of two bounds the store keeps, so that both backends count
//! the same way: which audit rows coalesce, and when a key may have a new code again.
//!
//! Not responsible for the failure budget of retrievals (each backend's `rows`) or for any SQL.

use jiff::Timestamp;

use super::AuditRecord;

/// One hour, in the stored milliseconds.
const HOUR_MS: i64 = 3_600_000;

/// The `detail` of a coalesced audit row that stands for one refusal.
pub const COALESCED_ONCE: &str = "1 time in this minute";
/// What follows the count in the `detail` of a coalesced audit row that stands for more.
pub const COALESCED_TIMES: &str = " times in this minute";

/// What makes refusals one audit row: the same actor (the credential), action and outcome
/// within the same minute of the clock (UTC).
pub fn coalesce_key(a: &AuditRecord) -> String {
    let minute = a.at.as_millisecond().div_euclid(60_000);
    format!("{minute} {} {} {}", a.actor, a.action, a.outcome)
}

/// Seconds until a key may get a new code, when it may not now: `recent` holds the times
/// (Unix milliseconds) of its latest new codes, newest first, at most `per_hour` of them. It
/// may not while `per_hour` of them fall within the hour before `now` (a sliding window): then
/// until the oldest of those is an hour old.
pub fn recode_retry_after(recent: &[i64], per_hour: u32, now: Timestamp) -> Option<u64> {
    let per_hour = usize::try_from(per_hour).unwrap_or(usize::MAX);
    if recent.len() < per_hour {
        return None;
    }
    let oldest = *recent.get(per_hour.checked_sub(1)?)?;
    let wait_ms = oldest + HOUR_MS - now.as_millisecond();
    (wait_ms > 0).then(|| u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1))
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::{coalesce_key, recode_retry_after};
    use crate::store::AuditRecord;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(ms).unwrap()
    }

    #[test]
    fn recodes_are_bounded_by_a_sliding_hour() {
        let now = at(10 * 3_600_000);
        let now_ms = now.as_millisecond();
        assert_eq!(recode_retry_after(&[], 3, now), None);
        assert_eq!(recode_retry_after(&[now_ms, now_ms], 3, now), None);
        // Three within the hour: wait until the oldest of them is an hour old.
        let recent = [now_ms - 1_000, now_ms - 2_000, now_ms - 600_000];
        assert_eq!(recode_retry_after(&recent, 3, now), Some(3_000));
        // The third newest is older than an hour: room again.
        let recent = [now_ms - 1_000, now_ms - 2_000, now_ms - 3_600_000];
        assert_eq!(recode_retry_after(&recent, 3, now), None);
        // Rounded up, at least a second.
        let recent = [now_ms - 3_599_999];
        assert_eq!(recode_retry_after(&recent, 1, now), Some(1));
    }

    #[test]
    fn refusals_coalesce_per_actor_action_outcome_and_minute() {
        let row = |ms, actor: &str, outcome: &str| AuditRecord {
            at: at(ms),
            actor: actor.into(),
            action: "key.retrieve",
            outcome: outcome.into(),
            key_id: None,
            ip: None,
            detail: None,
        };
        let key = |ms, actor, outcome| coalesce_key(&row(ms, actor, outcome));
        let base = 1_700_000_040_000; // the start of a minute
        assert_eq!(
            key(base, "service:a", "invalid_code"),
            key(base + 59_999, "service:a", "invalid_code")
        );
        assert_ne!(
            key(base, "service:a", "invalid_code"),
            key(base + 60_000, "service:a", "invalid_code")
        );
        assert_ne!(
            key(base, "service:a", "invalid_code"),
            key(base, "service:b", "invalid_code")
        );
        assert_ne!(
            key(base, "service:a", "invalid_code"),
            key(base, "service:a", "rate_limited")
        );
    }
}
