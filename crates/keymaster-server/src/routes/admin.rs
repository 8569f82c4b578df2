//! `/v1/admin`: the operator's endpoints (tenants, app keys, services, audit log).
//!
//! Every action is audited in the transaction that makes it; refusals are audited too.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jiff::Timestamp;
use keymaster_core::policy::{parse_cidr, parse_domain};
use keymaster_core::wire::{
    AppKeyCreated, AuditPage, CreateServiceRequest, CreateTenantRequest, Problem, ServiceCreated,
    TenantCreated,
};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Admin;
use crate::crypto::{new_id, new_token, token_hash};
use crate::dispatch::endpoints::EndpointReport;
use crate::error::ApiError;
use crate::extract::{ApiJson, ClientIp};
use crate::netguard;
use crate::state::AppState;
use crate::store::outbox::DeliveryRecord;
use crate::store::{NewAppKey, NewService, NewTenant};
use crate::usecase::audit_record;

const ACTOR: &str = "admin";

fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(
            "name: 1 to 200 characters, no control characters".into(),
        ));
    }
    Ok(name.to_owned())
}

/// Audits a refused admin action and passes the refusal on.
async fn refused(
    state: &AppState,
    action: &'static str,
    ip: std::net::IpAddr,
    e: ApiError,
) -> ApiError {
    let a = audit_record(Timestamp::now(), ACTOR, action, e.code(), None, Some(ip));
    match state.store.append_audit(a).await {
        Ok(()) => e,
        Err(store) => store.into(),
    }
}

#[utoipa::path(
    post, path = "/v1/admin/tenants", tag = "admin",
    request_body = CreateTenantRequest,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Created", body = TenantCreated),
        (status = 400, description = "invalid_request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Creates a tenant (an application developer) with its webhook signing secret.
pub async fn create_tenant(
    State(state): State<AppState>,
    _: Admin,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<CreateTenantRequest>,
) -> Result<(StatusCode, Json<TenantCreated>), ApiError> {
    let name = match check_name(&req.name) {
        Ok(n) => n,
        Err(e) => return Err(refused(&state, "tenant.create", ip, e).await),
    };
    if let Some(url) = &req.webhook_url {
        if let Err(m) =
            netguard::check_url_resolved(url, state.settings.allow_private_webhooks).await
        {
            let e = ApiError::InvalidRequest(format!("webhook_url: {m}"));
            return Err(refused(&state, "tenant.create", ip, e).await);
        }
    }
    let id = new_id("ten_");
    let secret = new_webhook_secret();
    let now = Timestamp::now();
    let mut audit = audit_record(now, ACTOR, "tenant.create", "success", None, Some(ip));
    audit.detail = Some(format!("tenant {id}"));
    state
        .store
        .create_tenant(
            NewTenant {
                id: id.clone(),
                name: name.clone(),
                webhook_url: req.webhook_url.clone(),
                webhook_secret_sealed: state.keys.seal(secret.as_bytes(), id.as_bytes()),
            },
            audit,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TenantCreated {
            id,
            name,
            webhook_secret: secret.to_string(),
        }),
    ))
}

#[utoipa::path(
    post, path = "/v1/admin/tenants/{id}/app-keys", tag = "admin",
    params(("id" = String, Path, description = "Tenant id")),
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Created; the token is shown once", body = AppKeyCreated),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Makes an app key for a tenant.
pub async fn create_app_key(
    State(state): State<AppState>,
    _: Admin,
    ClientIp(ip): ClientIp,
    Path(tenant_id): Path<String>,
) -> Result<(StatusCode, Json<AppKeyCreated>), ApiError> {
    let id = new_id("ak_");
    let token = new_token("kma_");
    let mut audit = audit_record(
        Timestamp::now(),
        ACTOR,
        "app_key.create",
        "success",
        None,
        Some(ip),
    );
    audit.detail = Some(format!("app key {id} for tenant {tenant_id}"));
    let key = NewAppKey {
        id: id.clone(),
        tenant_id,
        token_hash: token_hash(&token),
    };
    if !state.store.create_app_key(key, audit).await? {
        return Err(refused(&state, "app_key.create", ip, ApiError::NotFound).await);
    }
    Ok((
        StatusCode::CREATED,
        Json(AppKeyCreated {
            id,
            token: token.to_string(),
        }),
    ))
}

