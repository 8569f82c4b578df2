//! The backend-neutral part of enrolment requests (the service asks, the device answers): the
//! values the store takes and gives, and the decision of a lookup by code, so that both
//! backends answer the same way.
//!
//! Not responsible for SQL (each backend's `requests`) or HTTP (`routes::requests`).

use jiff::Timestamp;
use keymaster_core::wire::CodeFormat;

use crate::store::StoreError;

/// A request about to be stored.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub id: String,
    pub service_id: String,
    pub code_hash: Vec<u8>,
    pub code_format: CodeFormat,
    pub label: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// The stored state of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    Pending,
    Fulfilled,
    Expired,
}

impl RequestState {
    /// The name used in the API and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Fulfilled => "fulfilled",
            RequestState::Expired => "expired",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<RequestState> {
        Some(match s {
            "pending" => RequestState::Pending,
            "fulfilled" => RequestState::Fulfilled,
            "expired" => RequestState::Expired,
            _ => return None,
        })
    }
}

/// A request as its service reads it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub id: String,
    pub state: RequestState,
    pub expires_at: Timestamp,
    /// The key deposited in answer.
    pub key_id: Option<String>,
    /// Set once the service has read the key (the first read of the fulfilled request).
    pub retrieval_id: Option<String>,
}

/// The columns a service's read of its request selects, in [`RECORD_COLUMNS`]' order.
pub type RecordRow = (String, String, i64, Option<String>, Option<String>);

/// What [`RequestRecord::read`] decodes.
pub const RECORD_COLUMNS: &str = "id, state, expires_at, key_id, retrieval_id";

impl RequestRecord {
    /// Decodes a selected [`RecordRow`]; a row that does not decode is `Corrupt`.
    pub fn read(row: RecordRow) -> Result<Self, StoreError> {
        let (id, state, expires_at, key_id, retrieval_id) = row;
        Ok(RequestRecord {
            id,
            state: RequestState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("request state {state:?}")))?,
            expires_at: Timestamp::from_millisecond(expires_at)
                .map_err(|e| StoreError::Corrupt(format!("timestamp: {e}")))?,
            key_id,
            retrieval_id,
        })
    }

    /// The status at `now`: a pending request past its expiry is `expired` even before the
    /// sweeper has marked it.
    pub fn status_at(&self, now: Timestamp) -> RequestState {
        match self.state {
            RequestState::Pending if now >= self.expires_at => RequestState::Expired,
            s => s,
        }
    }
}

/// A pending request found by its code, with what the device is shown about it.
#[derive(Debug, Clone)]
pub struct FoundRequest {
    pub id: String,
    pub service_id: String,
    pub service_name: String,
    pub service_domains: Vec<String>,
    pub label: Option<String>,
    pub expires_at: Timestamp,
}

/// How a lookup of a request by its code ended.
#[derive(Debug, Clone)]
pub enum RequestLookup {
    /// The app key's failure budget is spent; retry after this many seconds.
    RateLimited(u64),
    /// No request the app key may answer has this code (unknown, expired, of a service gone,
    /// or of a service confined to another tenant); counted against the budget.
    NotFound,
    /// The request was answered already (counted against the budget only when the caller
    /// said it answers such a code `404`).
    Fulfilled,
    /// A pending request.
    Pending(Box<FoundRequest>),
}

/// What the store needs to know about a request found by code: whether the app key's tenant
/// may answer it.
#[derive(Debug, Clone)]
pub struct RawFound {
    pub found: FoundRequest,
    pub state: RequestState,
    /// The tenant the requesting service is confined to (the demo's service), if any.
    pub confined_tenant_id: Option<String>,
}

/// A request's row as both backends select it: id, service id, service name, service domains
/// (JSON), label, `expires_at` (ms), state, the service's confined tenant.
pub type RequestRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    String,
    Option<String>,
);

impl RawFound {
    /// Decodes a selected [`RequestRow`]; a row that does not decode is `Corrupt`.
    pub fn read(row: RequestRow) -> Result<Self, StoreError> {
        let (id, service_id, name, domains, label, expires_at, state, confined) = row;
        Ok(RawFound {
            found: FoundRequest {
                id,
                service_id,
                service_name: name,
                service_domains: serde_json::from_str(&domains)
                    .map_err(|e| StoreError::Corrupt(format!("service domains: {e}")))?,
                label,
                expires_at: Timestamp::from_millisecond(expires_at)
                    .map_err(|e| StoreError::Corrupt(format!("timestamp: {e}")))?,
            },
            state: RequestState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("request state {state:?}")))?,
            confined_tenant_id: confined,
        })
    }
}

/// The decision of a lookup, once the row (if any) is read: what to answer and whether it
/// counts as a failure against the app key's budget. Shared by both backends.
pub fn decide_lookup(
    raw: Option<RawFound>,
    tenant_id: &str,
    now: Timestamp,
    fulfilled_is_failure: bool,
) -> (RequestLookup, bool) {
    let Some(raw) = raw else {
        return (RequestLookup::NotFound, true);
    };
    if raw
        .confined_tenant_id
        .as_deref()
        .is_some_and(|t| t != tenant_id)
    {
        return (RequestLookup::NotFound, true);
    }
    match raw.state {
        RequestState::Fulfilled => (RequestLookup::Fulfilled, fulfilled_is_failure),
        RequestState::Expired => (RequestLookup::NotFound, true),
        RequestState::Pending if now >= raw.found.expires_at => (RequestLookup::NotFound, true),
        RequestState::Pending => (RequestLookup::Pending(Box::new(raw.found)), false),
    }
}

/// How answering a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerOutcome {
    /// The key is stored and the request fulfilled.
    Done,
    /// The request expired (or is gone) meanwhile.
    NotFound,
    /// Another deposit answered it first.
    Fulfilled,
}

/// The budget subject of an app key's request lookups.
pub fn budget_subject(app_key_id: &str) -> String {
    format!("app_key:{app_key_id}:requests")
}

/// The reason of the `key.deposited` event of a key that answers a request.
pub const ANSWER_REASON: &str = "enrolment_request";
