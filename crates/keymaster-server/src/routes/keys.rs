//! `POST /v1/keys`: a tenant's app deposits a key and gets a code and a holder token
//! ([`usecase::deposit`](crate::usecase::deposit), shared with the demo).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use keymaster_core::wire::{DepositRequest, DepositResponse};

use crate::auth::App;
use crate::error::ApiError;
use crate::extract::{ApiJson, ClientIp};
use crate::state::AppState;
use crate::usecase;

#[utoipa::path(
    post, path = "/v1/keys", tag = "keys",
    request_body = DepositRequest,
    security(("app_key" = [])),
    responses(
        (status = 201, description = "Deposited", body = DepositResponse),
        (status = 400, description = "invalid_request, invalid_key, invalid_proof, private_key_rejected, email_not_configured", body = keymaster_core::wire::Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = keymaster_core::wire::Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = keymaster_core::wire::Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = keymaster_core::wire::Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: with generate, the server runs max_concurrent_generations already; see Retry-After", body = keymaster_core::wire::Problem, content_type = "application/problem+json"),
    )
)]
/// Deposits a key.
pub async fn deposit(
    State(state): State<AppState>,
    App(app): App,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<DepositRequest>,
) -> Result<(StatusCode, Json<DepositResponse>), ApiError> {
    let resp = usecase::deposit::deposit(&state, &app, ip, req).await?;
    Ok((StatusCode::CREATED, Json(resp)))
}
