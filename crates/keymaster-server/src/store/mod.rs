//! The `Store` trait: every read and every atomic change the service makes, at the level of
//! the domain (deposit, retrieve, revoke…), so that a backend is one implementation and no
//! handler knows which database is underneath.
//!
//! Each writing operation is one transaction that also writes its event (the outbox) and its
//! audit row: either all of it happens or none of it does. What a transition writes is planned
//! once, backend-neutrally, in [`lifecycle`]; a backend loads the facts and applies the plan.
//!
//! Not responsible for HTTP, for choosing status codes, or for cryptography: callers pass in
//! hashes and sealed blobs, never codes or tokens in clear.

pub mod columns;
pub mod events;
pub mod handoff;
pub mod lifecycle;
pub mod limits;
pub mod outbox;
pub mod postgres;
pub mod requests;
pub mod retention;
pub mod rotation;
pub mod sqlite;

use std::net::IpAddr;

use async_trait::async_trait;
use ipnet::IpNet;
use jiff::Timestamp;
use keymaster_core::policy::{Denial, PasswordCheck, Policy};
use keymaster_core::wire::{AuditEntry, CodeFormat, Event, Notify, RetrievalContext};

use self::handoff::{DisputeOutcome, RevealOutcome, SasNonceBytes, SasRequestOutcome};
use self::outbox::{
    AttemptResult, ClaimRequest, ClaimedDelivery, DeliveryRecord, EndpointBacklog, OutboxStats,
};
use self::requests::{AnswerOutcome, NewRequest, RequestLookup, RequestRecord};
use self::rotation::{Resealed, SealedBlob, SealedPlace};

/// A failure of the store itself (never "not found": that is `Ok(None)` or an outcome).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached; the request may succeed later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Any other database failure.
    #[error("database error: {0}")]
    Db(String),
    /// A stored value that does not decode (corruption or a bug).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// A tenant about to be created.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub id: String,
    pub name: String,
    pub webhook_url: Option<String>,
    /// The `whsec_` secret, sealed under the server's at-rest key.
    pub webhook_secret_sealed: Vec<u8>,
}

/// An app key about to be created.
#[derive(Debug, Clone)]
pub struct NewAppKey {
    pub id: String,
    pub tenant_id: String,
    pub token_hash: Vec<u8>,
}

/// A service about to be enrolled.
#[derive(Debug, Clone)]
pub struct NewService {
    pub id: String,
    pub name: String,
    pub domains: Vec<String>,
    pub allowed_cidrs: Vec<IpNet>,
    pub token_hash: Vec<u8>,
    /// See [`ServiceAuth::confined_tenant_id`].
    pub confined_tenant_id: Option<String>,
}

/// The tenant an app key acts for.
#[derive(Debug, Clone)]
pub struct AppKeyAuth {
    pub id: String,
    pub tenant_id: String,
}

/// An enrolled service, as its key authenticates it.
#[derive(Debug, Clone)]
pub struct ServiceAuth {
    pub id: String,
    pub name: String,
    pub domains: Vec<String>,
    pub allowed_cidrs: Vec<IpNet>,
    /// The one tenant whose keys this service may retrieve (the demo's service); the retrieval
    /// transaction treats a code of any other tenant's key as unknown. `None`: every tenant's
    /// keys, as their policies allow. Set when the service is made and never changed, so the
    /// value read with the token is the value in the database.
    pub confined_tenant_id: Option<String>,
}

