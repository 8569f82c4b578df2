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
//!
//! A tower layer of its own rather than `axum::middleware::from_fn`, which boxes the inner
//! service and its future for every request: here the answer's future is the inner one, with a
//! plain function mapped over it on an escrow path.

use std::task::{Context, Poll};

use axum::http::{header, HeaderValue, Request, Response};
use futures::future::{Either, Map};
use futures::FutureExt;
use tower::{Layer, Service};

/// Whether answers to `path` must not be stored by any cache.
pub fn is_escrow_path(path: &str) -> bool {
    path.starts_with("/v1/") || path.starts_with("/demo/api/")
}

/// Sets `Cache-Control: no-store` on the answer to an escrow path, replacing any other value
/// (the event stream's `no-cache` included: `no-store` is the stricter of the two).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoStoreLayer;

impl<S> Layer<S> for NoStoreLayer {
    type Service = NoStore<S>;

    fn layer(&self, inner: S) -> NoStore<S> {
        NoStore(inner)
    }
}

/// The service of [`NoStoreLayer`].
#[derive(Clone, Debug)]
pub struct NoStore<S>(S);

/// What an escrow path's answer goes through.
type Mark<R, E> = fn(Result<Response<R>, E>) -> Result<Response<R>, E>;

impl<S, B, R> Service<Request<B>> for NoStore<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Either<Map<S::Future, Mark<R, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if is_escrow_path(req.uri().path()) {
            Either::Left(self.0.call(req).map(mark_no_store as Mark<R, S::Error>))
        } else {
            Either::Right(self.0.call(req))
        }
    }
}

fn mark_no_store<R, E>(answer: Result<Response<R>, E>) -> Result<Response<R>, E> {
    answer.map(|mut resp| {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    })
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
