//! The HTTP routes, one module per resource, and the router that joins them with the
//! cross-cutting layers (body limit, request timeout, concurrency bound, request ids, tracing,
//! problem+json fallbacks). Connection-level limits (header timeout, head size, connection
//! cap) are in `startup`.

pub mod admin;
pub mod cache;
pub mod events;
pub mod handoff;
pub mod health;
pub mod holder;
pub mod keys;
pub mod request_id;
pub mod requests;
pub mod retrievals;

use std::sync::Arc;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{BoxError, ServiceBuilder};
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ApiError;
use crate::state::AppState;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The whole API.
///
/// Every route but the event stream answers within `request_timeout` (body upload included)
/// or gets `503 unavailable`; the event stream lives as long as its key. At most
/// `max_concurrent_requests` requests are handled at once over all connections; the rest wait
/// for a slot (within their timeout). Event streams are bounded apart from them
/// (`max_event_streams`, four per key; see `capacity`).
pub fn router(state: AppState) -> Router {
    let request_id = axum::http::HeaderName::from_static("x-request-id");
    // One semaphore for the whole router: `Router::layer` applies a layer to each route
    // separately, so a per-service `ConcurrencyLimitLayer` would bound each route alone.
    let concurrency = GlobalConcurrencyLimitLayer::with_semaphore(Arc::new(
        tokio::sync::Semaphore::new(state.settings.max_concurrent_requests),
    ));
    // The timeout is outside the concurrency bound, so that waiting for a slot counts too.
    let bounded = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(timeout_error))
        .layer(tower::timeout::TimeoutLayer::new(
            state.settings.request_timeout,
        ))
        .layer(concurrency);
    let api = Router::new()
        .route("/v1/keys", post(keys::deposit))
        .route(
            "/v1/keys/{id}",
            get(holder::get_key)
                .patch(holder::patch_key)
                .delete(holder::delete_key),
        )
        .route("/v1/keys/{id}/code", post(holder::recode))
        .route("/v1/retrievals", post(retrievals::retrieve))
        .route(
            "/v1/retrievals/{retrieval_id}/confirm",
            post(retrievals::confirm),
        )
        .route("/v1/retrievals/preview", post(handoff::preview))
        .route(
            "/v1/retrievals/{retrieval_id}/sas",
            post(handoff::request_sas).get(handoff::get_sas),
        )
        .route(
            "/v1/retrievals/{retrieval_id}/dispute",
            post(handoff::dispute),
        )
        .route("/v1/keys/{id}/sas", post(handoff::reveal_sas))
        .route("/v1/requests", post(requests::create))
        .route("/v1/requests/preview", post(requests::preview))
        .route("/v1/admin/tenants", post(admin::create_tenant))
        .route(
            "/v1/admin/tenants/{id}/app-keys",
            post(admin::create_app_key),
        )
        .route("/v1/admin/app-keys/{id}", delete(admin::delete_app_key))
        .route("/v1/admin/services", post(admin::create_service))
        .route("/v1/admin/services/{id}", delete(admin::delete_service))
        .route("/v1/admin/audit", get(admin::audit))
        .route("/v1/admin/deliveries", get(admin::deliveries))
        .route("/v1/admin/endpoints", get(admin::endpoints))
        .route(
            "/v1/admin/tenants/{id}/webhook-secret",
            post(admin::rotate_webhook_secret),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(health::openapi))
        .merge(crate::demo::router(&state.settings))
        // Only the routes above get the timeout: the event stream below is long-lived.
        .layer(bounded)
        // The event stream takes no request slot: it is bounded by `max_event_streams` and
        // per key instead (`capacity`), so that open streams never starve other requests.
        .route("/v1/keys/{id}/events", get(events::events))
        // The long-poll of a request holds no request slot either; it bounds itself (its wait,
        // then `request_timeout`).
        .route("/v1/requests/{id}", get(requests::get))
        .fallback(health::not_found)
        .method_not_allowed_fallback(health::method_not_allowed)
        .with_state(state);
    // The layers that every request goes through, fallbacks included, wrap the router once as
    // one service, its fallback. (`Router::layer` wraps every route in one boxed service per
    // layer, and a request cloned each of those boxes on its way in: six nested clones and
    // about thirty allocations per request.)
    let layered = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(
            request_id.clone(),
            crate::routes::request_id::MakeRequestUuid,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(
            |req: &axum::http::Request<axum::body::Body>| {
                // Only method, path and request id: never the query, headers or body, where
                // tokens and codes travel.
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            },
        ))
        .layer(PropagateRequestIdLayer::new(request_id))
        // Outside the panic handler, so that every answer of the API is marked, a 500 included.
        .layer(cache::NoStoreLayer)
        // A panic is a bug; the client still gets a problem+json 500, not a dropped connection.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .service(api);
    Router::new().fallback_service(layered)
}

/// The answer to a request that ran past `request_timeout`: `503 unavailable`, problem+json.
async fn timeout_error(err: BoxError) -> Response {
    if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::Unavailable("request timed out".into()).into_response()
    } else {
        ApiError::Internal(format!("middleware: {err}")).into_response()
    }
}

/// The answer to a request whose handler panicked: a generic 500; the cause is logged.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    use axum::response::IntoResponse;
    ApiError::Internal("a request handler panicked".into()).into_response()
}

/// The OpenAPI 3.1 description, generated from the handlers and wire types.
#[derive(OpenApi)]
#[openapi(
    info(title = "keymaster", description = "Key master service: deposit a key, get a code, retrieve the key by the code."),
    paths(
        keys::deposit,
        retrievals::retrieve, retrievals::confirm,
        handoff::preview, handoff::request_sas, handoff::get_sas, handoff::reveal_sas,
        handoff::dispute,
        requests::create, requests::preview, requests::get,
        holder::get_key, holder::patch_key, holder::delete_key, holder::recode, events::events,
        admin::create_tenant, admin::create_app_key, admin::delete_app_key,
        admin::create_service, admin::delete_service, admin::audit,
        admin::deliveries, admin::endpoints, admin::rotate_webhook_secret,
        health::healthz, health::readyz, health::metrics,
    ),
    modifiers(&BearerSchemes, &ServerLimits),
)]
pub struct ApiDoc;

/// Documents the answer every operation can give whatever its handler does: `503 unavailable`
/// when the request runs past `request_timeout` or the database cannot be reached.
pub(crate) struct ServerLimits;

impl Modify for ServerLimits {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let unavailable = ResponseBuilder::new()
            .description("unavailable: the request ran past the server's request_timeout, or the database cannot be reached")
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                op.responses
                    .responses
                    .entry("503".to_owned())
                    .or_insert_with(|| unavailable.clone().into());
            }
        }
    }
}

struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, what) in [
            ("admin_token", "the operator's admin token"),
            ("app_key", "a tenant's kma_ app key"),
            ("service_key", "an enrolled service's kms_ key"),
            ("holder_token", "the kmh_ holder token of one key"),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(what))
                        .build(),
                ),
            );
        }
    }
}
