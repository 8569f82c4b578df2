//! SQLite: the retrieval transaction and confirmation, as facts loaded for the lifecycle plans
//! (`store::lifecycle`) and applied in the writer's open transaction.
//!
//! One transaction: check the service's failure budget, find the key by code hash, plan
//! (policy decision and effects), apply. There is no check-then-act across transactions, so a
//! single-use code is handed out exactly once however many requests race for it. The writer
//! runs one transaction at a time, so no more passwords are checked at once than the budget
//! has room for (`RetrieveOutcome::VerifyPassword`).
//!
//! Statements of a retrieval: the budget's row, the key's row (and, for a code no row has, its
//! tombstone), then those of the plan (`apply`).

use std::sync::LazyLock;

use jiff::Timestamp;
use rusqlite::{params, OptionalExtension};

use super::apply::{apply, apply_at};
use super::rows::budget_spent;
use super::tx::Tx;
use super::writer::db;
use crate::store::lifecycle::{
    self, outcome, plan_refuse, plan_retrieve, subject, Answer, Found, HeldKey, KeyIdent, KeyRow,
    HELD_COLUMNS, KEY_COLUMNS,
};
use crate::store::{AuditRecord, RetrieveCommand, RetrieveOutcome, ServiceAuth, StoreError};

/// What a retrieval finds: the budget, then the key with this code, of the tenant the service
/// is confined to if it is (`ServiceAuth::confined_tenant_id`; another tenant's key is then
/// not found at all), under the current secret or, during a rotation, a previous one; then a
/// replaced code (or that of a key that ended before migration 3) in `tombstones`.
/// With the rowid of the key's row when it was found in `keys`.
fn find(c: &Tx<'_>, cmd: &RetrieveCommand) -> Result<(Found, Option<i64>), StoreError> {
    // With a slot taken in advance, this attempt is already in the budget.
    if cmd.budget_slot.is_none() {
        let subject = subject(&cmd.service);
        if let Some(retry) = budget_spent(c, &subject, cmd.now, cmd.budget_per_minute)? {
            return Ok((Found::RateLimited(retry), None));
        }
    }
    let confined = cmd.service.confined_tenant_id.as_deref();
    if let Some((row, rowid)) = load_any_secret(c, cmd, confined)? {
        if let Some(found) = Found::from_row(Some(row)) {
            return Ok((found, Some(rowid)));
        }
    }
    let dead = super::rotation::tombstone(c, &cmd.code_hash, &cmd.previous_code_hashes, confined)?;
    let found = dead.map_or(Found::Unknown, |(id, tenant, label)| {
        Found::Dead(KeyIdent::new(id, tenant, label))
    });
    Ok((found, None))
}

/// Where `load`'s rowid is: right after [`KEY_COLUMNS`] (a list of plain columns and one
/// expression, none with a comma inside).
const ROWID_COLUMN: usize = {
    let b = KEY_COLUMNS.as_bytes();
    let (mut i, mut commas) = (0, 0);
    while i < b.len() {
        if b[i] == b',' {
            commas += 1;
        }
        i += 1;
    }
    commas + 1
};

/// The key row with this code hash, of `tenant` if given, and its rowid (after the key's
/// columns, which `KeyRow::read` decodes from column 0).
fn load(
    c: &Tx<'_>,
    code_hash: &[u8],
    tenant: Option<&str>,
) -> Result<Option<(KeyRow, i64)>, StoreError> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {KEY_COLUMNS}, rowid FROM keys
             WHERE code_hash = ?1 AND (?2 IS NULL OR tenant_id = ?2)"
        )
    });
    c.cached(SQL.as_str(), |s| {
        s.query_row(params![code_hash, tenant], |r| {
            Ok(KeyRow::read(r).map(|row| (row, r.get::<_, i64>(ROWID_COLUMN))))
        })
        .optional()
    })
    .map_err(db)?
    .transpose()?
    .map(|(row, rowid)| Ok((row, rowid.map_err(db)?)))
    .transpose()
}

