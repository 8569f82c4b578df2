//! Authentication: bearer tokens to principals, as axum extractors.
//!
//! The token's prefix says which table to look in (`kma_` app keys, `kms_` services, `kmh_`
//! holders; anything else is compared with the admin token). Each route asks for the principal
//! it needs: a missing or unknown token is `401 unauthorized`, a valid token of another kind is
//! `403 forbidden`. Tokens are compared only as SHA-256 hashes.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use std::time::Instant;

use subtle::ConstantTimeEq;

use crate::crypto::{holder_key_id, token_hash};
use crate::error::ApiError;
use crate::extract::ClientIp;
use crate::state::AppState;
use crate::store::{AppKeyAuth, KeyRecord, ServiceAuth};

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The operator.
    Admin,
    /// An application developer's app key.
    App(AppKeyAuth),
    /// An enrolled outside service.
    Service(ServiceAuth),
    /// The holder of one key.
    Holder(KeyRecord),
}

/// The bearer token of a request, if any.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty() && token.len() <= 256).then_some(token)
}

/// Resolves the request's credential to a principal. Bad or missing credentials count against
/// the source address's budget; once it is spent, the address gets `429` until the minute ends.
pub async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<Principal, ApiError> {
    let ip = ClientIp::from_request_parts(parts, state).await?.0;
    let now = Instant::now();
    if let Some(wait) = state.auth_budget.spent(ip, now) {
        return Err(ApiError::RateLimited(wait));
    }
    let result = principal(parts, state).await;
    if matches!(result, Err(ApiError::Unauthorized)) {
        state.auth_budget.record(ip, now);
    }
    result
}

async fn principal(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
    let hash = token_hash(token);
    let found = if token.starts_with("kma_") {
        state
            .store
            .app_key_by_token(&hash)
            .await?
            .map(Principal::App)
    } else if token.starts_with("kms_") {
        state
            .store
            .service_by_token(&hash)
            .await?
            .map(Principal::Service)
    } else if token.starts_with("kmh_") {
        state
            .store
            .key_by_holder(holder_key_id(token).as_deref(), &hash)
            .await?
            .map(Principal::Holder)
    } else {
        bool::from(hash.ct_eq(&state.admin_hash)).then_some(Principal::Admin)
    };
    match found {
        Some(p) => Ok(p),
        None => {
            metrics::counter!("keymaster_auth_failures_total").increment(1);
            Err(ApiError::Unauthorized)
        }
    }
}

/// The operator (admin token).
pub struct Admin;
/// A tenant's app key.
pub struct App(pub AppKeyAuth);
/// An enrolled service.
pub struct Service(pub ServiceAuth);
/// The holder of one key.
pub struct Holder(pub KeyRecord);

macro_rules! extractor {
    ($ty:ident, $pat:pat => $out:expr) => {
        impl FromRequestParts<AppState> for $ty {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Self::Rejection> {
                match authenticate(parts, state).await? {
                    $pat => Ok($out),
                    _ => Err(ApiError::Forbidden),
                }
            }
        }
    };
}

extractor!(Admin, Principal::Admin => Admin);
extractor!(App, Principal::App(a) => App(a));
extractor!(Service, Principal::Service(s) => Service(s));
extractor!(Holder, Principal::Holder(k) => Holder(k));
