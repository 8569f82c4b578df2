//! How long the sweeper keeps what is finished: a key's record, its events, retrievals and
//! tombstone, and finished deliveries, for `records` after they ended (`retention`); audit rows
//! for `audit` after they were written (`audit_retention`), or for ever.
//!
//! Audit rows and deliveries are purged oldest first by id, a batch at a time: the sweep reads
//! the oldest batch through the primary key (or `deliveries_status`) and deletes those of its
//! rows that are past their horizon, so that a sweep with nothing to purge reads one batch of
//! index entries, never the whole table, and no index on the time columns is needed. Ids
//! follow time closely enough for this: an audit row is written with its time, and a delivery
//! finishes within its retry schedule (hours) of its id being drawn; a row still inside the
//! horizon at the head of the table holds back at most itself.

use std::time::Duration;

use jiff::Timestamp;

/// What the sweeper keeps, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished keys (with their events, retrievals and tombstones) and finished deliveries.
    pub records: Duration,
    /// Audit rows; `None`: kept for ever.
    pub audit: Option<Duration>,
}

impl Retention {
    /// Keeps the audit log for ever.
    pub fn records_only(records: Duration) -> Retention {
        Retention {
            records,
            audit: None,
        }
    }

    /// Milliseconds since the epoch before which finished records are purged.
    pub fn records_horizon(&self, now: Timestamp) -> i64 {
        horizon(now, self.records)
    }

    /// Milliseconds since the epoch before which audit rows are purged, if they are.
    pub fn audit_horizon(&self, now: Timestamp) -> Option<i64> {
        self.audit.map(|d| horizon(now, d))
    }
}

fn horizon(now: Timestamp, keep: Duration) -> i64 {
    let keep = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    now.as_millisecond().saturating_sub(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn horizons_lie_the_kept_time_before_now_and_never_overflow() {
        let now = Timestamp::from_millisecond(1_000_000).unwrap();
        let r = Retention {
            records: Duration::from_secs(100),
            audit: Some(Duration::from_secs(900)),
        };
        assert_eq!(r.records_horizon(now), 900_000);
        assert_eq!(r.audit_horizon(now), Some(100_000));
        assert_eq!(
            Retention::records_only(Duration::MAX).audit_horizon(now),
            None
        );
        assert!(Retention::records_only(Duration::MAX).records_horizon(now) < 0);
    }
}
