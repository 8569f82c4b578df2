//! The deposit (`POST /v1/keys`, and the demo's deposit): a tenant's app deposits a key and
//! gets a code and a holder token.
//!
//! Turns the request into domain values (key material, policy, notification targets), makes the
//! code and the holder token, and hands one `NewKey` to the store. Never stores or logs the
//! code, the token, a generated private key or a secret in clear. A refusal is audited.
//!
//! For the verified handoff it also records the depositor's network (its address cut to a /24
//! or /48: never the full address), keeps the device's `sas_commitment`, and answers an
//! asymmetric key with its `code_uri` (`keymaster_core::handoff`).
//!
//! A deposit with `"request"` answers an enrolment request (`usecase::requests`): no code, the
//! key goes to the requesting service only.

use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jiff::Timestamp;
use keymaster_core::code::Code;
use keymaster_core::handoff::{self, decode_32};
use keymaster_core::key::{self, GenerateAlgorithm, KeyError, PublicKey};
use keymaster_core::label::Label;
use keymaster_core::policy::{origin_network, Policy};
use keymaster_core::wire::{CodeFormat, DepositRequest, DepositResponse, Notify};
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use super::password::hash_password;
use super::{audit_record, to_millis};
use crate::crypto::{new_holder_token, new_id, token_hash};
use crate::error::ApiError;
use crate::netguard;
use crate::state::AppState;
use crate::store::{AppKeyAuth, NewKey};
use crate::usecase::requests;

/// Attempts at a fresh code before giving up (a collision among 10^15 codes is already rare).
const CODE_ATTEMPTS: usize = 8;

/// The key material of a deposit, parsed.
enum Material {
    Public {
        key: Box<PublicKey>,
        private_key: Option<Zeroizing<String>>,
    },
    Secret(Zeroizing<Vec<u8>>),
}

/// Maps key errors to the API's refusals.
fn key_error(e: KeyError) -> ApiError {
    match e {
        KeyError::Invalid(m) => ApiError::InvalidKey(m),
        KeyError::PrivateKeyRejected => ApiError::PrivateKeyRejected,
        KeyError::InvalidProof => ApiError::InvalidProof,
    }
}

async fn parse_material(state: &AppState, req: &DepositRequest) -> Result<Material, ApiError> {
    let given = [
        req.public_key.is_some(),
        req.jwk.is_some(),
        req.secret.is_some(),
        req.generate.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        return Err(ApiError::InvalidRequest(
            "give exactly one of public_key, jwk, secret, generate".into(),
        ));
    }
    if let Some(text) = &req.public_key {
        return Ok(Material::Public {
            key: Box::new(PublicKey::parse(text).map_err(key_error)?),
            private_key: None,
        });
    }
    if let Some(jwk) = &req.jwk {
        return Ok(Material::Public {
            key: Box::new(PublicKey::from_jwk(jwk).map_err(key_error)?),
            private_key: None,
        });
    }
    if let Some(secret) = &req.secret {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(secret.trim())
                .map_err(|_| ApiError::InvalidRequest("secret: not valid base64".into()))?,
        );
        if !(16..=64).contains(&bytes.len()) {
            return Err(ApiError::InvalidRequest(format!(
                "secret: must be 16 to 64 bytes, got {}",
                bytes.len()
            )));
        }
        return Ok(Material::Secret(bytes));
    }
    let alg: GenerateAlgorithm = req
        .generate
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|_| {
            ApiError::InvalidRequest("generate: must be ed25519, p256 or rsa-3072".into())
        })?;
    // RSA generation takes seconds of a core: at most `max_concurrent_generations` at once,
    // refused rather than queued beyond that, and off the async threads. The task holds its
    // place until the generation is done, even if the request has timed out meanwhile.
    let slot = state.capacity.try_generation()?;
    let (key, private_key) = tokio::task::spawn_blocking(move || {
        let generated = key::generate(alg, &mut OsRng);
        drop(slot);
        generated
    })
    .await
    .map_err(|e| ApiError::Internal(format!("key generation task: {e}")))?
    .map_err(key_error)?;
    Ok(Material::Public {
        key: Box::new(key),
        private_key: Some(private_key),
    })
}

