//! Retrieval policy: validation at deposit and the pure decision at retrieval.
//!
//! Two halves:
//! - [`Policy::from_input`] (in `validate`) turns the deposit's [`PolicyInput`] into a [`Policy`]
//!   whose parts are parsed types (CIDRs as [`ipnet::IpNet`], the zone as a looked-up
//!   [`jiff::tz::TimeZone`], domains normalised), and resolves the key's absolute expiry with
//!   [`resolve_expiry`], which `PATCH /v1/keys/{id}` also uses.
//! - [`decide`] (in `decide`) answers one retrieval from the stored policy, the store's
//!   [`KeyFacts`] and the [`Requester`], at an instant given by the caller.
//!
//! This module is not responsible for the clock, storage, hashing or verifying the password
//! (argon2 runs in the server, outside the transaction, and arrives here as a
//! [`PasswordCheck`]), the service's own enrolment limits (checked before any key's policy) or
//! mapping a [`Denial`] to an HTTP status. Nothing here does I/O: time zones come from the tz
//! database bundled into the binary (jiff's `tzdb-bundle-always`), so a policy is decided the
//! same on every machine.
//!
//! [`PolicyInput`]: crate::wire::PolicyInput

mod decide;
mod domain;
mod geo;
mod proximity;
mod time_window;
mod validate;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use decide::decide;
/// The one parser of domain names, for a policy's `domains` and a service's enrolment.
pub use domain::normalise as parse_domain;
pub use geo::{Geo, GeoCircle};
pub use proximity::{origin_network, ORIGIN_PREFIX_V4, ORIGIN_PREFIX_V6};
pub use time_window::TimeWindow;
/// The one parser of networks, for a policy's `fetcher_cidrs` and a service's
/// `allowed_cidrs`.
pub use validate::cidr as parse_cidr;
pub use validate::resolve_expiry;

/// Whether a key that expires at `expires_at` is expired at `now`: from that instant on. The
/// one definition of "expired": the policy refuses such a key, the store reports it as
/// `expired`, and the sweepers select it as `expires_at <= now`.
pub fn is_expired(expires_at: jiff::Timestamp, now: jiff::Timestamp) -> bool {
    now >= expires_at
}

/// After this many wrong passwords in a row the key is locked (`403 key_locked`, `key.locked`).
pub const MAX_PASSWORD_FAILURES: u32 = 5;

/// The server's bounds on a key's lifetime, from its configuration (`min_ttl`, `max_ttl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyLimits {
    /// Shortest lifetime a deposit may ask for, in seconds (default 60).
    pub min_ttl_seconds: i64,
    /// Longest lifetime a deposit or a `PATCH` may ask for, in seconds (default 30 days).
    pub max_ttl_seconds: i64,
    /// Lifetime when the deposit names none, in seconds (default 86400).
    pub default_ttl_seconds: i64,
}

impl Default for PolicyLimits {
    /// The API's defaults: 60 s to 30 days, one day when not given.
    fn default() -> Self {
        PolicyLimits {
            min_ttl_seconds: 60,
            max_ttl_seconds: 30 * 86_400,
            default_ttl_seconds: 86_400,
        }
    }
}

/// The validated, stored form of a policy. The server stores it as JSON, without the rules that
/// are absent or at their default (a default policy is `{"max_retrievals":1}`, not 180 bytes
/// of nulls in every key row); reading fills them back in, so rows written with every field
/// still read the same.
///
/// It does not hold the password, only whether one is required; the argon2id hash is the
/// server's. Lists are `None` when the rule is absent ("any"), never empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Successful retrievals before the key is removed, 1 to 100.
    pub max_retrievals: u32,
    /// Whether a retrieval must carry the key's password.
    #[serde(default, skip_serializing_if = "is_false")]
    pub has_password: bool,
    /// Service ids allowed to retrieve; `None` = any service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<String>>,
    /// Normalised domains (lower case, no trailing dot); the service must be enrolled with one of
    /// them or a subdomain. `None` = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domains: Option<Vec<String>>,
    /// Networks the request's source address must be inside (host bits cleared). `None` = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetcher_cidrs: Option<Vec<ipnet::IpNet>>,
    /// Days and hours in a time zone when retrieval is allowed. `None` = always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_window: Option<TimeWindow>,
    /// Where the retrieving person must be, by the retrieval's `context`. `None` = anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<Geo>,
    /// The retrieval's `context.ip` must lie in the depositor's network. `None` = anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proximity: Option<crate::wire::Proximity>,
    /// Hold the key after a retrieval until the service confirms.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_confirmation: bool,
    /// How long a held key waits for confirmation, in seconds (1 to 86400, default 300).
    #[serde(
        default = "default_confirm_grace",
        skip_serializing_if = "is_default_confirm_grace"
    )]
    pub confirm_grace_seconds: u32,
}

/// The confirmation grace when the deposit names none, in seconds.
pub const DEFAULT_CONFIRM_GRACE_SECONDS: u32 = 300;

fn default_confirm_grace() -> u32 {
    DEFAULT_CONFIRM_GRACE_SECONDS
}

fn is_default_confirm_grace(s: &u32) -> bool {
    *s == DEFAULT_CONFIRM_GRACE_SECONDS
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A policy input that cannot be accepted. The server answers `400 invalid_request` with this
/// message; `field` is the JSON path of the offending value.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct PolicyError {
    /// JSON path of the offending value, e.g. `policy.time_window.timezone` or
    /// `policy.fetcher_cidrs[1]`.
    pub field: String,
    /// What is wrong with it, for a person. Never contains the password.
    pub message: String,
}

