//! SQLite: the verified handoff's rows. The retrieval record that the SAS exchange and
//! disputes work on (written by the retrieval transaction), the SAS request and reveal, the
//! dispute, and whether a gone key's event stream waits for a reveal. The decisions are
//! `store::handoff`'s; this file only reads and writes.

use jiff::Timestamp;
use keymaster_core::handoff::Bytes32;
use rusqlite::{params, Connection, OptionalExtension};

use super::rows::{insert_audit, insert_event, EventRow};
use super::tx::Tx;
use super::writer::db;
use super::{ms, ts};
use crate::store::events::KeyRef;
use crate::store::handoff::{
    decide_dispute, decide_request, decide_reveal_row, disputed_event, sas_requested_event,
    DisputeOutcome, RevealOutcome, RevealRow, SasNonceBytes, SasRequestOutcome, REVEAL_WINDOW,
};
use crate::store::{AuditRecord, ServiceAuth, StoreError};

/// The tenant's name, for a preview.
pub fn tenant_name(c: &Connection, tenant_id: &str) -> Result<String, StoreError> {
    c.prepare_cached("SELECT name FROM tenants WHERE id = ?1")
        .and_then(|mut s| s.query_row(params![tenant_id], |r| r.get(0)).optional())
        .map_err(db)?
        .ok_or_else(|| StoreError::Corrupt(format!("key of unknown tenant {tenant_id}")))
}

/// The key facts every event of a retrieval's key carries.
struct KeyOf {
    key_id: String,
    tenant_id: String,
    label: Option<String>,
}

impl KeyOf {
    fn key_ref(&self) -> KeyRef<'_> {
        KeyRef {
            key_id: &self.key_id,
            tenant_id: &self.tenant_id,
            label: self.label.as_deref(),
        }
    }
}

pub fn request_sas(
    c: &Tx<'_>,
    retrieval_id: &str,
    service: &ServiceAuth,
    nonce: &Bytes32,
    a: &AuditRecord,
) -> Result<SasRequestOutcome, StoreError> {
    let row: Option<(KeyOf, Option<Vec<u8>>)> = c
        .query_row(
            "SELECT k.id, k.tenant_id, k.label, r.service_nonce
             FROM retrievals r JOIN keys k ON k.id = r.key_id
             WHERE r.id = ?1 AND r.service_id = ?2",
            params![retrieval_id, service.id],
            |r| {
                Ok((
                    KeyOf {
                        key_id: r.get(0)?,
                        tenant_id: r.get(1)?,
                        label: r.get(2)?,
                    },
                    r.get(3)?,
                ))
            },
        )
        .optional()
        .map_err(db)?;
    let Some((key, stored)) = row else {
        return Ok(SasRequestOutcome::NotFound);
    };
    if let Err(outcome) = decide_request(stored.as_deref(), nonce) {
        return Ok(outcome);
    }
    c.execute(
        "UPDATE retrievals SET service_nonce = ?2 WHERE id = ?1",
        params![retrieval_id, nonce.as_slice()],
    )
    .map_err(db)?;
    let svc = (service.id.as_str(), service.name.as_str());
    let event = sas_requested_event(&key.key_ref(), svc, retrieval_id, nonce, a.at);
    insert_event(c, &EventRow::new(event)?, None)?;
    let mut audit = a.clone();
    audit.key_id = Some(key.key_id.clone());
    insert_audit(c, &audit)?;
    Ok(SasRequestOutcome::Requested)
}

pub fn reveal_sas(
    c: &Tx<'_>,
    key_id: &str,
    retrieval_id: &str,
    nonce: &Bytes32,
    a: &AuditRecord,
) -> Result<RevealOutcome, StoreError> {
    let row: Option<RevealRow> = c
        .query_row(
            "SELECT r.service_nonce, r.device_nonce, k.sas_commitment
             FROM retrievals r JOIN keys k ON k.id = r.key_id
             WHERE r.id = ?1 AND r.key_id = ?2",
            params![retrieval_id, key_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(db)?;
    if let Err(outcome) = decide_reveal_row(row.as_ref(), nonce) {
        return Ok(outcome);
    }
    c.execute(
        "UPDATE retrievals SET device_nonce = ?2 WHERE id = ?1",
        params![retrieval_id, nonce.as_slice()],
    )
    .map_err(db)?;
    insert_audit(c, a)?;
    Ok(RevealOutcome::Revealed)
}

pub fn sas_nonces(
    c: &Connection,
    retrieval_id: &str,
    service: &ServiceAuth,
) -> Result<Option<SasNonceBytes>, StoreError> {
    c.prepare_cached(
        "SELECT service_nonce, device_nonce FROM retrievals WHERE id = ?1 AND service_id = ?2",
    )
    .and_then(|mut s| {
        s.query_row(params![retrieval_id, service.id], |r| {
            Ok(SasNonceBytes {
                service: r.get(0)?,
                device: r.get(1)?,
            })
        })
        .optional()
    })
    .map_err(db)
}

pub fn dispute(
    c: &Tx<'_>,
    retrieval_id: &str,
    service: &ServiceAuth,
    reason: &str,
    a: &AuditRecord,
) -> Result<DisputeOutcome, StoreError> {
    let row: Option<(KeyOf, i64, bool, bool)> = c
        .query_row(
            "SELECT k.id, k.tenant_id, k.label, r.at, r.disputed_at IS NOT NULL,
                    k.notify IS NOT NULL
             FROM retrievals r JOIN keys k ON k.id = r.key_id
             WHERE r.id = ?1 AND r.service_id = ?2",
            params![retrieval_id, service.id],
            |r| {
                Ok((
                    KeyOf {
                        key_id: r.get(0)?,
                        tenant_id: r.get(1)?,
                        label: r.get(2)?,
                    },
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .optional()
        .map_err(db)?;
    let Some((key, at, disputed, notify)) = row else {
        return Ok(DisputeOutcome::NotFound);
    };
    if let Err(outcome) = decide_dispute(ts(at)?, disputed, a.at) {
        return Ok(outcome);
    }
    c.execute(
        "UPDATE retrievals SET disputed_at = ?2, dispute_reason = ?3 WHERE id = ?1",
        params![retrieval_id, ms(a.at), reason],
    )
    .map_err(db)?;
    let svc = (service.id.as_str(), service.name.as_str());
    let event = disputed_event(&key.key_ref(), svc, retrieval_id, reason, a.at);
    insert_event(c, &EventRow::new(event)?, Some(notify))?;
    let mut audit = a.clone();
    audit.key_id = Some(key.key_id.clone());
    insert_audit(c, &audit)?;
    Ok(DisputeOutcome::Disputed)
}

pub fn awaiting_reveal(c: &Connection, key_id: &str, now: Timestamp) -> Result<bool, StoreError> {
    let since = ms(now) - REVEAL_WINDOW.as_millis() as i64;
    c.prepare_cached(
        "SELECT EXISTS (
             SELECT 1 FROM retrievals r JOIN keys k ON k.id = r.key_id
             WHERE r.key_id = ?1 AND k.sas_commitment IS NOT NULL
               AND r.device_nonce IS NULL AND r.at > ?2)",
    )
    .and_then(|mut s| s.query_row(params![key_id, since], |r| r.get(0)))
    .map_err(db)
}
