//! Wire types: the JSON bodies of the HTTP API, shared by the server and the client SDK.
//!
//! These are the shapes of the API contract (`docs/api.md`, also served as `/openapi.json`);
//! field names here are part of it.
//! Request types reject unknown fields (`deny_unknown_fields`) so that a typo in a policy is an
//! error rather than a silently ignored rule. This module only describes data; validation lives
//! in [`crate::code`], [`crate::key`] and [`crate::policy`].

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The two code formats (`docs/api.md`, "Codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CodeFormat {
    /// 15 random digits and a Damm check digit, shown as `dddd-dddd-dddd-dddd`.
    #[default]
    Digits,
    /// 23 random Crockford base32 symbols and a mod-37 check symbol, shown in groups of four.
    Base32,
}

/// `POST /v1/keys`: exactly one of `public_key`, `jwk`, `secret`, `generate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    /// PEM SPKI, PEM PKCS#1 or one OpenSSH public key line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// A public JWK (RFC 7517).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub jwk: Option<Value>,
    /// A symmetric key, base64, 16 to 64 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// `ed25519`, `p256` or `rsa-3072`: the server makes the pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<String>,
    /// Base64 signature over `keymaster-proof-of-possession:` + fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// A name the holder recognises the key by: at most 200 characters, no control, bidi
    /// control or invisible characters (see [`crate::label`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `digits` (default) or `base32`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_format: Option<CodeFormat>,
    /// The key's policy; every field optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyInput>,
    /// Where to tell the holder what happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// Unpadded base64url of SHA-256(`nd`), the device's commitment to its SAS nonce
    /// ([`crate::handoff::sas_commitment`]); handed to the retrieving service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas_commitment: Option<String>,
    /// The code (or `keymaster:request:` URI) of an enrolment request to answer: the key goes
    /// to the requesting service only, and the answer carries `request_id` instead of a code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// Notification targets of one key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// `http` or `https` URL that receives signed webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Address that receives a short e-mail per event (needs the server's `smtp_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// The policy as given at deposit. Validated into [`crate::policy::Policy`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    /// Lifetime in seconds from now (default 86400); exclusive with `expires_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    /// Absolute expiry (RFC 3339); exclusive with `ttl_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<jiff::Timestamp>,
    /// Successful retrievals before the key is removed (1 to 100, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retrievals: Option<u32>,
    /// A password the retrieval must carry; stored as argon2id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Service ids allowed to retrieve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<String>>,
    /// Domains; the retrieving service's enrolled domain must equal or be below one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domains: Option<Vec<String>>,
    /// CIDRs the retrieval's source address must be inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetcher_cidrs: Option<Vec<String>>,
    /// Time of day (and days of the week) in an IANA zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_window: Option<TimeWindowInput>,
    /// Place: a radius and/or a list of ISO 3166 countries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<GeoInput>,
    /// `same_network`: the retrieval's `context.ip` must lie in the depositor's /24 (IPv4) or
    /// /48 (IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proximity: Option<Proximity>,
    /// Hold the key after retrieval until the service confirms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_confirmation: Option<bool>,
    /// How long a held key waits for confirmation (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_grace_seconds: Option<u32>,
}

/// The policy's `proximity` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Proximity {
    /// The retrieval's `context.ip` must lie in the network the key was deposited from.
    SameNetwork,
}

/// `{"timezone":"Europe/Berlin","days":["mon","tue"],"start":"08:00","end":"18:00"}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TimeWindowInput {
    /// IANA zone name.
    pub timezone: String,
    /// Days on which the window starts (`mon` … `sun`); all days when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<String>>,
    /// `HH:MM`.
    pub start: String,
    /// `HH:MM`; before `start` means the window runs overnight.
    pub end: String,
}

/// `{"latitude":..,"longitude":..,"radius_km":..}` and/or `{"countries":["DE"]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GeoInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub radius_km: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub countries: Option<Vec<String>>,
}