impl PolicyError {
    /// An error about `field`.
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error with `prefix.` in front of its field.
    pub(crate) fn prefixed(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

/// What the store knows about a live key at the moment of a retrieval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFacts {
    /// When the key is gone.
    pub expires_at: jiff::Timestamp,
    /// Successful retrievals so far.
    pub retrievals: u32,
    /// Wrong passwords since the last correct one.
    pub failed_password_attempts: u32,
    /// Set once the password has failed [`MAX_PASSWORD_FAILURES`] times.
    pub locked: bool,
    /// A retrieval awaiting confirmation, if the policy requires confirmation and one happened.
    pub pending: Option<Pending>,
    /// The depositor's network ([`origin_network`]), for the `proximity` rule; `None` when
    /// none was recorded.
    pub origin_network: Option<ipnet::IpNet>,
}

/// A retrieval that holds the key until its service confirms or the grace ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The id the first retrieval answered with; repeated to the same service.
    pub retrieval_id: String,
    /// The service that holds the key.
    pub service_id: String,
    /// End of the grace: from this instant on, the key is gone.
    pub confirm_by: jiff::Timestamp,
}

/// The server's verdict on the password the request carried. argon2 is costly, so the server
/// first decides with [`PasswordCheck::Unverified`]: only a key that every other rule would hand
/// out comes back as [`Decision::VerifyPassword`], and only then is the password checked and
/// the key decided again with the verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordCheck {
    /// The request carried no password.
    NotGiven,
    /// The request carried a password that has not been checked yet.
    Unverified,
    /// The request's password matches the key's hash.
    Correct,
    /// The request's password does not match (or the key has no hash to match against).
    Incorrect,
}

/// Who is asking, from where, with what.
#[derive(Clone, Copy, Debug)]
pub struct Requester<'a> {
    /// The authenticated service's id.
    pub service_id: &'a str,
    /// The domains the service is enrolled with.
    pub service_domains: &'a [String],
    /// The request's source address (as the server sees it, after any trusted proxy).
    pub source_ip: std::net::IpAddr,
    /// The retrieval's `context`, as the service reports it.
    pub context: Option<&'a crate::wire::RetrievalContext>,
    /// The server's check of the request's password.
    pub password: PasswordCheck,
}

/// The answer to one retrieval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Hand out the key: a new retrieval (counts toward `max_retrievals`).
    Allow,
    /// The same service asks again during its confirmation grace: hand out the key again under
    /// the same retrieval id, without counting a new retrieval.
    AllowAgain {
        /// The id of the pending retrieval.
        retrieval_id: String,
    },
    /// Every rule but the password allows the retrieval, and the request carried a password
    /// that is not checked yet ([`PasswordCheck::Unverified`]): check it, then decide again
    /// with the verdict.
    VerifyPassword,
    /// Refuse, for this reason.
    Deny(Denial),
}

/// Why a retrieval is refused. Each variant names the rule that refused it; [`Denial::code`]
/// is the API's error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The key is expired, used up, its confirmation grace is over, or it is held for another
    /// service. Answered `404 not_found`, the same as an unknown code.
    Gone,
    /// The key is locked after too many wrong passwords.
    Locked,
    /// `services` is set and does not list the requesting service.
    ServiceNotAllowed,
    /// `domains` is set and none of the service's domains is one of them or below one.
    DomainNotAllowed,
    /// `fetcher_cidrs` is set and the source address is in none of them.
    IpNotAllowed,
    /// `time_window` is set and the instant is outside it.
    OutsideTimeWindow,
    /// `geo` is set and the context's place is outside it.
    GeoDenied,
    /// `geo` is set and the context lacks what it needs (coordinates and/or country).
    GeoContextRequired,
    /// `proximity` is set and `context.ip` is not in the depositor's network.
    ProximityDenied,
    /// `proximity` is set and the context carries no `ip`.
    ProximityContextRequired,
    /// The key has a password and the request carried none.
    PasswordRequired,
    /// The request's password is wrong; `now_locked` when this failure locks the key.
    PasswordIncorrect {
        /// This was failure number [`MAX_PASSWORD_FAILURES`]: the key is now locked.
        now_locked: bool,
    },
}

impl Denial {
    /// The API's error code for this denial (the `code` of the problem body and the `reason`
    /// of `key.denied`). A wrong password that locks the key is reported as `key_locked`.
    pub fn code(&self) -> &'static str {
        match self {
            Denial::Gone => "not_found",
            Denial::Locked => "key_locked",
            Denial::ServiceNotAllowed => "service_not_allowed",
            Denial::DomainNotAllowed => "domain_not_allowed",
            Denial::IpNotAllowed => "ip_not_allowed",
            Denial::OutsideTimeWindow => "outside_time_window",
            Denial::GeoDenied => "geo_denied",
            Denial::GeoContextRequired => "geo_context_required",
            Denial::ProximityDenied => "proximity_denied",
            Denial::ProximityContextRequired => "proximity_context_required",
            Denial::PasswordRequired => "password_required",
            Denial::PasswordIncorrect { now_locked: false } => "password_incorrect",
            Denial::PasswordIncorrect { now_locked: true } => "key_locked",
        }
    }
}