/// [`load`] by the code's hash under the current secret and, only when that finds nothing during
/// a rotation, under each previous one; a live key found so is rehashed to the current secret
/// in this transaction (`rotation::rehash_code`).
fn load_any_secret(
    c: &Tx<'_>,
    cmd: &RetrieveCommand,
    tenant: Option<&str>,
) -> Result<Option<(KeyRow, i64)>, StoreError> {
    let found = load(c, &cmd.code_hash, tenant)?;
    if found.is_some() || cmd.previous_code_hashes.is_empty() {
        return Ok(found);
    }
    for old in &cmd.previous_code_hashes {
        if let Some((row, rowid)) = load(c, old, tenant)? {
            if row.is_live() {
                super::rotation::rehash_code(c, &row.id, old, &cmd.code_hash)?;
            }
            return Ok(Some((row, rowid)));
        }
    }
    Ok(None)
}

pub fn retrieve(c: &Tx<'_>, cmd: &RetrieveCommand) -> Result<RetrieveOutcome, StoreError> {
    let (found, rowid) = find(c, cmd)?;
    let (plan, answer) = plan_retrieve(cmd, &found)?;
    apply_at(c, &plan, rowid)?;
    let tenant = match (&answer, &found) {
        (Answer::Preview, Found::Live(row)) => {
            Some(super::handoff::tenant_name(c, &row.tenant_id)?)
        }
        _ => None,
    };
    outcome(found, answer, tenant)
}

pub fn refuse(
    c: &Tx<'_>,
    service: &ServiceAuth,
    budget_per_minute: u32,
    a: &AuditRecord,
) -> Result<Option<u64>, StoreError> {
    let spent = budget_spent(c, &subject(service), a.at, budget_per_minute)?;
    apply(c, &plan_refuse(service, spent, a))?;
    Ok(spent)
}

