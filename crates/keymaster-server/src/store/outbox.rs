//! Types of the delivery outbox: what the dispatcher claims, how an attempt ended, and what
//! the operator is shown (as stored; the API's types are the routes'). Every backend stores
//! deliveries in the transaction of their event.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use keymaster_core::wire::Event;

/// Where a delivery goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A signed webhook POST.
    Webhook,
    /// An e-mail over SMTP.
    Email,
}

impl Channel {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Email => "email",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Channel> {
        match s {
            "webhook" => Some(Channel::Webhook),
            "email" => Some(Channel::Email),
            _ => None,
        }
    }
}

/// The endpoint of e-mail deliveries: the one SMTP relay.
pub const SMTP_ENDPOINT: &str = "smtp";

/// A delivery claimed by one dispatcher for the length of its lease.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub channel: Channel,
    /// The URL or the address.
    pub target: String,
    /// Where it goes, as the dispatcher queues it: the webhook URL's scheme and authority,
    /// lower-cased, or [`SMTP_ENDPOINT`].
    pub endpoint: String,
    pub tenant_id: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub event: Event,
    /// The tenant's sealed webhook secrets that sign now: the current one, then the previous
    /// one while a rotation is under way (read with the claim, so that sending needs no read).
    pub secrets: Vec<Vec<u8>>,
}

/// What a dispatcher asks for when it claims.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub now: Timestamp,
    /// How long the claim keeps other dispatchers away unless renewed.
    pub lease: Duration,
    /// Most deliveries claimed in all.
    pub limit: u32,
    /// Most deliveries claimed for one endpoint not in `room`.
    pub per_endpoint: u32,
    /// Endpoints with less room than `per_endpoint` (busy, or probing after a pause); those with
    /// none are skipped altogether.
    pub room: HashMap<String, u32>,
}

impl ClaimRequest {
    /// The room for `endpoint` in this claim.
    pub fn room_for(&self, endpoint: &str) -> u32 {
        self.room
            .get(endpoint)
            .copied()
            .unwrap_or(self.per_endpoint)
    }

    /// The endpoints to skip: no room at all.
    pub fn skipped(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .room
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(e, _)| e.clone())
            .collect();
        v.sort();
        v
    }
}

/// How one attempt ended.
#[derive(Debug, Clone)]
pub enum AttemptResult {
    /// Delivered (a 2xx, or the mail relay accepted it).
    Delivered,
    /// Failed; try again at this time.
    Retry { at: Timestamp, error: String },
    /// Failed for the last time: visible to the operator as `failed`.
    Failed { error: String },
    /// Not attempted (its endpoint is paused); due again at this time, attempts unchanged.
    Postponed { at: Timestamp },
}

/// The pending deliveries of one endpoint (`GET /v1/admin/endpoints`).
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointBacklog {
    pub endpoint: String,
    pub pending: u64,
    /// When the oldest of them was created.
    pub oldest: Timestamp,
}

/// A delivery as the store keeps it, for the operator's list (`GET /v1/admin/deliveries`,
/// whose answer type is the API's, `routes::admin::DeliveryInfo`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub key_id: String,
    pub tenant_id: String,
    /// `webhook` or `email`.
    pub channel: String,
    pub target: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
}

/// Depth and age of the queue of undelivered events, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OutboxStats {
    pub pending: u64,
    /// Age in seconds of the oldest pending delivery.
    pub oldest_age_seconds: f64,
}