/// Deposits `req` for the tenant of `app`, from `ip`. A refusal is audited (with the tenant)
/// before it is returned; a deposit is counted in the metrics.
pub async fn deposit(
    state: &AppState,
    app: &AppKeyAuth,
    ip: IpAddr,
    req: DepositRequest,
) -> Result<DepositResponse, ApiError> {
    let now = Timestamp::now();
    let actor = format!("app_key:{}", app.id);
    let result = deposit_inner(state, app, &actor, ip, req, now).await;
    if let Err(e) = &result {
        let mut a = audit_record(now, &actor, "key.deposit", e.code(), None, Some(ip));
        a.detail = Some(format!("tenant {}", app.tenant_id));
        state.store.append_audit(a).await?;
    }
    let resp = result?;
    metrics::counter!("keymaster_deposits_total").increment(1);
    Ok(resp)
}

async fn deposit_inner(
    state: &AppState,
    app: &AppKeyAuth,
    actor: &str,
    ip: IpAddr,
    req: DepositRequest,
    now: Timestamp,
) -> Result<DepositResponse, ApiError> {
    let tenant_id = app.tenant_id.as_str();
    let label = req
        .label
        .as_deref()
        .map(Label::parse)
        .transpose()
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let sas_commitment = match &req.sas_commitment {
        None => None,
        Some(c) => Some(decode_32(c).ok_or_else(|| {
            ApiError::InvalidRequest(
                "sas_commitment: must be base64url of 32 bytes (SHA-256 of the device's nonce)"
                    .into(),
            )
        })?),
    };
    let material = parse_material(state, &req).await?;
    let proven = match (&req.proof, &material) {
        (None, _) => false,
        (Some(_), Material::Secret(_)) => {
            return Err(ApiError::InvalidRequest(
                "proof: a symmetric secret has no proof of possession".into(),
            ))
        }
        (Some(proof), Material::Public { key, .. }) => {
            let sig = STANDARD
                .decode(proof.trim())
                .map_err(|_| ApiError::InvalidProof)?;
            key.verify_proof(&sig).map_err(key_error)?;
            true
        }
    };
    let input = req.policy.clone().unwrap_or_default();
    let (mut policy, expires_at) = Policy::from_input(&input, now, &state.limits)
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    if req.request.is_some() {
        requests::check_answer_policy(&input)?;
    }
    let expires_at = to_millis(expires_at);
    if let Some(services) = &policy.services {
        let missing = state.store.missing_services(services).await?;
        if let Some(id) = missing.first() {
            return Err(ApiError::InvalidRequest(format!(
                "policy.services: unknown service id {id:?}"
            )));
        }
    }
    let notify = check_notify(state, req.notify.as_ref()).await?;
    let password_hash = match input.password {
        Some(p) => Some(hash_password(p).await?),
        None => None,
    };

    let id = new_id("key_");
    let (kind, algorithm, spki, secret_sealed, fps, private_key) = match material {
        Material::Public { key, private_key } => (
            "public",
            key.algorithm().to_string(),
            Some(key.spki_der().to_vec()),
            None,
            Some((
                key.fingerprint(),
                key.ssh_fingerprint(),
                key.jwk_thumbprint(),
            )),
            private_key,
        ),
        Material::Secret(bytes) => (
            "secret",
            "secret".to_owned(),
            None,
            Some(state.keys.seal(&bytes, id.as_bytes())),
            None,
            None,
        ),
    };
    let (fingerprint, ssh_fingerprint, jwk_thumbprint) = match fps {
        Some((f, s, j)) => (Some(f), s, Some(j)),
        None => (None, None, None),
    };
    // A generated key also goes back in OpenSSH's format, with the label as its comment. Off the
    // async threads: reading the key back costs a few curve multiplications (about 1.5 ms for
    // P-256).
    let private_key_openssh = match &private_key {
        Some(pem) => {
            let (pem, comment) = (pem.clone(), req.label.clone().unwrap_or_default());
            let converted =
                tokio::task::spawn_blocking(move || key::openssh_private_key(&pem, &comment))
                    .await
                    .map_err(|e| ApiError::Internal(format!("OpenSSH conversion task: {e}")))?;
            Some(
                converted
                    .map_err(|_| ApiError::Internal("no OpenSSH form of a generated key".into()))?,
            )
        }
        None => None,
    };
    let holder_token = new_holder_token(&id);
    // A key that answers an enrolment request goes to the requesting service only.
    let answering = match &req.request {
        Some(code) => {
            let services = policy.services.as_deref();
            let found = requests::find_for_answer(state, app, ip, code, services, now).await?;
            policy.services = Some(vec![found.service_id.clone()]);
            Some(found)
        }
        None => None,
    };
    let format = req.code_format.unwrap_or(CodeFormat::Digits);
    for _ in 0..CODE_ATTEMPTS {
        let code = Code::generate(format, &mut rand::thread_rng());
        let code_hash = match &answering {
            Some(found) => requests::answer_code_hash(state, &found.id),
            None => {
                if answered_under_previous_secret(state, &code).await? {
                    continue;
                }
                state.keys.code_hash(code.as_str())
            }
        };
        let key = NewKey {
            id: id.clone(),
            tenant_id: tenant_id.to_owned(),
            holder_hash: token_hash(&holder_token),
            code_hash,
            code_format: format,
            label: label.as_ref().map(|l| l.as_str().to_owned()),
            kind,
            algorithm: algorithm.clone(),
            spki: spki.clone(),
            secret_sealed: secret_sealed.clone(),
            fingerprint: fingerprint.clone(),
            ssh_fingerprint: ssh_fingerprint.clone(),
            jwk_thumbprint: jwk_thumbprint.clone(),
            proven,
            policy: policy.clone(),
            password_hash: password_hash.clone(),
            notify: notify.clone(),
            created_at: now,
            expires_at,
            origin_network: Some(origin_network(ip)),
            sas_commitment: sas_commitment.map(|c| c.to_vec()),
        };
        let mut audit = audit_record(now, actor, "key.deposit", "success", Some(&id), Some(ip));
        audit.detail = Some(format!("tenant {tenant_id}, {algorithm}"));
        if let Some(found) = &answering {
            requests::answer(state, found, key, audit).await?;
            return Ok(DepositResponse {
                id,
                code: String::new(),
                code_display: String::new(),
                kind: kind.to_owned(),
                algorithm,
                fingerprint,
                ssh_fingerprint,
                jwk_thumbprint,
                expires_at,
                holder_token: holder_token.to_string(),
                private_key,
                private_key_openssh,
                code_uri: None,
                request_id: Some(found.id.clone()),
            });
        }
        if state.store.deposit(key, audit).await? {
            // The key commitment is the digest inside `fingerprint`: not hashed a second time.
            let code_uri = spki.as_deref().map(|spki| {
                fingerprint
                    .as_deref()
                    .and_then(|fp| handoff::code_uri_from_fingerprint(&code, fp))
                    .unwrap_or_else(|| handoff::code_uri(&code, spki))
            });
            return Ok(DepositResponse {
                id,
                code: code.as_str().to_owned(),
                code_display: code.display(),
                kind: kind.to_owned(),
                algorithm,
                fingerprint,
                ssh_fingerprint,
                jwk_thumbprint,
                expires_at,
                holder_token: holder_token.to_string(),
                private_key,
                private_key_openssh,
                code_uri,
                request_id: None,
            });
        }
    }
    Err(ApiError::Internal(
        "no free code after several attempts".into(),
    ))
}

