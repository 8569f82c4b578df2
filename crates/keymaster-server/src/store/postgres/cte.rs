//! PostgreSQL: the parts that the one-statement writes (`keys::Deposit`, `apply_one`) share,
//! as common table expressions over a CTE `k (id, tenant_id, notify)` that holds the key row the
//! statement wrote or locked — zero rows when it wrote nothing, and then these write nothing;
//! and the events and audit row of a plan as `guarded` binds them, one row per job.
//!
//! Events and audit rows are bound as arrays and fixed columns, so that the SQL text does not
//! depend on how many events a plan has: sqlx prepares each text once per connection.
//!
//! Why the key comes from `k` and never from `SELECT … FROM keys`: every part of one statement
//! reads the snapshot taken when the statement began, so a key inserted by the same statement
//! is not in `keys` for its other parts (its deliveries would find no targets).

use keymaster_core::wire::Event;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::Postgres;

use super::ms;
use super::outbox::{ENDPOINT_SQL, TARGETS_SQL};
use crate::store::events::{event_json, is_stream_only};
use crate::store::limits;
use crate::store::{AuditRecord, StoreError};

/// A statement with its arguments, bound in order.
pub type Q<'q> = Query<'q, Postgres, PgArguments>;

/// `ev` (the events, in their order) and `dl` (their deliveries, unless stream-only), from
/// `$at` (the time, Unix ms) and the parameters from `$first` on that [`EventParams::bind`]
/// binds.
pub fn events_ctes(at: usize, first: usize) -> String {
    let (ids, types, payloads, delivered) = (first, first + 1, first + 2, first + 3);
    format!(
        "ev AS (
           INSERT INTO events (id, key_id, tenant_id, type, at, payload)
           SELECT e.id, k.id, k.tenant_id, e.type, ${at}, e.payload
           FROM k, unnest(${ids}::text[], ${types}::text[], ${payloads}::text[])
                WITH ORDINALITY AS e(id, type, payload, n)
           ORDER BY e.n
         ), dl AS (
           INSERT INTO deliveries (event_id, channel, target, tenant_id, status, next_attempt_at,
                                   created_at, endpoint)
           SELECT e.id, t.channel, t.target, k.tenant_id, 'pending', ${at}, ${at}, {ENDPOINT_SQL}
           FROM k, unnest(${delivered}::text[]) WITH ORDINALITY AS e(id, n),
                LATERAL ({TARGETS_SQL}) t
           ORDER BY e.n, t.channel, t.target
         )"
    )
}

/// The events of one statement, as the arrays [`events_ctes`] reads.
#[derive(Default)]
pub struct EventParams {
    ids: Vec<String>,
    types: Vec<String>,
    payloads: Vec<String>,
    /// The ids of those that go to webhooks and e-mail too.
    delivered: Vec<String>,
}

impl EventParams {
    pub fn push(&mut self, e: &Event) -> Result<(), StoreError> {
        self.payloads.push(event_json(e)?);
        self.ids.push(e.id.clone());
        self.types.push(e.event_type.clone());
        if !is_stream_only(&e.event_type) {
            self.delivered.push(e.id.clone());
        }
        Ok(())
    }

    /// Each event's id, type and payload, in order (`guarded`: one statement for many plans).
    pub fn rows(&self) -> Vec<(&str, &str, &str)> {
        let (ids, types, payloads) = (&self.ids, &self.types, &self.payloads);
        (0..ids.len())
            .map(|i| (ids[i].as_str(), types[i].as_str(), payloads[i].as_str()))
            .collect()
    }

    /// The ids of those that go to webhooks and e-mail too, in order.
    pub fn delivered(&self) -> Vec<&str> {
        self.delivered.iter().map(String::as_str).collect()
    }

    pub fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(&self.ids)
            .bind(&self.types)
            .bind(&self.payloads)
            .bind(&self.delivered)
    }
}

/// `au`: the audit row (or the coalesced refusal) when `when` holds, from the parameters from
/// `$first` on that [`AuditParams::bind`] binds.
pub fn audit_cte(first: usize, when: &str) -> String {
    let p: Vec<String> = (first..first + 11).map(|i| format!("${i}")).collect();
    format!(
        "au AS (
           INSERT INTO audit (at, actor, action, outcome, key_id, ip, detail, repeats, coalesce_key)
           SELECT {}::bigint, {}::text, {}::text, {}::text, {}::text, {}::text, {}::text,
                  {}::bigint, {}::text
           WHERE {}::boolean AND {when}
           ON CONFLICT (coalesce_key) WHERE coalesce_key IS NOT NULL DO UPDATE
           SET repeats = audit.repeats + 1, detail = (audit.repeats + 1)::text || {}::text
         )",
        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10]
    )
}

/// The audit row of one statement: none, a row of its own, or a refusal coalesced into the row
/// of its actor, action, outcome and minute (`rows::insert_coalesced_audit`).
pub struct AuditParams {
    at: i64,
    actor: String,
    action: &'static str,
    outcome: String,
    key_id: Option<String>,
    ip: Option<String>,
    detail: Option<String>,
    repeats: Option<i64>,
    coalesce_key: Option<String>,
    present: bool,
}

impl AuditParams {
    pub fn none() -> AuditParams {
        AuditParams {
            at: 0,
            actor: String::new(),
            action: "",
            outcome: String::new(),
            key_id: None,
            ip: None,
            detail: None,
            repeats: None,
            coalesce_key: None,
            present: false,
        }
    }

    pub fn row(a: &AuditRecord) -> AuditParams {
        AuditParams {
            at: ms(a.at),
            actor: a.actor.clone(),
            action: a.action,
            outcome: a.outcome.clone(),
            key_id: a.key_id.clone(),
            ip: a.ip.map(|ip| ip.to_string()),
            detail: a.detail.clone(),
            repeats: None,
            coalesce_key: None,
            present: true,
        }
    }

    pub fn coalesced(a: &AuditRecord) -> AuditParams {
        AuditParams {
            detail: Some(limits::COALESCED_ONCE.to_owned()),
            repeats: Some(1),
            coalesce_key: Some(limits::coalesce_key(a)),
            ..AuditParams::row(a)
        }
    }

    /// Whether this is a coalesced refusal (which `guarded` does not write).
    pub fn is_coalesced(&self) -> bool {
        self.coalesce_key.is_some()
    }

    /// The row of its own, if there is one (`guarded`; not for a coalesced refusal).
    pub fn own_row(&self) -> Option<AuditRow<'_>> {
        (self.present && self.coalesce_key.is_none()).then(|| AuditRow {
            at: self.at,
            actor: &self.actor,
            action: self.action,
            outcome: &self.outcome,
            key_id: self.key_id.as_deref(),
            ip: self.ip.as_deref(),
            detail: self.detail.as_deref(),
        })
    }

    pub fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(self.at)
            .bind(&self.actor)
            .bind(self.action)
            .bind(&self.outcome)
            .bind(&self.key_id)
            .bind(&self.ip)
            .bind(&self.detail)
            .bind(self.repeats)
            .bind(&self.coalesce_key)
            .bind(self.present)
            .bind(limits::COALESCED_TIMES)
    }
}

/// An audit row of its own, as `guarded` binds it.
pub struct AuditRow<'a> {
    pub at: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub outcome: &'a str,
    pub key_id: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub detail: Option<&'a str>,
}