/// A key about to be deposited.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: String,
    pub tenant_id: String,
    pub holder_hash: Vec<u8>,
    pub code_hash: Vec<u8>,
    pub code_format: CodeFormat,
    pub label: Option<String>,
    /// `public` or `secret`.
    pub kind: &'static str,
    pub algorithm: String,
    /// DER SubjectPublicKeyInfo, for kind `public`.
    pub spki: Option<Vec<u8>>,
    /// The symmetric secret sealed under the at-rest key, for kind `secret`.
    pub secret_sealed: Option<Vec<u8>>,
    pub fingerprint: Option<String>,
    pub ssh_fingerprint: Option<String>,
    pub jwk_thumbprint: Option<String>,
    pub proven: bool,
    pub policy: Policy,
    /// argon2id PHC string of the policy password.
    pub password_hash: Option<String>,
    pub notify: Option<Notify>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// The depositor's network (`keymaster_core::policy::origin_network`), never the full
    /// address.
    pub origin_network: Option<IpNet>,
    /// SHA-256 of the device's SAS nonce, when the deposit gave `sas_commitment`.
    pub sas_commitment: Option<Vec<u8>>,
}

/// One audit row to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub at: Timestamp,
    pub actor: String,
    pub action: &'static str,
    /// `success` or the refusal's error code.
    pub outcome: String,
    pub key_id: Option<String>,
    pub ip: Option<IpAddr>,
    pub detail: Option<String>,
}

/// The lifecycle state of a key record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active,
    AwaitingConfirmation,
    Locked,
    Retrieved,
    Expired,
    Revoked,
}

impl KeyState {
    /// The name used in the API and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::AwaitingConfirmation => "awaiting_confirmation",
            KeyState::Locked => "locked",
            KeyState::Retrieved => "retrieved",
            KeyState::Expired => "expired",
            KeyState::Revoked => "revoked",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<KeyState> {
        Some(match s {
            "active" => KeyState::Active,
            "awaiting_confirmation" => KeyState::AwaitingConfirmation,
            "locked" => KeyState::Locked,
            "retrieved" => KeyState::Retrieved,
            "expired" => KeyState::Expired,
            "revoked" => KeyState::Revoked,
            _ => return None,
        })
    }

    /// Whether the key still exists (its code can be answered).
    pub fn is_live(self) -> bool {
        matches!(
            self,
            KeyState::Active | KeyState::AwaitingConfirmation | KeyState::Locked
        )
    }
}

/// What the holder may see of a key record.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: String,
    pub tenant_id: String,
    pub label: Option<String>,
    pub algorithm: String,
    pub fingerprint: Option<String>,
    pub state: KeyState,
    pub expires_at: Timestamp,
    pub confirm_by: Option<Timestamp>,
    pub retrievals: u32,
    pub max_retrievals: u32,
    pub notify: Option<Notify>,
    /// The format its codes are made in.
    pub code_format: CodeFormat,
}

impl KeyRecord {
    /// The status at `now`: a live key past its expiry is `expired` even before the sweeper
    /// has reported it, and a held key past its grace is `retrieved`.
    pub fn status_at(&self, now: Timestamp) -> KeyState {
        match self.state {
            s if !s.is_live() => s,
            KeyState::AwaitingConfirmation if self.confirm_by.is_some_and(|c| now >= c) => {
                KeyState::Retrieved
            }
            _ if keymaster_core::policy::is_expired(self.expires_at, now) => KeyState::Expired,
            s => s,
        }
    }
}

/// A retrieval, with everything the transaction needs.
#[derive(Debug, Clone)]
pub struct RetrieveCommand {
    pub code_hash: Vec<u8>,
    /// The code's hashes under the previous server secrets, newest first (empty unless a
    /// rotation is under way): looked up only when `code_hash` finds nothing, and a live key
    /// found so is given `code_hash` in the same transaction.
    pub previous_code_hashes: Vec<Vec<u8>>,
    pub service: ServiceAuth,
    pub source_ip: IpAddr,
    pub context: Option<RetrievalContext>,
    pub password: PasswordCheck,
    pub now: Timestamp,
    /// Failed retrievals allowed per minute for this service.
    pub budget_per_minute: u32,
    /// The id this retrieval gets if it succeeds (a repeat within a grace keeps the old one).
    pub new_retrieval_id: String,
    /// The slot of the failure budget taken for this retrieval when it came back
    /// [`RetrieveOutcome::VerifyPassword`]; set when it is retrieved again with the verdict.
    pub budget_slot: Option<BudgetSlot>,
    /// `POST /v1/retrievals/preview`: decide and answer exactly as a retrieval would, but on
    /// success change nothing and emit `key.previewed` instead of handing the key out.
    pub preview: bool,
}

