//! The demo's credentials: a tenant, an app key and an enrolled service ("example-web"), made
//! through the `Store` the first time the demo is used by this process.
//!
//! The tokens are kept in this process's memory only and never leave the server: the demo's
//! endpoints use them on the browser's behalf. The demo tenant has a fixed id ([`TENANT_ID`])
//! so that a later start finds it; each process makes its own fresh app key and service
//! rather than storing tokens anywhere. (A process that stops leaves its app key and service
//! rows behind; their tokens are gone with the process, so they open nothing.)
//!
//! Not responsible for deciding whether the demo is on (the `demo` setting).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jiff::Timestamp;
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::crypto::{new_id, new_token, token_hash};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{AppKeyAuth, NewAppKey, NewService, NewTenant, ServiceAuth};
use crate::usecase::audit_record;

/// The demo tenant's id: fixed, so that every start of the demo uses the same tenant.
pub const TENANT_ID: &str = "ten_demo";
/// The demo tenant's name.
pub const TENANT_NAME: &str = "keymaster demo";
/// The example outside service's name, as the holder sees it in "retrieved by …".
pub const SERVICE_NAME: &str = "example-web";
/// The example outside service's enrolled domain.
pub const SERVICE_DOMAIN: &str = "example-web.localhost";
/// Who the audit log says made the demo's credentials.
const ACTOR: &str = "demo";

/// The demo's credentials, in memory only.
pub struct Credentials {
    /// The `kma_` app key the demo deposits with.
    pub app_token: Zeroizing<String>,
    /// The `kms_` service key "example-web" retrieves with.
    pub service_token: Zeroizing<String>,
    /// The service's id (the demo's keys may be retrieved only by it).
    pub service_id: String,
}

impl Credentials {
    /// The app key as the store knows it; `None` once an operator has deleted it.
    pub async fn app(&self, state: &AppState) -> Result<Option<AppKeyAuth>, ApiError> {
        Ok(state
            .store
            .app_key_by_token(&token_hash(&self.app_token))
            .await?)
    }

    /// The service as the store knows it; `None` once an operator has deleted it.
    pub async fn service(&self, state: &AppState) -> Result<Option<ServiceAuth>, ApiError> {
        Ok(state
            .store
            .service_by_token(&token_hash(&self.service_token))
            .await?)
    }
}

/// Makes this process's demo credentials, and the demo tenant if the database has none yet.
pub async fn bootstrap(state: &AppState) -> Result<Credentials, ApiError> {
    let now = Timestamp::now();
    let app_token = new_token("kma_");
    let app_key = NewAppKey {
        id: new_id("ak_"),
        tenant_id: TENANT_ID.to_owned(),
        token_hash: token_hash(&app_token),
    };
    let mut audit = audit_record(now, ACTOR, "app_key.create", "success", None, None);
    audit.detail = Some(format!(
        "demo app key {} for tenant {TENANT_ID}",
        app_key.id
    ));
    if !state
        .store
        .create_app_key(app_key.clone(), audit.clone())
        .await?
    {
        // The first start of the demo on this database: make its tenant, then the key.
        let mut secret = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(secret.as_mut());
        let secret = Zeroizing::new(format!("whsec_{}", STANDARD.encode(secret.as_ref())));
        let mut tenant_audit = audit_record(now, ACTOR, "tenant.create", "success", None, None);
        tenant_audit.detail = Some(format!("tenant {TENANT_ID}"));
        state
            .store
            .create_tenant(
                NewTenant {
                    id: TENANT_ID.to_owned(),
                    name: TENANT_NAME.to_owned(),
                    webhook_url: None,
                    webhook_secret_sealed: state.keys.seal(secret.as_bytes(), TENANT_ID.as_bytes()),
                },
                tenant_audit,
            )
            .await?;
        if !state.store.create_app_key(app_key, audit).await? {
            return Err(ApiError::Internal(
                "demo: the tenant just made is not there".into(),
            ));
        }
    }

    let service_token = new_token("kms_");
    let service_id = new_id("svc_");
    let mut audit = audit_record(now, ACTOR, "service.create", "success", None, None);
    audit.detail = Some(format!("demo service {service_id}"));
    state
        .store
        .create_service(
            NewService {
                id: service_id.clone(),
                name: SERVICE_NAME.to_owned(),
                domains: vec![SERVICE_DOMAIN.to_owned()],
                allowed_cidrs: Vec::new(),
                token_hash: token_hash(&service_token),
                // What keeps the demo, which acts without credentials, to its own keys.
                confined_tenant_id: Some(TENANT_ID.to_owned()),
            },
            audit,
        )
        .await?;
    tracing::info!(tenant = TENANT_ID, service = %service_id, "demo credentials made");
    Ok(Credentials {
        app_token,
        service_token,
        service_id,
    })
}
