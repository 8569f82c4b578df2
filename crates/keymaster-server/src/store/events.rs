//! Event construction and the stored form of events, shared by every backend so that payloads
//! are the same whichever database wrote them. Payloads name the key, its tenant and label, the service and a reason —
//! never a code, never key material.

use jiff::Timestamp;
use keymaster_core::wire::{Event, EventData, ServiceRef};
use serde::{Deserialize, Serialize};

use super::columns::Columns;
use super::StoreError;
use crate::crypto::new_id;

/// The event types of the API (`docs/api.md`, "Events and webhooks").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Deposited,
    Retrieved,
    Confirmed,
    Denied,
    Expired,
    Revoked,
    Locked,
    /// A held key's confirmation grace ended without a confirmation (reported by the sweeper
    /// as it ends the key).
    Unconfirmed,
    CodeReissued,
    CodeStaleUsed,
    /// A service looked at the key's provenance before claiming it.
    Previewed,
    /// The retrieving service reports that what it got is not what the person meant.
    Disputed,
    /// The retrieving service asks the device to reveal its SAS nonce (event stream only).
    SasRequested,
}

impl EventType {
    /// The wire name (`key.retrieved`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Deposited => "key.deposited",
            EventType::Retrieved => "key.retrieved",
            EventType::Confirmed => "key.confirmed",
            EventType::Denied => "key.denied",
            EventType::Expired => "key.expired",
            EventType::Revoked => "key.revoked",
            EventType::Locked => "key.locked",
            EventType::Unconfirmed => "key.unconfirmed",
            EventType::CodeReissued => "code.reissued",
            EventType::CodeStaleUsed => "code.stale_used",
            EventType::Previewed => "key.previewed",
            EventType::Disputed => "key.disputed",
            EventType::SasRequested => "sas.requested",
        }
    }

    /// Whether events of this type go only to the holder's event stream, never to webhooks
    /// or e-mail: `sas.requested` is a step of a protocol between two programs, meaningless
    /// to a person and useless to anyone but the device.
    pub fn is_stream_only(self) -> bool {
        matches!(self, EventType::SasRequested)
    }

    /// Whether the key is gone after this event (the holder's stream ends after it).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            EventType::Expired | EventType::Revoked | EventType::Unconfirmed
        )
    }
}

/// Whether an event of this wire type (`sas.requested`, …) stays off webhooks and e-mail
/// ([`EventType::is_stream_only`]).
pub fn is_stream_only(event_type: &str) -> bool {
    event_type == EventType::SasRequested.as_str()
}

/// The facts about a key that every event of it carries.
#[derive(Debug, Clone)]
pub struct KeyRef<'a> {
    pub key_id: &'a str,
    pub tenant_id: &'a str,
    pub label: Option<&'a str>,
}

/// Makes a new event with a fresh `evt_` id, its time in whole milliseconds: the precision
/// every backend stores times in, so that an event reads back exactly as it was made (SQLite
/// rebuilds it from its columns).
pub fn new_event(
    ty: EventType,
    key: &KeyRef<'_>,
    service: Option<(&str, &str)>,
    reason: Option<&str>,
    at: Timestamp,
) -> Event {
    Event {
        id: new_id("evt_"),
        event_type: ty.as_str().to_owned(),
        timestamp: Timestamp::from_millisecond(at.as_millisecond()).unwrap_or(at),
        data: EventData {
            key_id: key.key_id.to_owned(),
            tenant_id: key.tenant_id.to_owned(),
            label: key.label.map(str::to_owned),
            service: service.map(|(id, name)| ServiceRef {
                id: id.to_owned(),
                name: name.to_owned(),
            }),
            reason: reason.map(str::to_owned),
            retrieval_id: None,
            nonce: None,
        },
    }
}

/// What an event's `payload` column holds, in every backend: only what its other columns
/// (`id`, `type`, `at`, `key_id`, `tenant_id`) do not, usually `{}`. Storing the whole event
/// repeated ~200 bytes of those columns per event. Rows written before hold the whole event
/// (with `data`), and read as they were.
#[derive(Serialize, Deserialize)]
struct Payload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service: Option<ServiceRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retrieval_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    /// Present only in a row that holds the whole event (written before payloads were trimmed).
    #[serde(default, skip_serializing)]
    data: Option<serde::de::IgnoredAny>,
}

/// The stored payload of an event (see [`Payload`]).
pub fn event_json(e: &Event) -> Result<String, StoreError> {
    serde_json::to_string(&Payload {
        label: e.data.label.clone(),
        service: e.data.service.clone(),
        reason: e.data.reason.clone(),
        retrieval_id: e.data.retrieval_id.clone(),
        nonce: e.data.nonce.clone(),
        data: None,
    })
    .map_err(|e| StoreError::Db(e.to_string()))
}

/// The columns an event is read back from, in [`read_event`]'s order.
pub const EVENT_COLUMNS: &str = "id, type, at, key_id, tenant_id, payload";

/// An event read back from its row ([`EVENT_COLUMNS`], starting at column `first`).
pub fn read_event(r: &impl Columns, first: usize) -> Result<Event, StoreError> {
    let payload = r.text(first + 5)?;
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("stored event: {e}"));
    let stored: Payload = serde_json::from_str(&payload).map_err(corrupt)?;
    if stored.data.is_some() {
        return serde_json::from_str(&payload).map_err(corrupt);
    }
    let at = r.int(first + 2)?;
    Ok(Event {
        id: r.text(first)?,
        event_type: r.text(first + 1)?,
        timestamp: Timestamp::from_millisecond(at)
            .map_err(|e| StoreError::Corrupt(format!("event time: {e}")))?,
        data: EventData {
            key_id: r.text(first + 3)?,
            tenant_id: r.text(first + 4)?,
            label: stored.label,
            service: stored.service,
            reason: stored.reason,
            retrieval_id: stored.retrieval_id,
            nonce: stored.nonce,
        },
    })
}
