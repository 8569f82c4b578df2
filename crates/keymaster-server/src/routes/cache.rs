//! `Cache-Control: no-store` on every answer of the escrow: everything under `/v1/` and the
//! demo's API under `/demo/api/`.
//!
//! The API contract asks it of answers that carry a code, a token, a private key or a secret
//! (deposit, recode, retrieval, the admin's tenant, app key and service creation, the webhook
//! secret's rotation, the demo's deposit). Marking the whole API rather than those answers one
//! by one means a new endpoint cannot forget it, and a careful user expects no answer of a key
//! escrow, a refusal included, to be kept by a browser or a proxy on the way. Refusals and
//! fallbacks are covered too, because this layer wraps the whole router.
//!
//! Not responsible for the service endpoints (`/healthz`, `/metrics`, `/openapi.json`) or the
//! demo's pages, which carry nothing secret and set their own caching.

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// Whether answers to `path` must not be stored by any cache.
pub fn is_escrow_path(path: &str) -> bool {
    path.starts_with("/v1/") || path.starts_with("/demo/api/")
}

/// Sets `Cache-Control: no-store` on the answer to an escrow path, replacing any other value
/// (the event stream's `no-cache` included: `no-store` is the stricter of the two).
pub async fn no_store(req: Request, next: Next) -> Response {
    let escrow = is_escrow_path(req.uri().path());
    let mut resp = next.run(req).await;
    if escrow {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_and_the_demo_api_are_escrow_paths() {
        for p in [
            "/v1/keys",
            "/v1/retrievals",
            "/v1/admin/tenants",
            "/v1/keys/key_1/events",
            "/v1/unknown",
            "/demo/api/deposit",
        ] {
            assert!(is_escrow_path(p), "{p}");
        }
        for p in [
            "/healthz",
            "/metrics",
            "/openapi.json",
            "/demo/",
            "/demo/app.js",
            "/v1",
        ] {
            assert!(!is_escrow_path(p), "{p}");
        }
    }
}
