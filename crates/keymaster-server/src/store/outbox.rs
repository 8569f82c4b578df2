//! Types of the delivery outbox: what the dispatcher claims, how an attempt ended, and what
//! the operator sees. Every backend stores deliveries in the transaction of their event.

use jiff::Timestamp;
use keymaster_core::wire::Event;
use serde::{Deserialize, Serialize};

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

/// A delivery claimed by one dispatcher for the length of its lease.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub channel: Channel,
    /// The URL or the address.
    pub target: String,
    pub tenant_id: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub event: Event,
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
}

/// A delivery as the operator sees it (`GET /v1/admin/deliveries`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct DeliveryInfo {
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// Depth and age of the queue of undelivered events, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OutboxStats {
    pub pending: u64,
    /// Age in seconds of the oldest pending delivery.
    pub oldest_age_seconds: f64,
}