pub fn confirm(
    c: &Tx<'_>,
    retrieval_id: &str,
    service: &ServiceAuth,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let held = c
        .prepare_cached(&format!(
            "SELECT {HELD_COLUMNS} FROM keys
             WHERE pending_retrieval_id = ?1 AND pending_service_id = ?2"
        ))
        .and_then(|mut s| {
            s.query_row(params![retrieval_id, service.id], |r| Ok(HeldKey::read(r)))
                .optional()
        })
        .map_err(db)?
        .transpose()?;
    let Some(plan) = lifecycle::plan_confirm(held, service, now)? else {
        return Ok(false);
    };
    apply(c, &plan)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use keymaster_core::policy::PasswordCheck;
    use rusqlite::{params, Connection};

    use super::retrieve;
    use crate::store::sqlite::tx::Tx;
    use crate::store::sqlite::{migrate, migrated_to};
    use crate::store::{RetrieveCommand, RetrieveOutcome, ServiceAuth};

    fn key(c: &Connection, id: &str, code_hash: Option<&[u8]>, state: &str, ended: Option<i64>) {
        c.execute(
            "INSERT INTO keys (id, tenant_id, holder_hash, code_hash, code_format, kind, algorithm,
                 spki, proven, policy, state, created_at, expires_at, ended_at, max_retrievals)
             VALUES (?1, 'ten_1', CAST(?1 AS BLOB), ?2, 'digits', 'public_key', 'ed25519', x'00', 0,
                 '{\"max_retrievals\":1}', ?3, 0, 9999999999999, ?4, 1)",
            params![id, code_hash, state, ended],
        )
        .unwrap();
    }

    fn cmd(code_hash: &[u8]) -> RetrieveCommand {
        RetrieveCommand {
            code_hash: code_hash.to_vec(),
            previous_code_hashes: Vec::new(),
            service: ServiceAuth {
                id: "svc_1".into(),
                name: "s".into(),
                domains: vec![],
                allowed_cidrs: vec![],
                confined_tenant_id: None,
            },
            source_ip: "127.0.0.1".parse().unwrap(),
            context: None,
            password: PasswordCheck::NotGiven,
            now: Timestamp::now(),
            budget_per_minute: 100,
            new_retrieval_id: "ret_1".into(),
            budget_slot: None,
            preview: false,
        }
    }

    fn stale_uses(c: &Connection, key_id: &str) -> i64 {
        c.query_row(
            "SELECT count(*) FROM events WHERE key_id = ?1 AND type = 'code.stale_used'",
            params![key_id],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// Codes stay in the row of an ended key since migration 3; a key that ended before it has
    /// its code in `tombstones`. Both kinds of dead code are reported to their holder, neither
    /// hands anything out, and ending a key writes no tombstone row.
    #[test]
    fn dead_codes_are_reported_whether_in_their_row_or_in_an_old_tombstone() {
        let dir = tempfile::tempdir().unwrap();
        let c = migrated_to(&dir.path().join("k.db"), 2);
        key(&c, "key_old", None, "retrieved", Some(1));
        c.execute(
            "INSERT INTO tombstones (code_hash, key_id, died_at) VALUES (x'0a', 'key_old', 1)",
            [],
        )
        .unwrap();
        migrate(&c).unwrap();
        key(&c, "key_new", Some(b"\x0b"), "active", None);

        assert!(matches!(
            retrieve(&Tx::new(&c), &cmd(b"\x0b")).unwrap(),
            RetrieveOutcome::Allowed(_)
        ));
        let kept: Option<Vec<u8>> = c
            .query_row("SELECT code_hash FROM keys WHERE id = 'key_new'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(kept.as_deref(), Some(&b"\x0b"[..]));
        assert_eq!(stale_uses(&c, "key_new"), 0);

        for (code, key_id) in [(b"\x0b", "key_new"), (b"\x0a", "key_old")] {
            assert!(matches!(
                retrieve(&Tx::new(&c), &cmd(code)).unwrap(),
                RetrieveOutcome::NotFound
            ));
            assert_eq!(stale_uses(&c, key_id), 1, "{key_id}");
        }
        let tombstones: i64 = c
            .query_row("SELECT count(*) FROM tombstones", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tombstones, 1, "only the old key's tombstone");
    }

    /// A service confined to a tenant meets the codes of another tenant's keys (live, ended
    /// with the code in its row, or in an old tombstone) as unknown codes: nothing handed out,
    /// nothing changed, no event; the key's own tenant still gets its stale use reported.
    #[test]
    fn a_confined_service_does_not_see_another_tenants_keys() {
        let dir = tempfile::tempdir().unwrap();
        let c = migrated_to(&dir.path().join("k.db"), 2);
        key(&c, "key_old", None, "retrieved", Some(1));
        c.execute(
            "INSERT INTO tombstones (code_hash, key_id, died_at) VALUES (x'0a', 'key_old', 1)",
            [],
        )
        .unwrap();
        migrate(&c).unwrap();
        key(&c, "key_live", Some(b"\x0b"), "active", None);
        key(&c, "key_ended", Some(b"\x0c"), "retrieved", Some(1));
        let events = |c: &Connection| -> i64 {
            c.query_row("SELECT count(*) FROM events", [], |r| r.get(0))
                .unwrap()
        };
        let confined = |code: &[u8], tenant: &str| {
            let mut cmd = cmd(code);
            cmd.service.confined_tenant_id = Some(tenant.into());
            cmd
        };

        for code in [b"\x0b", b"\x0c", b"\x0a"] {
            assert!(matches!(
                retrieve(&Tx::new(&c), &confined(code, "ten_2")).unwrap(),
                RetrieveOutcome::NotFound
            ));
        }
        assert_eq!(events(&c), 0);
        let retrievals: i64 = c
            .query_row(
                "SELECT retrievals FROM keys WHERE id = 'key_live' AND state = 'active'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(retrievals, 0);

        assert!(matches!(
            retrieve(&Tx::new(&c), &confined(b"\x0a", "ten_1")).unwrap(),
            RetrieveOutcome::NotFound
        ));
        assert_eq!(stale_uses(&c, "key_old"), 1);
        assert!(matches!(
            retrieve(&Tx::new(&c), &confined(b"\x0b", "ten_1")).unwrap(),
            RetrieveOutcome::Allowed(_)
        ));
    }
}