/// A failed retrieval counted in advance against the service's budget, for a password about to
/// be checked: argon2 runs only for an attempt the budget has room for. It stays counted if
/// the retrieval fails, and is given back if it succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSlot {
    /// When it was taken (the retrieval's `now`): a budget window that started later does not
    /// hold it.
    pub taken_at: Timestamp,
}

/// The key material handed out by a successful retrieval.
#[derive(Debug, Clone)]
pub struct RetrievedKey {
    pub retrieval_id: String,
    pub key_id: String,
    pub kind: String,
    pub algorithm: String,
    pub spki: Option<Vec<u8>>,
    pub secret_sealed: Option<Vec<u8>>,
    pub fingerprint: Option<String>,
    pub ssh_fingerprint: Option<String>,
    pub jwk_thumbprint: Option<String>,
    pub label: Option<String>,
    pub proven: bool,
    pub confirm_by: Option<Timestamp>,
    /// SHA-256 of the device's SAS nonce, as deposited.
    pub sas_commitment: Option<Vec<u8>>,
}

/// What a successful preview shows about a key: provenance, never key material.
#[derive(Debug, Clone)]
pub struct PreviewedKey {
    pub key_id: String,
    pub label: Option<String>,
    pub kind: String,
    pub algorithm: String,
    pub fingerprint: Option<String>,
    pub proven: bool,
    pub tenant_id: String,
    pub tenant_name: String,
    pub deposited_at: Timestamp,
    /// The depositor's network as stored (`203.0.113.0/24`).
    pub origin_network: Option<String>,
}

/// How a retrieval ended.
#[derive(Debug, Clone)]
pub enum RetrieveOutcome {
    /// The service's failure budget is spent; retry after this many seconds.
    RateLimited(u64),
    /// No live key has this code (unknown, expired, consumed, revoked, replaced).
    NotFound,
    /// The key's policy refused, by this rule (never [`Denial::Gone`], which is `NotFound`).
    Denied(Denial),
    /// The key, to be returned.
    Allowed(Box<RetrievedKey>),
    /// Every rule but the password allows the retrieval and a slot of the failure budget is
    /// taken: check the request's password against `hash` (argon2id PHC string), then retrieve
    /// again with the verdict and `slot`. Nothing else was written.
    VerifyPassword { hash: String, slot: BudgetSlot },
    /// A preview that a retrieval would have answered with the key.
    Previewed(Box<PreviewedKey>),
}

/// How a re-code ended.
#[derive(Debug, Clone)]
pub enum RecodeOutcome {
    /// The new code is live until this time.
    Done(Timestamp),
    /// The key is gone.
    NotLive,
    /// The new code collided with a live one; make another.
    CodeTaken,
    /// The key had `recodes_per_hour` new codes within the last hour; retry after this many
    /// seconds. Nothing changed but the (coalesced) audit row.
    RateLimited(u64),
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepReport {
    /// Keys that reached their expiry and were reported `key.expired`.
    pub expired: usize,
    /// Held keys whose confirmation grace ended, reported `key.unconfirmed`.
    pub grace_ended: usize,
    /// Finished records, tombstones, deliveries and audit rows removed after their retention.
    pub purged: usize,
    /// Pending enrolment requests that reached their expiry.
    pub requests_expired: usize,
    /// A batch came back full: call again without waiting.
    pub more: bool,
}

impl SweepReport {
    /// Most keys (and most rows of each kind) one sweep call ends or purges; the sweeper calls
    /// again while a batch comes back full.
    pub const BATCH: usize = 1000;