/// `201` answer to a deposit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DepositResponse {
    pub id: String,
    /// The code, normalised (no separators). Absent (empty) for a key that answers an
    /// enrolment request: nobody retrieves it by a code.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub code: String,
    /// The code as shown to a person, in groups of four; absent with `request_id`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub code_display: String,
    /// `public` or `secret`.
    pub kind: String,
    pub algorithm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk_thumbprint: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: jiff::Timestamp,
    /// `kmh_` token that opens this one key; shown once.
    pub holder_token: String,
    /// The private key of a pair made with `generate`, as PKCS#8 v1 PEM (`PRIVATE KEY`, what
    /// OpenSSL, Python `cryptography` and Node's `crypto` load); shown once, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub private_key: Option<Zeroizing<String>>,
    /// The same private key in OpenSSH's format (`OPENSSH PRIVATE KEY`, unencrypted, the label as
    /// comment), what `ssh-keygen` and `ssh -i` load; only with `generate`, shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub private_key_openssh: Option<Zeroizing<String>>,
    /// `keymaster:<code>?fp=<key commitment>`, what the QR code holds; asymmetric keys only
    /// ([`crate::handoff::code_uri`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_uri: Option<String>,
    /// The enrolment request this key answers (`"request"` of the deposit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `POST /v1/retrievals`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetrievalRequest {
    /// The code as typed; separators and case are normalised.
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<RetrievalContext>,
}

/// Facts about the person retrieving, as the service reports them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetrievalContext {
    /// The end user's address, as the service saw it (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    /// ISO 3166-1 alpha-2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// `200` answer to a retrieval.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RetrievalResponse {
    pub retrieval_id: String,
    pub key_id: String,
    pub kind: String,
    pub algorithm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openssh: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub jwk: Option<Value>,
    /// Base64 symmetric secret, for kind `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk_thumbprint: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
    pub proven: bool,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub confirm_by: Option<jiff::Timestamp>,
    /// The device's `sas_commitment` as deposited (`null` when none was given). A service that
    /// runs the SAS exchange refuses a retrieval without one: a stripped commitment would let
    /// a key master search nonces offline.
    #[serde(default)]
    pub sas_commitment: Option<String>,
}

/// `200` answer to `POST /v1/retrievals/preview`: who deposited the key, when and from where,
/// so that a service can ask the person before it claims the key. Never key material.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PreviewResponse {
    pub key_id: String,
    #[serde(default)]
    pub label: Option<String>,
    /// `public` or `secret`.
    pub kind: String,
    pub algorithm: String,
    /// `SHA256:…` of the key; `null` for a `secret`.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// The tenant whose app deposited the key.
    pub tenant: TenantRef,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub deposited_at: jiff::Timestamp,
    pub origin: Origin,
    pub proven: bool,
}

/// A tenant named in an answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TenantRef {
    pub id: String,
    pub name: String,
}

/// Where a key was deposited from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Origin {
    /// The depositor's address cut to its /24 (IPv4) or /48 (IPv6), e.g. `203.0.113.0/24`;
    /// `null` for a key deposited before the network was recorded.
    #[serde(default)]
    pub network: Option<String>,
}

/// `POST /v1/retrievals/{retrieval_id}/sas`: the service's SAS nonce.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SasRequest {
    /// 32 random bytes `ns`, unpadded base64url.
    pub nonce: String,
}

/// `POST /v1/keys/{id}/sas`: the device reveals its SAS nonce for one retrieval.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SasReveal {
    /// The retrieval named by the `sas.requested` event.
    pub retrieval_id: String,
    /// The 32 bytes `nd` committed to at deposit, unpadded base64url.
    pub nonce: String,
}

/// `GET /v1/retrievals/{retrieval_id}/sas`: both nonces, as far as they are known.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SasNonces {
    /// The service's nonce; `null` before `POST …/sas`.
    #[serde(default)]
    pub service_nonce: Option<String>,
    /// The device's nonce; `null` until the device reveals it.
    #[serde(default)]
    pub device_nonce: Option<String>,
}

/// Why a service disputes a retrieval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DisputeReason {
    /// The key received does not match the `fp` of the code URI.
    KeyMismatch,
    /// The device's nonce does not open its commitment, the commitment is missing, or the
    /// person says the two SAS differ.
    SasMismatch,
    /// The person says they never asked for this key to be added.
    NotRequested,
}

impl DisputeReason {
    /// The wire name, as the `reason` of `key.disputed`.
    pub fn as_str(self) -> &'static str {
        match self {
            DisputeReason::KeyMismatch => "key_mismatch",
            DisputeReason::SasMismatch => "sas_mismatch",
            DisputeReason::NotRequested => "not_requested",
        }
    }
}

/// `POST /v1/retrievals/{retrieval_id}/dispute`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DisputeRequest {
    pub reason: DisputeReason,
}

/// `GET /v1/keys/{id}`: what the holder sees.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct KeyStatus {
    pub id: String,
    /// `active`, `awaiting_confirmation`, `locked`, `retrieved`, `expired` or `revoked`.
    pub status: String,
    #[serde(default)]
    pub label: Option<String>,
    pub algorithm: String,
    #[serde(default)]
    pub fingerprint: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: jiff::Timestamp,
    pub retrievals: u32,
    pub max_retrievals: u32,
    /// The key's events, oldest first.
    pub history: Vec<Event>,
}

