//! The backend-neutral part of the retrieval transaction: from the stored facts of a key and
//! the request to the pure policy decision, and the deadline of a confirmation hold. Each
//! backend loads the row, calls [`evaluate`], and writes what the decision says in its own SQL.

use jiff::{SignedDuration, Timestamp};
use keymaster_core::policy::{decide, Decision, KeyFacts, Pending, Policy, Requester};

use super::{KeyState, RetrieveCommand, StoreError};

/// A live key's row as both backends store it (times in Unix milliseconds).
pub struct StoredFacts<'a> {
    pub key_id: &'a str,
    /// JSON of [`Policy`].
    pub policy_json: &'a str,
    pub state: &'a str,
    pub expires_at_ms: i64,
    pub retrievals: u32,
    pub failed_password_attempts: u32,
    pub pending_retrieval_id: Option<&'a str>,
    pub pending_service_id: Option<&'a str>,
    pub confirm_by_ms: Option<i64>,
    /// The depositor's network as stored (`203.0.113.0/24`), for the `proximity` rule.
    pub origin_network: Option<&'a str>,
}

/// The policy and what it decided.
pub struct Evaluated {
    pub policy: Policy,
    pub decision: Decision,
    /// The deadline of the hold the key is under, if any.
    pub held_until: Option<Timestamp>,
}

fn ts(ms: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millisecond(ms).map_err(|e| StoreError::Corrupt(format!("timestamp: {e}")))
}

/// Runs `keymaster_core::policy::decide` on a stored key for this retrieval.
pub fn evaluate(cmd: &RetrieveCommand, row: &StoredFacts<'_>) -> Result<Evaluated, StoreError> {
    let policy: Policy = serde_json::from_str(row.policy_json)
        .map_err(|e| StoreError::Corrupt(format!("policy of {}: {e}", row.key_id)))?;
    let pending = match (
        row.pending_retrieval_id,
        row.pending_service_id,
        row.confirm_by_ms,
    ) {
        (Some(rid), Some(sid), Some(by)) => Some(Pending {
            retrieval_id: rid.to_owned(),
            service_id: sid.to_owned(),
            confirm_by: ts(by)?,
        }),
        _ => None,
    };
    let held_until = pending.as_ref().map(|p| p.confirm_by);
    let facts = KeyFacts {
        expires_at: ts(row.expires_at_ms)?,
        retrievals: row.retrievals,
        failed_password_attempts: row.failed_password_attempts,
        locked: row.state == KeyState::Locked.as_str(),
        pending,
        origin_network: row
            .origin_network
            .map(|n| {
                n.parse().map_err(|e| {
                    StoreError::Corrupt(format!("origin_network of {}: {e}", row.key_id))
                })
            })
            .transpose()?,
    };
    let requester = Requester {
        service_id: &cmd.service.id,
        service_domains: &cmd.service.domains,
        source_ip: cmd.source_ip,
        context: cmd.context.as_ref(),
        password: cmd.password,
    };
    let decision = decide(&policy, &facts, &requester, cmd.now);
    Ok(Evaluated {
        policy,
        decision,
        held_until,
    })
}

/// When a hold for confirmation that starts `now` ends, to the stored millisecond (so that a
/// repeated retrieval, which reads it back, reports the same `confirm_by`).
pub fn confirm_deadline(now: Timestamp, policy: &Policy) -> Result<Timestamp, StoreError> {
    let by = now
        .checked_add(SignedDuration::from_secs(i64::from(
            policy.confirm_grace_seconds,
        )))
        .map_err(|e| StoreError::Db(e.to_string()))?;
    ts(by.as_millisecond())
}