    /// Whether a batch came back full: what was ended, or any of the `purged` counts.
    pub fn batch_full(&self, purged: &[usize]) -> bool {
        [self.expired, self.grace_ended]
            .iter()
            .chain(purged)
            .any(|n| *n >= Self::BATCH)
    }
}

/// Announces committed events inside this process: the dispatcher and the holders' event
/// streams wait on it instead of polling. Each backend calls [`CommitSignal::committed`] once the
/// transaction of an operation that wrote events is durably committed (PostgreSQL also relays
/// the commits of other replicas, `postgres::notify`). A receiver sees that something changed
/// since it last looked, not what: it reads the store to find out.
#[derive(Debug)]
pub struct CommitSignal {
    tx: tokio::sync::watch::Sender<u64>,
}

impl Default for CommitSignal {
    fn default() -> Self {
        CommitSignal {
            tx: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl CommitSignal {
    /// Events were committed.
    pub fn committed(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that wakes at the next commit after it last looked.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

/// An event with its position in the key's stream.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Increases with every event written, across all keys.
    pub seq: i64,
    pub event: Event,
}

/// Every operation of the service on its database.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The hash of the generated admin token, if one was made at an earlier start.
    async fn admin_token_hash(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores the hash of a generated admin token unless one exists; true if stored.
    async fn init_admin_token_hash(&self, hash: Vec<u8>) -> Result<bool, StoreError>;

    async fn create_tenant(&self, t: NewTenant, audit: AuditRecord) -> Result<(), StoreError>;
    /// False when the tenant does not exist.
    async fn create_app_key(&self, k: NewAppKey, audit: AuditRecord) -> Result<bool, StoreError>;
    /// False when there is no such app key.
    async fn delete_app_key(&self, id: &str, audit: AuditRecord) -> Result<bool, StoreError>;
    async fn create_service(&self, s: NewService, audit: AuditRecord) -> Result<(), StoreError>;
    /// False when there is no such service.
    async fn delete_service(&self, id: &str, audit: AuditRecord) -> Result<bool, StoreError>;
    async fn app_key_by_token(&self, hash: &[u8]) -> Result<Option<AppKeyAuth>, StoreError>;
    async fn service_by_token(&self, hash: &[u8]) -> Result<Option<ServiceAuth>, StoreError>;
    /// The ids of `ids` that name no enrolled service.
    async fn missing_services(&self, ids: &[String]) -> Result<Vec<String>, StoreError>;

    /// Appends one audit row on its own.
    async fn append_audit(&self, audit: AuditRecord) -> Result<(), StoreError>;
    /// Appends a refusal that changes nothing else (a mistyped code, a `429`), coalesced: at
    /// most one row per actor, action, outcome and minute, whose `detail` counts the refusals
    /// (`limits::coalesce_key`). The row keeps the first refusal's time, key and address.
    async fn append_coalesced_audit(&self, audit: AuditRecord) -> Result<(), StoreError>;
    /// Newest first, ids below `before`.
    async fn list_audit(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// Stores a key with its `key.deposited` event and audit row; false when the code is
    /// already live (the caller makes another).
    async fn deposit(&self, key: NewKey, audit: AuditRecord) -> Result<bool, StoreError>;
    /// The retrieval transaction: budget, lookup, policy, effects, event, audit. A password
    /// is never checked here: a key that needs the check comes back
    /// [`RetrieveOutcome::VerifyPassword`] and is retrieved again with the verdict.
    async fn retrieve(&self, cmd: RetrieveCommand) -> Result<RetrieveOutcome, StoreError>;
    /// Refuses a retrieval before any key is looked at (the service's own `allowed_cidrs`):
    /// counts a failure and audits it, unless the budget is already spent (then the seconds to
    /// wait).
    async fn refuse_retrieval(
        &self,
        service: &ServiceAuth,
        budget_per_minute: u32,
        audit: AuditRecord,
    ) -> Result<Option<u64>, StoreError>;
    /// Confirms a held retrieval by the service that made it; false when there is none.
    async fn confirm(
        &self,
        retrieval_id: &str,
        service: &ServiceAuth,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// The retrieving service asks for the SAS: records its nonce and emits `sas.requested`
    /// (event stream only) with its audit row. See [`handoff::decide_request`].
    async fn request_sas(
        &self,
        retrieval_id: &str,
        service: &ServiceAuth,
        nonce: [u8; 32],
        audit: AuditRecord,
    ) -> Result<SasRequestOutcome, StoreError>;
    /// The holder reveals its nonce for a retrieval of its key, with its audit row. See
    /// [`handoff::decide_reveal`].
    async fn reveal_sas(
        &self,
        key_id: &str,
        retrieval_id: &str,
        nonce: [u8; 32],
        audit: AuditRecord,
    ) -> Result<RevealOutcome, StoreError>;
    /// Both nonces of a retrieval, for the service that made it; `None` for any other.
    async fn sas_nonces(
        &self,
        retrieval_id: &str,
        service: &ServiceAuth,
    ) -> Result<Option<SasNonceBytes>, StoreError>;
    /// The retrieving service disputes a retrieval: emits `key.disputed` to every channel of
    /// the key, with its audit row. See [`handoff::decide_dispute`].
    async fn dispute(
        &self,
        retrieval_id: &str,
        service: &ServiceAuth,
        reason: &'static str,
        audit: AuditRecord,
    ) -> Result<DisputeOutcome, StoreError>;
    /// Whether a key that is gone keeps its event stream open for the SAS exchange: it was
    /// deposited with a commitment and one of its retrievals, made less than
    /// [`handoff::REVEAL_WINDOW`] before `now`, has no revealed nonce yet.
    async fn awaiting_reveal(&self, key_id: &str, now: Timestamp) -> Result<bool, StoreError>;

    /// The key a holder token opens (live or within retention): the key `key_id` if its holder
    /// hash is `holder_hash` (tokens name their key, `crypto::holder_key_id`), else, for a
    /// token made before they did, the key whose holder hash is `holder_hash`.
    async fn key_by_holder(
        &self,
        key_id: Option<&str>,
        holder_hash: &[u8],
    ) -> Result<Option<KeyRecord>, StoreError>;
    /// The key's events, oldest first, after `after_seq`.
    async fn key_events(
        &self,
        key_id: &str,
        after_seq: i64,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// The position of an event id in the stream, for `Last-Event-ID`.
    async fn event_seq(&self, key_id: &str, event_id: &str) -> Result<Option<i64>, StoreError>;
    /// Sets a live key's expiry; false when the key is gone.
    async fn set_expiry(
        &self,
        key_id: &str,
        expires_at: Timestamp,
        audit: AuditRecord,
    ) -> Result<bool, StoreError>;
    /// Revokes a live key (`key.revoked`); false when the key is gone.
    async fn revoke(&self, key_id: &str, audit: AuditRecord) -> Result<bool, StoreError>;
    /// Replaces the key's code (`code.reissued`), at most `per_hour` times within an hour.
    async fn recode(
        &self,
        key_id: &str,
        new_code_hash: Vec<u8>,
        per_hour: u32,
        audit: AuditRecord,
    ) -> Result<RecodeOutcome, StoreError>;

    /// Reports expired keys and ended graces, purges what is past retention.
    async fn sweep(
        &self,
        now: Timestamp,
        retention: retention::Retention,
    ) -> Result<SweepReport, StoreError>;

    /// Wakes at every commit of events (this process's, and other replicas' where the backend
    /// can tell).
    fn commits(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Claims due deliveries for `req.lease` (no other dispatcher takes them meanwhile), a fair
    /// share per endpoint (`ClaimRequest`).
    async fn claim_deliveries(&self, req: ClaimRequest)
        -> Result<Vec<ClaimedDelivery>, StoreError>;
    /// Records how the attempts of a batch ended, in one transaction.
    async fn finish_deliveries(
        &self,
        results: Vec<(i64, AttemptResult)>,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Extends to `until` the leases of these deliveries that are still claimed.
    async fn renew_leases(&self, ids: Vec<i64>, until: Timestamp) -> Result<(), StoreError>;
    /// Pauses an endpoint: none of its unclaimed pending deliveries is due before `until`.
    async fn pause_endpoint(
        &self,
        endpoint: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<u64, StoreError>;
    /// The endpoints with the most pending deliveries, most first.
    async fn endpoint_backlog(&self, limit: u32) -> Result<Vec<EndpointBacklog>, StoreError>;
    /// Replaces the tenant's webhook secret; the old one keeps signing until `previous_until`.
    /// False when there is no such tenant.
    async fn rotate_webhook_secret(
        &self,
        tenant_id: &str,
        new_sealed: Vec<u8>,
        previous_until: Timestamp,
        audit: AuditRecord,
    ) -> Result<bool, StoreError>;
    /// Deliveries with this status, newest first.
    async fn list_deliveries(
        &self,
        status: &str,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// Depth and age of the undelivered queue.
    async fn outbox_stats(&self, now: Timestamp) -> Result<OutboxStats, StoreError>;

    /// Whether a key (live or ended) has one of these code hashes: a code drawn during a
    /// rotation must not be one that a key made under a previous secret still answers to.
    async fn code_hash_in_use(&self, hashes: Vec<Vec<u8>>) -> Result<bool, StoreError>;
    /// Up to `limit` blobs of `place` whose key id is not `current_key_id`, in id order after
    /// `after` (paging).
    async fn sealed_not_under(
        &self,
        place: SealedPlace,
        current_key_id: [u8; crate::crypto::KEY_ID_LEN],
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<SealedBlob>, StoreError>;
    /// Replaces each blob whose row still holds the old one, in one transaction; how many were
    /// replaced.
    async fn replace_sealed(
        &self,
        place: SealedPlace,
        changes: Vec<Resealed>,
    ) -> Result<u64, StoreError>;
    /// How many blobs, over every place, are not sealed under `current_key_id`.
    async fn count_sealed_not_under(
        &self,
        current_key_id: [u8; crate::crypto::KEY_ID_LEN],
    ) -> Result<u64, StoreError>;
    /// Stores an enrolment request with its audit row; false when its code hash is taken
    /// (a live request's or a tombstone's: the caller makes another code).
    async fn create_request(&self, r: NewRequest, audit: AuditRecord) -> Result<bool, StoreError>;
    /// Finds the request an app key presents by code (its hash under the current server
    /// secret, then under previous ones during a rotation; `requests::decide_lookup`), counting a
    /// failure against the app key's budget (`requests::budget_subject`) when it is not found
    /// (and, with `fulfilled_is_failure`, when it was answered already); a failure or a `429`
    /// also writes `audit` (coalesced), with its outcome set.
    async fn lookup_request(
        &self,
        code_hashes: Vec<Vec<u8>>,
        app: &AppKeyAuth,
        now: Timestamp,
        budget_per_minute: u32,
        fulfilled_is_failure: bool,
        audit: AuditRecord,
    ) -> Result<RequestLookup, StoreError>;
    /// Deposits `key` in answer to the request `request_id` of `service` (id, name), in one
    /// transaction: only while the request is pending and unexpired, then it is fulfilled.
    /// The `key.deposited` event names the service.
    async fn answer_request(
        &self,
        request_id: &str,
        service: (String, String),
        key: NewKey,
        audit: AuditRecord,
    ) -> Result<AnswerOutcome, StoreError>;
    /// The request `id` if `service_id` made it; `None` for any other service.
    async fn request_for_service(
        &self,
        id: &str,
        service_id: &str,
    ) -> Result<Option<RequestRecord>, StoreError>;
    /// Records that the service read the key of its fulfilled request.
    async fn request_read(&self, id: &str, retrieval_id: &str) -> Result<(), StoreError>;
}