#[utoipa::path(
    delete, path = "/v1/admin/app-keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "App key id")),
    security(("admin_token" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Deletes an app key; it stops working at once.
pub async fn delete_app_key(
    State(state): State<AppState>,
    _: Admin,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut audit = audit_record(
        Timestamp::now(),
        ACTOR,
        "app_key.delete",
        "success",
        None,
        Some(ip),
    );
    audit.detail = Some(format!("app key {id}"));
    if state.store.delete_app_key(&id, audit).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(refused(&state, "app_key.delete", ip, ApiError::NotFound).await)
    }
}

#[utoipa::path(
    post, path = "/v1/admin/services", tag = "admin",
    request_body = CreateServiceRequest,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Enrolled; the token is shown once", body = ServiceCreated),
        (status = 400, description = "invalid_request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Enrols an outside service.
pub async fn create_service(
    State(state): State<AppState>,
    _: Admin,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<CreateServiceRequest>,
) -> Result<(StatusCode, Json<ServiceCreated>), ApiError> {
    let checked = (|| {
        let name = check_name(&req.name)?;
        // The parsers of a key's `domains` and `fetcher_cidrs`, so that an enrolment and a
        // policy agree on what a domain and a network are.
        let domains = each("domains", &req.domains, parse_domain)?;
        let cidrs = each("allowed_cidrs", &req.allowed_cidrs, parse_cidr)?;
        if domains.len() > 100 || cidrs.len() > 100 {
            return Err(ApiError::InvalidRequest(
                "domains, allowed_cidrs: at most 100 each".into(),
            ));
        }
        Ok((name, domains, cidrs))
    })();
    let (name, domains, allowed_cidrs) = match checked {
        Ok(v) => v,
        Err(e) => return Err(refused(&state, "service.create", ip, e).await),
    };
    let id = new_id("svc_");
    let token = new_token("kms_");
    let mut audit = audit_record(
        Timestamp::now(),
        ACTOR,
        "service.create",
        "success",
        None,
        Some(ip),
    );
    audit.detail = Some(format!("service {id}"));
    state
        .store
        .create_service(
            NewService {
                id: id.clone(),
                name: name.clone(),
                domains,
                allowed_cidrs,
                token_hash: token_hash(&token),
                confined_tenant_id: None,
            },
            audit,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ServiceCreated {
            id,
            name,
            token: token.to_string(),
        }),
    ))
}

/// Parses every element of the list `name`; a refusal names the element (`domains[1]: …`).
fn each<T>(
    name: &str,
    list: &[String],
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, ApiError> {
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            parse(item).map_err(|m| ApiError::InvalidRequest(format!("{name}[{i}]: {m}")))
        })
        .collect()
}

#[utoipa::path(
    delete, path = "/v1/admin/services/{id}", tag = "admin",
    params(("id" = String, Path, description = "Service id")),
    security(("admin_token" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Removes a service; its key stops working at once.
pub async fn delete_service(
    State(state): State<AppState>,
    _: Admin,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut audit = audit_record(
        Timestamp::now(),
        ACTOR,
        "service.delete",
        "success",
        None,
        Some(ip),
    );
    audit.detail = Some(format!("service {id}"));
    if state.store.delete_service(&id, audit).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(refused(&state, "service.delete", ip, ApiError::NotFound).await)
    }
}

/// Paging of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
    /// Only entries with a smaller id (the `id` of the last entry of the previous page).
    pub before: Option<i64>,
}

#[utoipa::path(
    get, path = "/v1/admin/audit", tag = "admin",
    params(AuditQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Newest first", body = AuditPage),
        (status = 400, description = "invalid_request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Reads the audit log.
pub async fn audit(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidRequest("limit: 1 to 1000".into()));
    }
    let entries = state.store.list_audit(limit, q.before).await?;
    Ok(Json(AuditPage { entries }))
}

/// The answer to a webhook secret rotation.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SecretRotated {
    /// The tenant.
    pub id: String,
    /// The new `whsec_` secret; shown once. The previous one keeps signing for 24 hours.
    pub webhook_secret: String,
    /// Until when the previous secret also signs.
    #[schema(value_type = String, format = DateTime)]
    pub previous_valid_until: Timestamp,
}

/// How long the previous webhook secret keeps signing after a rotation.
const ROTATION_OVERLAP_HOURS: i64 = 24;

/// A new `whsec_` secret: 256 random bits, base64.
fn new_webhook_secret() -> zeroize::Zeroizing<String> {
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(raw.as_mut());
    zeroize::Zeroizing::new(format!("whsec_{}", STANDARD.encode(raw.as_ref())))
}