/// During a rotation, whether a key made under a previous secret still answers to `code`: the
/// store's uniqueness covers only the hashes of one secret, so such a code is drawn again.
/// Checked outside the deposit's transaction, which is safe: nothing new is hashed under a
/// previous secret, so the set of such codes only shrinks. Without previous secrets, no query.
pub(crate) async fn answered_under_previous_secret(
    state: &AppState,
    code: &Code,
) -> Result<bool, ApiError> {
    if !state.keys.rotating() {
        return Ok(false);
    }
    let hashes = state.keys.previous_code_hashes(code.as_str());
    Ok(state.store.code_hash_in_use(hashes).await?)
}

async fn check_notify(
    state: &AppState,
    notify: Option<&Notify>,
) -> Result<Option<Notify>, ApiError> {
    let Some(n) = notify else { return Ok(None) };
    if let Some(url) = &n.webhook_url {
        netguard::check_url_resolved(url, state.settings.allow_private_webhooks)
            .await
            .map_err(|m| ApiError::InvalidRequest(format!("notify.webhook_url: {m}")))?;
    }
    if let Some(email) = &n.email {
        netguard::check_email(email)
            .map_err(|m| ApiError::InvalidRequest(format!("notify.email: {m}")))?;
        if state.settings.smtp_url.is_none() {
            return Err(ApiError::EmailNotConfigured);
        }
    }
    if n.webhook_url.is_none() && n.email.is_none() {
        return Ok(None);
    }
    Ok(Some(n.clone()))
}