/// `PATCH /v1/keys/{id}`: exactly one of the two.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PatchKeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<jiff::Timestamp>,
}

/// `201` answer to `POST /v1/keys/{id}/code`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RecodeResponse {
    pub code: String,
    pub code_display: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: jiff::Timestamp,
    /// `keymaster:<code>?fp=<key commitment>` of the new code; asymmetric keys only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_uri: Option<String>,
}

/// An event, as stored, streamed, delivered and listed in `history`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Event {
    /// `evt_…`; the idempotency key of every delivery.
    pub id: String,
    /// One of `key.deposited`, `key.retrieved`, `key.confirmed`, `key.unconfirmed` (a held
    /// key's confirmation grace ended without a confirmation), `key.denied`, `key.expired`,
    /// `key.revoked`, `key.locked`, `code.reissued`, `code.stale_used`.
    #[serde(rename = "type")]
    pub event_type: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub timestamp: jiff::Timestamp,
    pub data: EventData,
}

/// The payload of an event: never a code, never key material.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EventData {
    pub key_id: String,
    pub tenant_id: String,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRef>,
    /// Why a retrieval was denied (the error code), for `key.denied`; the dispute's reason,
    /// for `key.disputed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The retrieval the event is about, for `key.disputed` and `sas.requested`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval_id: Option<String>,
    /// The service's SAS nonce (unpadded base64url), for `sas.requested`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// A service named in an event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ServiceRef {
    pub id: String,
    pub name: String,
}

/// `POST /v1/admin/tenants`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}

/// `201` answer to a tenant creation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TenantCreated {
    pub id: String,
    pub name: String,
    /// `whsec_…`: signs this tenant's webhooks; shown once.
    pub webhook_secret: String,
}

/// `201` answer to an app key or service creation's credential part.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AppKeyCreated {
    pub id: String,
    /// `kma_…`; shown once.
    pub token: String,
}

/// `POST /v1/admin/services`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateServiceRequest {
    pub name: String,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
}

/// `201` answer to a service enrolment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ServiceCreated {
    pub id: String,
    pub name: String,
    /// `kms_…`; shown once.
    pub token: String,
}

/// One row of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditEntry {
    pub id: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: jiff::Timestamp,
    /// `admin`, `app_key:<id>`, `service:<id>`, `holder:<key id>`, `system` or `anonymous`.
    pub actor: String,
    pub action: String,
    /// `success` or the refusal's error code.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `GET /v1/admin/audit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditPage {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
}

/// An RFC 9457 problem body, as every error is answered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Problem {
    /// `about:blank` or a URI naming the problem type.
    #[serde(rename = "type", default = "about_blank")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    /// One of the API's error codes (`not_found`, `invalid_code`, …; `docs/api.md`, "Errors").
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn about_blank() -> String {
    "about:blank".to_owned()
}

/// `POST /v1/requests`: a service asks a device for a key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewEnrolmentRequest {
    /// What the key is for, shown to the device (same rules as a key's label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Lifetime in seconds (default 600; from the server's `min_ttl` to 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    /// `digits` (default) or `base32`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_format: Option<CodeFormat>,
}

/// `201` answer to `POST /v1/requests`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EnrolmentRequestCreated {
    /// `req_…`
    pub id: String,
    /// The request's code, normalised; shown once.
    pub code: String,
    pub code_display: String,
    /// `keymaster:request:<code>`, what the service's QR code holds.
    pub code_uri: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: jiff::Timestamp,
}

/// `POST /v1/requests/preview`: the device looks at a request before answering it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestPreviewRequest {
    /// A bare request code or its `keymaster:request:` URI.
    pub code: String,
}

/// A service named in an answer, with the domains it was enrolled with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ServiceInfo {
    pub id: String,
    pub name: String,
    pub domains: Vec<String>,
}

/// `200` answer to `POST /v1/requests/preview`: who asks, so that the device can say "Send your
/// key to example-web (example.com)?".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RequestPreview {
    pub request_id: String,
    pub service: ServiceInfo,
    #[serde(default)]
    pub label: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: jiff::Timestamp,
}

/// `200` answer to `GET /v1/requests/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RequestStatus {
    pub id: String,
    /// `pending`, `fulfilled` or `expired`.
    pub status: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: jiff::Timestamp,
    /// The retrieval body, in the answer that retrieved the key (the first read of a fulfilled
    /// request); `null` before, and after (the key material is gone then).
    #[serde(default)]
    pub retrieval: Option<RetrievalResponse>,
}