#[utoipa::path(
    post, path = "/v1/admin/tenants/{id}/webhook-secret", tag = "admin",
    params(("id" = String, Path, description = "Tenant id")),
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Rotated; both secrets sign during the overlap", body = SecretRotated),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Rotates a tenant's webhook signing secret.
pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    _: Admin,
    ClientIp(ip): ClientIp,
    Path(tenant_id): Path<String>,
) -> Result<(StatusCode, Json<SecretRotated>), ApiError> {
    let now = Timestamp::now();
    let until = now
        .saturating_add(jiff::SignedDuration::from_hours(ROTATION_OVERLAP_HOURS))
        .unwrap_or(now);
    let secret = new_webhook_secret();
    let mut audit = audit_record(
        now,
        ACTOR,
        "tenant.rotate_webhook_secret",
        "success",
        None,
        Some(ip),
    );
    audit.detail = Some(format!("tenant {tenant_id}"));
    let sealed = state.keys.seal(secret.as_bytes(), tenant_id.as_bytes());
    if !state
        .store
        .rotate_webhook_secret(&tenant_id, sealed, until, audit)
        .await?
    {
        return Err(refused(
            &state,
            "tenant.rotate_webhook_secret",
            ip,
            ApiError::NotFound,
        )
        .await);
    }
    Ok((
        StatusCode::CREATED,
        Json(SecretRotated {
            id: tenant_id,
            webhook_secret: secret.to_string(),
            previous_valid_until: until,
        }),
    ))
}

/// Filter of the deliveries list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// `pending`, `delivered` or `failed` (default `failed`).
    pub status: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

/// `GET /v1/admin/deliveries`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DeliveriesPage {
    /// Newest first.
    pub deliveries: Vec<DeliveryInfo>,
}

/// A delivery as the operator sees it (`GET /v1/admin/deliveries`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct DeliveryInfo {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub key_id: String,
    pub tenant_id: String,
    /// `webhook` or `email`.
    pub channel: String,
    pub target: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl From<DeliveryRecord> for DeliveryInfo {
    fn from(d: DeliveryRecord) -> Self {
        DeliveryInfo {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            key_id: d.key_id,
            tenant_id: d.tenant_id,
            channel: d.channel,
            target: d.target,
            status: d.status,
            attempts: d.attempts,
            last_error: d.last_error,
            created_at: d.created_at,
        }
    }
}

#[utoipa::path(
    get, path = "/v1/admin/deliveries", tag = "admin",
    params(DeliveriesQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Deliveries, newest first", body = DeliveriesPage),
        (status = 400, description = "invalid_request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Lists webhook and e-mail deliveries, by default those that finally failed.
pub async fn deliveries(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeliveriesPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let status = q.status.as_deref().unwrap_or("failed");
    if !matches!(status, "pending" | "delivered" | "failed") {
        return Err(ApiError::InvalidRequest(
            "status: pending, delivered or failed".into(),
        ));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidRequest("limit: 1 to 1000".into()));
    }
    let deliveries = state.store.list_deliveries(status, limit).await?;
    Ok(Json(DeliveriesPage {
        deliveries: deliveries.into_iter().map(DeliveryInfo::from).collect(),
    }))
}

/// `GET /v1/admin/endpoints` (an extension of the API contract): where deliveries go, and how
/// each destination is doing.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EndpointsPage {
    /// Most pending deliveries first. The breaker and the counts are this server process's
    /// (each replica has its own); `pending` is the store's, across replicas.
    pub endpoints: Vec<EndpointInfo>,
}

/// One endpoint as the operator sees it (`GET /v1/admin/endpoints`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct EndpointInfo {
    /// A webhook URL's scheme and authority, or `smtp`.
    pub endpoint: String,
    /// `closed` (delivering), `open` (paused after repeated failures) or `half_open` (probing).
    pub state: String,
    /// End of the pause, while `open`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub paused_until: Option<Timestamp>,
    /// Deliveries waiting in the store (due or not), across all replicas.
    pub pending: u64,
    /// Creation time of the oldest pending delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl From<EndpointReport> for EndpointInfo {
    fn from(e: EndpointReport) -> Self {
        EndpointInfo {
            endpoint: e.endpoint,
            state: e.state,
            paused_until: e.paused_until,
            pending: e.pending,
            oldest_pending: e.oldest_pending,
            claimed: e.claimed,
            in_flight: e.in_flight,
            consecutive_failures: e.consecutive_failures,
            delivered: e.delivered,
            failed_attempts: e.failed_attempts,
            last_error: e.last_error,
        }
    }
}

#[utoipa::path(
    get, path = "/v1/admin/endpoints", tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Delivery endpoints, most pending deliveries first", body = EndpointsPage),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Lists the delivery endpoints (webhook origins, the SMTP relay): pending deliveries, circuit
/// breaker state (`closed`, `open` = paused after repeated failures, `half_open` = probing),
/// deliveries in flight, recent failures.
pub async fn endpoints(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<EndpointsPage>, ApiError> {
    let backlog = state.store.endpoint_backlog(1000).await?;
    Ok(Json(EndpointsPage {
        endpoints: state
            .endpoints
            .report(backlog)
            .into_iter()
            .map(EndpointInfo::from)
            .collect(),
    }))
}
