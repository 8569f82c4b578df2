//! An example outside service: a tiny web app with two-factor sign-in backed by keymaster.
//!
//! - `GET /` shows a settings page with one field for the code from the user's authenticator.
//! - `POST /enrol` (form field `code`) retrieves the key from keymaster with this site's service
//!   key (`KEYMASTER_SERVICE_KEY`, at `KEYMASTER_URL`) and remembers it: two-factor sign-in is on.
//! - `GET /login` issues a random challenge.
//! - `POST /login` (form field `signature`, base64) verifies the signature of the last challenge
//!   with the enrolled key.
//!
//! Run: `KEYMASTER_SERVICE_KEY=kms_… cargo run -p two-factor-site -- 127.0.0.1:3000`.
//! State is in memory and for one user: it is an example, not a product.
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};

use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use keymaster_client::wire::{RetrievalRequest, RetrievalResponse};
use keymaster_client::{check_code, verify_signature, ServiceClient};
use rand::RngCore;
use serde::Deserialize;

#[derive(Default)]
struct Site {
    /// The enrolled key of our one user.
    key: Option<RetrievalResponse>,
    /// The challenge issued last, base64.
    challenge: Option<String>,
}

#[derive(Clone)]
struct App {
    keymaster: ServiceClient,
    site: Arc<Mutex<Site>>,
}

#[derive(Deserialize)]
struct CodeForm {
    code: String,
}

#[derive(Deserialize)]
struct SignatureForm {
    signature: String,
}

fn page(body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=en><meta charset=utf-8><title>example-web</title><body>{body}</body></html>\n"
    ))
}

async fn settings() -> Html<String> {
    page("<h1>Two-factor sign-in</h1><form method=post action=/enrol><label>Code from your authenticator <input name=code autocomplete=off></label><button>Enable</button></form>")
}

async fn enrol(State(app): State<App>, Form(form): Form<CodeForm>) -> (StatusCode, Html<String>) {
    // Catch typos before asking the key master: the code carries a check digit.
    if let Err(e) = check_code(&form.code) {
        return (
            StatusCode::BAD_REQUEST,
            page(&format!("<p>Nothing was sent: {e}.</p>")),
        );
    }
    let request = RetrievalRequest {
        code: form.code,
        ..RetrievalRequest::default()
    };
    match app.keymaster.retrieve(&request).await {
        Ok(key) => {
            let fp = key.fingerprint.clone().unwrap_or_default();
            let mut site = app.site.lock().unwrap_or_else(|p| p.into_inner());
            site.key = Some(key);
            (
                StatusCode::OK,
                page(&format!("<p>Two-factor sign-in enabled. Key {fp}</p>")),
            )
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            page(&format!(
                "<p>The code was not accepted ({}).</p>",
                e.code().unwrap_or("error")
            )),
        ),
    }
}

async fn challenge(State(app): State<App>) -> Html<String> {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let challenge = STANDARD.encode(raw);
    app.site.lock().unwrap_or_else(|p| p.into_inner()).challenge = Some(challenge.clone());
    page(&format!(
        "<h1>Sign in</h1><p>Challenge: <code id=challenge>{challenge}</code></p><form method=post action=/login><label>Signature <input name=signature></label><button>Sign in</button></form>"
    ))
}

async fn login(
    State(app): State<App>,
    Form(form): Form<SignatureForm>,
) -> (StatusCode, Html<String>) {
    let (key, challenge) = {
        let mut site = app.site.lock().unwrap_or_else(|p| p.into_inner());
        // A challenge is good for one try.
        (site.key.clone(), site.challenge.take())
    };
    let (Some(key), Some(challenge)) = (key, challenge) else {
        return (
            StatusCode::BAD_REQUEST,
            page("<p>Enrol first, then ask for a challenge.</p>"),
        );
    };
    let Ok(signature) = STANDARD.decode(form.signature.trim()) else {
        return (
            StatusCode::BAD_REQUEST,
            page("<p>The signature is not base64.</p>"),
        );
    };
    match verify_signature(&key, challenge.as_bytes(), &signature) {
        Ok(()) => (
            StatusCode::OK,
            page("<p>Signed in with your second factor.</p>"),
        ),
        Err(_) => (
            StatusCode::UNAUTHORIZED,
            page("<p>The signature does not verify.</p>"),
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let url = std::env::var("KEYMASTER_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let key = std::env::var("KEYMASTER_SERVICE_KEY")
        .map_err(|_| "set KEYMASTER_SERVICE_KEY to this site's kms_ service key")?;
    let app = App {
        keymaster: ServiceClient::new(&url, &key)?,
        site: Arc::default(),
    };
    let router = Router::new()
        .route("/", get(settings))
        .route("/enrol", axum::routing::post(enrol))
        .route("/login", get(challenge).post(login))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("example-web listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}
