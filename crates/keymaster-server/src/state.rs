//! The state every handler shares: the store, the derived keys, the settings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keymaster_core::policy::PolicyLimits;

use crate::config::Settings;
use crate::crypto::Keys;
use crate::store::Store;

/// Shared by every request; cheap to clone: one reference count, however many parts it has.
/// (Axum clones the state for every extractor of every request; with a count per part, those
/// clones and drops take ~1.5 % of the workers' time under load.)
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    /// The database.
    pub store: Arc<dyn Store>,
    /// Keys derived from the server secret.
    pub keys: Arc<Keys>,
    /// The validated settings.
    pub settings: Arc<Settings>,
    /// SHA-256 of the admin token.
    pub admin_hash: Arc<Vec<u8>>,
    /// TTL bounds for policies, from the settings.
    pub limits: Arc<PolicyLimits>,
    /// Failed authentications per source address.
    pub auth_budget: Arc<crate::auth_budget::AuthBudget>,
    /// Open event streams and running key generations, and their bounds.
    pub capacity: crate::capacity::Capacity,
    /// Renders `/metrics`.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Becomes `true` when the server starts to stop; long-lived answers (the event stream)
    /// end on it so that a stop is not held up by them.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// argon2 verifications of retrieval passwords, for `/metrics`.
    pub password_verifications: AtomicU64,
    /// The dispatcher's state of each delivery endpoint (`GET /v1/admin/endpoints`).
    pub endpoints: Arc<crate::dispatch::endpoints::Endpoints>,
}

impl Shared {
    /// Counts one argon2 verification of a retrieval password. Kept per server rather than in
    /// the process-wide metrics recorder, so that each server (tests run many in one process)
    /// reports its own (`routes::health::metrics`).
    pub fn count_password_verification(&self) {
        self.password_verifications.fetch_add(1, Ordering::Relaxed);
    }
}
