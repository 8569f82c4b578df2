//! The browser demo under `/demo/`: two small web apps served by `keymaster serve` itself.
//!
//! - `/demo/authenticator.html` — the client application: makes a key pair with WebCrypto,
//!   deposits the public half with a commitment to its SAS nonce, shows the code and the QR code
//!   of its code URI, follows the key's event stream, reveals its nonce and shows the six
//!   digits when the service asks for the SAS, signs sign-in challenges.
//! - `/demo/example-app.html` — an outside service ("example-web"): takes the typed code or
//!   the code URI of the QR code, shows who deposited the key before claiming it, retrieves
//!   it, checks it against the code URI's commitment, runs the SAS exchange with the
//!   authenticator, and lets the user sign in with a challenge the authenticator signs.
//!
//! The pages use the TypeScript client package (`sdk/typescript`) for the code check, the key,
//! the proof of possession, the SAS and the holder's calls under `/v1`: its compiled modules are
//! checked in under `demo/sdk/` (written by `npm run demo-assets` in `sdk/typescript`; `.ci/sdk.sh`
//! fails when they differ from a fresh build) and served under `/demo/sdk/`.
//!
//! Every asset is embedded in the binary (`crates/keymaster-server/demo/`), and every response
//! under `/demo/` carries a strict Content-Security-Policy ([`CSP`]): scripts and styles only
//! from the same origin, no inline script, no framing.
//!
//! Off unless asked for (`demo = true`, `KEYMASTER_DEMO=true`, `keymaster serve --demo`), and
//! the settings refuse it with a `listen` address that is not loopback (`Settings::validate`):
//! its endpoints act without credentials. The server side of the demo ([`api`]) holds the
//! demo's app key and service key in this process's memory only; the browser never sees them.
//!
//! Confined to its own tenant ([`bootstrap::TENANT_ID`]): it deposits with that tenant's app key,
//! and its service is stored as confined to that tenant, so that the store's retrieval
//! transaction treats any other tenant's code as unknown. No request under `/demo/` reads,
//! retrieves, consumes or changes another tenant's key.
//!
//! Not responsible for the API the demo calls: deposits, previews, retrievals, the SAS exchange
//! and disputes go through the same use cases (`usecase`) as `POST /v1/keys`,
//! `POST /v1/retrievals` and the rest of the API, with their checks, events and audit.

pub mod api;
pub mod bootstrap;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path};
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::config::Settings;
use crate::error::ApiError;
use crate::state::AppState;

/// The Content-Security-Policy of every demo response.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'self'";

/// Largest request body the demo's own endpoints accept (a public key and a signature fit
/// many times over).
pub const DEMO_BODY_LIMIT: usize = 8 * 1024;

/// The demo's routes (empty when the demo is off), to be merged into the API router.
pub fn router(settings: &Settings) -> Router<AppState> {
    if !settings.demo {
        return Router::new();
    }
    Router::new()
        .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
        .route("/demo/", get(|| asset(Path("index.html".to_owned()))))
        .route("/demo/{file}", get(asset))
        .route("/demo/sdk/{file}", get(sdk_asset))
        .route("/demo/api/deposit", post(api::deposit))
        .route("/demo/api/preview", post(api::preview))
        .route("/demo/api/enrol", post(api::enrol))
        .route("/demo/api/request", post(api::create_request))
        .route("/demo/api/request/wait", post(api::wait_request))
        .route("/demo/api/request/preview", post(api::preview_request))
        .route("/demo/api/sas", post(api::request_sas))
        .route("/demo/api/sas/nonces", post(api::sas_nonces))
        .route("/demo/api/activate", post(api::activate))
        .route("/demo/api/dispute", post(api::dispute))
        .route("/demo/api/challenge", post(api::challenge))
        .route("/demo/api/verify", post(api::verify))
        .layer(Extension(Arc::new(api::Demo::default())))
        .layer(DefaultBodyLimit::max(DEMO_BODY_LIMIT))
        .layer(axum::middleware::map_response(security_headers))
}

/// An entry of [`SDK_ASSETS`]: a JavaScript module of `demo/sdk/`.
macro_rules! sdk_module {
    ($name:literal) => {
        (
            $name,
            "text/javascript; charset=utf-8",
            include_bytes!(concat!("../../demo/sdk/", $name)),
        )
    };
}

