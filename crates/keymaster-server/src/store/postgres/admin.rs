//! PostgreSQL: the operator's objects (admin token, tenants, app keys, services) and the audit
//! log.

use keymaster_core::wire::AuditEntry;
use sqlx::PgConnection;

use super::rows::insert_audit;
use super::{db, ms};
use crate::store::columns::{read_audit, read_service, AUDIT_COLUMNS, SERVICE_COLUMNS};
use crate::store::{
    AppKeyAuth, AuditRecord, NewAppKey, NewService, NewTenant, ServiceAuth, StoreError,
};

const ADMIN_HASH: &str = "admin_token_hash";

pub async fn admin_token_hash(c: &mut PgConnection) -> Result<Option<Vec<u8>>, StoreError> {
    sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
        .bind(ADMIN_HASH)
        .fetch_optional(c)
        .await
        .map_err(db)
}

pub async fn init_admin_token_hash(c: &mut PgConnection, hash: &[u8]) -> Result<bool, StoreError> {
    let n =
        sqlx::query("INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(ADMIN_HASH)
            .bind(hash)
            .execute(c)
            .await
            .map_err(db)?
            .rows_affected();
    Ok(n == 1)
}

pub async fn create_tenant(
    c: &mut PgConnection,
    t: &NewTenant,
    a: &AuditRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tenants (id, name, webhook_url, webhook_secret_sealed, created_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&t.id)
    .bind(&t.name)
    .bind(&t.webhook_url)
    .bind(&t.webhook_secret_sealed)
    .bind(ms(a.at))
    .execute(&mut *c)
    .await
    .map_err(db)?;
    insert_audit(c, a).await
}

pub async fn create_app_key(
    c: &mut PgConnection,
    k: &NewAppKey,
    a: &AuditRecord,
) -> Result<bool, StoreError> {
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
        .bind(&k.tenant_id)
        .fetch_optional(&mut *c)
        .await
        .map_err(db)?;
    if exists.is_none() {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO app_keys (id, tenant_id, token_hash, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&k.id)
    .bind(&k.tenant_id)
    .bind(&k.token_hash)
    .bind(ms(a.at))
    .execute(&mut *c)
    .await
    .map_err(db)?;
    insert_audit(c, a).await?;
    Ok(true)
}

pub async fn delete_app_key(
    c: &mut PgConnection,
    id: &str,
    a: &AuditRecord,
) -> Result<bool, StoreError> {
    let n = sqlx::query("DELETE FROM app_keys WHERE id = $1")
        .bind(id)
        .execute(&mut *c)
        .await
        .map_err(db)?
        .rows_affected();
    if n == 1 {
        insert_audit(c, a).await?;
        notify_deleted(c).await?;
    }
    Ok(n == 1)
}

pub async fn create_service(
    c: &mut PgConnection,
    s: &NewService,
    a: &AuditRecord,
) -> Result<(), StoreError> {
    let domains = serde_json::to_string(&s.domains).map_err(|e| StoreError::Db(e.to_string()))?;
    let cidrs =
        serde_json::to_string(&s.allowed_cidrs).map_err(|e| StoreError::Db(e.to_string()))?;
    sqlx::query(
        "INSERT INTO services (id, name, domains, allowed_cidrs, token_hash, created_at,
                               confined_tenant_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&s.id)
    .bind(&s.name)
    .bind(domains)
    .bind(cidrs)
    .bind(&s.token_hash)
    .bind(ms(a.at))
    .bind(&s.confined_tenant_id)
    .execute(&mut *c)
    .await
    .map_err(db)?;
    insert_audit(c, a).await
}

pub async fn delete_service(
    c: &mut PgConnection,
    id: &str,
    a: &AuditRecord,
) -> Result<bool, StoreError> {
    let n = sqlx::query("DELETE FROM services WHERE id = $1")
        .bind(id)
        .execute(&mut *c)
        .await
        .map_err(db)?
        .rows_affected();
    if n == 1 {
        insert_audit(c, a).await?;
        notify_deleted(c).await?;
    }
    Ok(n == 1)
}

/// Tells every replica, at this transaction's commit, to forget the credentials it keeps
/// (`credentials`).
async fn notify_deleted(c: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(super::credentials::CHANNEL)
        .execute(c)
        .await
        .map_err(db)?;
    Ok(())
}

pub async fn app_key_by_token(
    c: &mut PgConnection,
    hash: &[u8],
) -> Result<Option<AppKeyAuth>, StoreError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT id, tenant_id FROM app_keys WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(c)
            .await
            .map_err(db)?;
    Ok(row.map(|(id, tenant_id)| AppKeyAuth { id, tenant_id }))
}

pub async fn service_by_token(
    c: &mut PgConnection,
    hash: &[u8],
) -> Result<Option<ServiceAuth>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {SERVICE_COLUMNS} FROM services WHERE token_hash = $1"
    ))
    .bind(hash)
    .fetch_optional(c)
    .await
    .map_err(db)?;
    row.as_ref().map(read_service).transpose()
}

pub async fn missing_services(
    c: &mut PgConnection,
    ids: &[String],
) -> Result<Vec<String>, StoreError> {
    let present: Vec<String> = sqlx::query_scalar("SELECT id FROM services WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(c)
        .await
        .map_err(db)?;
    Ok(ids
        .iter()
        .filter(|id| !present.contains(id))
        .cloned()
        .collect())
}

pub async fn list_audit(
    c: &mut PgConnection,
    limit: u32,
    before: Option<i64>,
) -> Result<Vec<AuditEntry>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {AUDIT_COLUMNS} FROM audit WHERE id < $1 ORDER BY id DESC LIMIT $2"
    ))
    .bind(before.unwrap_or(i64::MAX))
    .bind(i64::from(limit))
    .fetch_all(c)
    .await
    .map_err(db)?;
    rows.iter().map(read_audit).collect()
}
