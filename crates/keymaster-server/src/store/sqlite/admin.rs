//! SQLite: the operator's objects (admin token, tenants, app keys, services) and the audit log.

use keymaster_core::wire::AuditEntry;
use rusqlite::{params, Connection, OptionalExtension};

use super::ms;
use super::rows::insert_audit;
use super::tx::Tx;
use super::writer::db;
use crate::store::columns::{read_audit, read_service, AUDIT_COLUMNS, SERVICE_COLUMNS};
use crate::store::{
    AppKeyAuth, AuditRecord, NewAppKey, NewService, NewTenant, ServiceAuth, StoreError,
};

const ADMIN_HASH: &str = "admin_token_hash";

pub fn admin_token_hash(c: &Connection) -> Result<Option<Vec<u8>>, StoreError> {
    c.query_row(
        "SELECT value FROM meta WHERE name = ?1",
        params![ADMIN_HASH],
        |r| r.get(0),
    )
    .optional()
    .map_err(db)
}

pub fn init_admin_token_hash(c: &Connection, hash: &[u8]) -> Result<bool, StoreError> {
    let n = c
        .execute(
            "INSERT OR IGNORE INTO meta (name, value) VALUES (?1, ?2)",
            params![ADMIN_HASH, hash],
        )
        .map_err(db)?;
    Ok(n == 1)
}

pub fn create_tenant(c: &Tx<'_>, t: &NewTenant, a: &AuditRecord) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO tenants (id, name, webhook_url, webhook_secret_sealed, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            t.id,
            t.name,
            t.webhook_url,
            t.webhook_secret_sealed,
            ms(a.at)
        ],
    )
    .map_err(db)?;
    insert_audit(c, a)
}

pub fn create_app_key(c: &Tx<'_>, k: &NewAppKey, a: &AuditRecord) -> Result<bool, StoreError> {
    let exists: Option<i64> = c
        .query_row(
            "SELECT 1 FROM tenants WHERE id = ?1",
            params![k.tenant_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?;
    if exists.is_none() {
        return Ok(false);
    }
    c.execute(
        "INSERT INTO app_keys (id, tenant_id, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![k.id, k.tenant_id, k.token_hash, ms(a.at)],
    )
    .map_err(db)?;
    insert_audit(c, a)?;
    Ok(true)
}

pub fn delete_app_key(c: &Tx<'_>, id: &str, a: &AuditRecord) -> Result<bool, StoreError> {
    let n = c
        .execute("DELETE FROM app_keys WHERE id = ?1", params![id])
        .map_err(db)?;
    if n == 1 {
        insert_audit(c, a)?;
    }
    Ok(n == 1)
}

pub fn create_service(c: &Tx<'_>, s: &NewService, a: &AuditRecord) -> Result<(), StoreError> {
    let domains = serde_json::to_string(&s.domains).map_err(|e| StoreError::Db(e.to_string()))?;
    let cidrs =
        serde_json::to_string(&s.allowed_cidrs).map_err(|e| StoreError::Db(e.to_string()))?;
    c.execute(
        "INSERT INTO services (id, name, domains, allowed_cidrs, token_hash, created_at,
                               confined_tenant_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            s.id,
            s.name,
            domains,
            cidrs,
            s.token_hash,
            ms(a.at),
            s.confined_tenant_id
        ],
    )
    .map_err(db)?;
    insert_audit(c, a)
}

pub fn delete_service(c: &Tx<'_>, id: &str, a: &AuditRecord) -> Result<bool, StoreError> {
    let n = c
        .execute("DELETE FROM services WHERE id = ?1", params![id])
        .map_err(db)?;
    if n == 1 {
        insert_audit(c, a)?;
    }
    Ok(n == 1)
}

pub fn app_key_by_token(c: &Connection, hash: &[u8]) -> Result<Option<AppKeyAuth>, StoreError> {
    c.prepare_cached("SELECT id, tenant_id FROM app_keys WHERE token_hash = ?1")
        .and_then(|mut s| {
            s.query_row(params![hash], |r| {
                Ok(AppKeyAuth {
                    id: r.get(0)?,
                    tenant_id: r.get(1)?,
                })
            })
            .optional()
        })
        .map_err(db)
}

pub fn service_by_token(c: &Connection, hash: &[u8]) -> Result<Option<ServiceAuth>, StoreError> {
    c.prepare_cached(&format!(
        "SELECT {SERVICE_COLUMNS} FROM services WHERE token_hash = ?1"
    ))
    .and_then(|mut s| {
        s.query_row(params![hash], |r| Ok(read_service(r)))
            .optional()
    })
    .map_err(db)?
    .transpose()
}

pub fn missing_services(c: &Connection, ids: &[String]) -> Result<Vec<String>, StoreError> {
    let mut stmt = c
        .prepare_cached("SELECT 1 FROM services WHERE id = ?1")
        .map_err(db)?;
    let mut missing = Vec::new();
    for id in ids {
        if !stmt.exists(params![id]).map_err(db)? {
            missing.push(id.clone());
        }
    }
    Ok(missing)
}

/// The newest audit rows before the id `before`, without the sweeper's blank row (`sweep.rs`).
pub fn list_audit(
    c: &Connection,
    limit: u32,
    before: Option<i64>,
) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE id < ?1 AND action != ''
             ORDER BY id DESC LIMIT +?2"
        ))
        .map_err(db)?;
    let rows = stmt
        .query_map(params![before.unwrap_or(i64::MAX), limit], |r| {
            Ok(read_audit(r))
        })
        .map_err(db)?;
    rows.map(|r| r.map_err(db)?).collect()
}