/// The embedded files: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../demo/index.html"),
    ),
    (
        "authenticator.html",
        "text/html; charset=utf-8",
        include_bytes!("../../demo/authenticator.html"),
    ),
    (
        "example-app.html",
        "text/html; charset=utf-8",
        include_bytes!("../../demo/example-app.html"),
    ),
    (
        "demo.css",
        "text/css; charset=utf-8",
        include_bytes!("../../demo/demo.css"),
    ),
    (
        "common.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../demo/common.js"),
    ),
    (
        "authenticator.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../demo/authenticator.js"),
    ),
    (
        "example-app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../demo/example-app.js"),
    ),
    (
        "qrcodegen.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../demo/qrcodegen.js"),
    ),
];

/// The TypeScript package's modules as the pages import them (`./sdk/index.js`), generated from
/// `sdk/typescript` by its `demo-assets` script: one entry per file it writes.
const SDK_ASSETS: &[(&str, &str, &[u8])] = &[
    sdk_module!("index.js"),
    sdk_module!("bytes.js"),
    sdk_module!("client.js"),
    sdk_module!("code.js"),
    sdk_module!("device.js"),
    sdk_module!("errors.js"),
    sdk_module!("sas.js"),
    sdk_module!("spki.js"),
    sdk_module!("sse.js"),
    sdk_module!("webhook.js"),
];

/// One embedded file, or `404 not_found`.
async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    serve(ASSETS, &file)
}

/// One module of the TypeScript package under `/demo/sdk/`, or `404 not_found`.
async fn sdk_asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    serve(SDK_ASSETS, &file)
}

fn serve(assets: &[(&str, &str, &'static [u8])], file: &str) -> Result<Response, ApiError> {
    let (_, content_type, body) = assets
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or(ApiError::NotFound)?;
    Ok((
        [
            (header::CONTENT_TYPE, *content_type),
            // Small files; always revalidate so that a new binary's pages are seen at once.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *body,
    )
        .into_response())
}

/// Adds the CSP and its companions to every demo response, errors included.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_name() {
        for assets in [ASSETS, SDK_ASSETS] {
            for (i, (a, _, _)) in assets.iter().enumerate() {
                assert!(assets[i + 1..].iter().all(|(b, _, _)| a != b), "{a}");
            }
        }
    }

    /// Every module the package's script wrote is embedded, and nothing else: a module the
    /// script adds later and this list misses would break the pages' imports at run time.
    #[test]
    fn every_sdk_module_on_disk_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/sdk");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("demo/sdk")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = SDK_ASSETS.iter().map(|(n, _, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    /// Each relative import of an embedded module names an embedded module, and the pages'
    /// scripts import the package from `./sdk/index.js`.
    #[test]
    fn the_modules_imports_resolve_to_embedded_files() {
        let js = |assets: &[(&str, &str, &[u8])]| -> Vec<(String, String)> {
            assets
                .iter()
                .filter(|(n, _, _)| n.ends_with(".js"))
                .map(|(n, _, b)| (n.to_string(), String::from_utf8_lossy(b).into_owned()))
                .collect()
        };
        // `… from "./x.js";` (both tsc's output and the pages use double quotes).
        let imports = |source: &str| -> Vec<String> {
            source
                .lines()
                .filter_map(|line| line.split_once(" from \"./")?.1.split_once('"'))
                .map(|(path, _)| path.to_owned())
                .collect()
        };
        let has =
            |assets: &[(&str, &str, &[u8])], name: &str| assets.iter().any(|(n, _, _)| *n == name);
        for (name, source) in js(SDK_ASSETS) {
            for dep in imports(&source) {
                assert!(has(SDK_ASSETS, &dep), "sdk/{name} imports ./{dep}");
            }
        }
        let mut uses_sdk = 0;
        for (name, source) in js(ASSETS) {
            for dep in imports(&source) {
                match dep.strip_prefix("sdk/") {
                    Some(module) => {
                        assert!(has(SDK_ASSETS, module), "{name} imports ./{dep}");
                        uses_sdk += 1;
                    }
                    None => assert!(has(ASSETS, &dep), "{name} imports ./{dep}"),
                }
            }
        }
        assert!(uses_sdk > 0, "no page script imports ./sdk/");
    }
}
