//! Table tests of the lifecycle plans: for each transition and each kind of facts, the plan's
//! key change, budget effect, events, audit row and answer.

use jiff::{SignedDuration, Timestamp};
use keymaster_core::policy::PasswordCheck;
use keymaster_core::wire::CodeFormat;

use super::*;
use crate::store::events::EventType;

const NOW_MS: i64 = 1_800_000_000_000;

fn now() -> Timestamp {
    Timestamp::from_millisecond(NOW_MS).unwrap()
}

fn service() -> ServiceAuth {
    ServiceAuth {
        id: "svc_1".into(),
        name: "web".into(),
        domains: vec![],
        allowed_cidrs: vec![],
        confined_tenant_id: None,
    }
}

fn cmd() -> RetrieveCommand {
    RetrieveCommand {
        code_hash: b"code".to_vec(),
        previous_code_hashes: Vec::new(),
        service: service(),
        source_ip: "192.0.2.1".parse().unwrap(),
        context: None,
        password: PasswordCheck::NotGiven,
        now: now(),
        budget_per_minute: 10,
        new_retrieval_id: "ret_new".into(),
        budget_slot: None,
        preview: false,
    }
}

fn row(policy: &str) -> KeyRow {
    KeyRow {
        id: "key_1".into(),
        tenant_id: "ten_1".into(),
        label: Some("laptop".into()),
        kind: "public".into(),
        algorithm: "ed25519".into(),
        spki: Some(vec![1, 2, 3]),
        secret_sealed: None,
        fingerprint: Some("SHA256:x".into()),
        ssh_fingerprint: None,
        jwk_thumbprint: None,
        proven: true,
        policy: policy.into(),
        state: "active".into(),
        expires_at: NOW_MS + 60_000,
        retrievals: 0,
        failed_password_attempts: 0,
        pending_retrieval_id: None,
        pending_service_id: None,
        confirm_by: None,
        ended_at: None,
        notify: false,
        password_hash: None,
        created_at: NOW_MS - 1000,
        origin_network: None,
        sas_commitment: None,
    }
}

fn svc_pair() -> Option<(String, String)> {
    Some(("svc_1".into(), "web".into()))
}

fn ev(ty: EventType, reason: Option<&'static str>) -> EventEffect {
    EventEffect {
        ty,
        service: svc_pair(),
        reason,
    }
}

fn audit_outcome(plan: &Plan) -> Option<(&str, bool)> {
    match &plan.audit {
        AuditEffect::None => None,
        AuditEffect::Row(a) => Some((a.outcome.as_str(), false)),
        AuditEffect::Coalesced(a) => Some((a.outcome.as_str(), true)),
    }
}

fn slot() -> BudgetSlot {
    BudgetSlot {
        taken_at: now() - SignedDuration::from_secs(1),
    }
}

/// One row of the retrieval table.
struct Case {
    name: &'static str,
    found: Found,
    cmd: RetrieveCommand,
    change: KeyChange,
    budget: BudgetEffect,
    events: Vec<EventEffect>,
    /// The audit row's outcome, and whether it is coalesced.
    audit: Option<(&'static str, bool)>,
    answer: Answer,
}

fn live(r: KeyRow) -> Found {
    Found::Live(Box::new(r))
}

fn with<T>(mut v: T, f: impl FnOnce(&mut T)) -> T {
    f(&mut v);
    v
}

fn handed(confirm_by: Option<Timestamp>) -> Answer {
    Answer::HandOut {
        retrieval_id: "ret_new".into(),
        confirm_by,
    }
}

#[test]
fn retrieval_plans() {
    let single = r#"{"max_retrievals":1}"#;
    let twice = r#"{"max_retrievals":2}"#;
    let held = r#"{"max_retrievals":1,"require_confirmation":true,"confirm_grace_seconds":60}"#;
    let password = r#"{"max_retrievals":1,"has_password":true}"#;
    let only_other = r#"{"max_retrievals":1,"services":["svc_other"]}"#;
    let grace_end = Timestamp::from_millisecond(NOW_MS + 60_000).unwrap();
    let dead_key = KeyIdent::new("key_9".into(), "ten_1".into(), None);
    let cases = vec![
        Case {
            name: "rate limited: only a coalesced audit row",
            found: Found::RateLimited(7),
            cmd: cmd(),
            change: KeyChange::Keep,
            budget: BudgetEffect::Keep,
            events: vec![],
            audit: Some(("rate_limited", true)),
            answer: Answer::RateLimited(7),
        },
        Case {
            name: "unknown code: a failure and a not_found row",
            found: Found::Unknown,
            cmd: cmd(),
            change: KeyChange::Keep,
            budget: BudgetEffect::Charge,
            events: vec![],
            audit: Some(("not_found", false)),
            answer: Answer::NotFound,
        },
        Case {
            name: "dead code: its holder is told",
            found: Found::Dead(dead_key),
            cmd: cmd(),
            change: KeyChange::Keep,
            budget: BudgetEffect::Charge,
            events: vec![ev(EventType::CodeStaleUsed, None)],
            audit: Some(("not_found", false)),
            answer: Answer::NotFound,
        },
        Case {
            name: "last retrieval without confirmation ends the key",
            found: live(row(single)),
            cmd: cmd(),
            change: KeyChange::End {
                state: KeyState::Retrieved,
                retrievals: Some(1),
                clear_hold: false,
            },
            budget: BudgetEffect::Keep,
            events: vec![ev(EventType::Retrieved, None)],
            audit: Some(("success", false)),
            answer: handed(None),
        },
        Case {
            name: "a retrieval that is not the last counts",
            found: live(with(row(twice), |r| r.failed_password_attempts = 2)),
            cmd: cmd(),
            change: KeyChange::Count { retrievals: 1 },
            budget: BudgetEffect::Keep,
            events: vec![ev(EventType::Retrieved, None)],
            audit: Some(("success", false)),
            answer: handed(None),
        },
        Case {
            name: "confirmation required: held until the grace ends",
            found: live(row(held)),
            cmd: cmd(),
            change: KeyChange::Hold {
                retrievals: 1,
                retrieval_id: "ret_new".into(),
                service_id: "svc_1".into(),
                confirm_by: grace_end,
            },
            budget: BudgetEffect::Keep,
            events: vec![ev(EventType::Retrieved, None)],
            audit: Some(("success", false)),
            answer: handed(Some(grace_end)),
        },
        Case {
            name: "the holding service again within its grace: same retrieval, no count",
            found: live(with(row(held), |r| {
                r.state = "awaiting_confirmation".into();
                r.retrievals = 1;
                r.pending_retrieval_id = Some("ret_old".into());
                r.pending_service_id = Some("svc_1".into());
                r.confirm_by = Some(NOW_MS + 30_000);
            })),
            cmd: cmd(),
            change: KeyChange::Keep,
            budget: BudgetEffect::Keep,
            events: vec![],
            audit: Some(("success", false)),
            answer: Answer::HandOut {
                retrieval_id: "ret_old".into(),
                confirm_by: Some(Timestamp::from_millisecond(NOW_MS + 30_000).unwrap()),
            },
        },
        Case {
            name: "expired key: as an unknown code, but audited with its id",
            found: live(with(row(single), |r| r.expires_at = NOW_MS)),
            cmd: cmd(),
            change: KeyChange::Keep,
            budget: BudgetEffect::Charge,
            events: vec![],
            audit: Some(("not_found", false)),
            answer: Answer::NotFound,
        },
        Case {
            name: "a refusing rule: key.denied with its code",
            found: live(row(only_other)),
            cmd: cmd(),
            change: KeyChange::Keep,
            budget: BudgetEffect::Charge,
            events: vec![ev(EventType::Denied, Some("service_not_allowed"))],
            audit: Some(("service_not_allowed", false)),
            answer: Answer::Denied(Denial::ServiceNotAllowed),
        },
        Case {
            name: "a password not checked yet: a slot taken, nothing else",
            found: live(with(row(password), |r| {
                r.password_hash = Some("$argon2id$x".into())
            })),
            cmd: with(cmd(), |c| c.password = PasswordCheck::Unverified),
            change: KeyChange::Keep,
            budget: BudgetEffect::Charge,
            events: vec![],
            audit: None,
            answer: Answer::VerifyPassword("$argon2id$x".into(), BudgetSlot { taken_at: now() }),
        },
        Case {
            name: "a wrong password counts; its slot is its failure",
            found: live(with(row(password), |r| r.failed_password_attempts = 1)),
            cmd: with(cmd(), |c| {
                c.password = PasswordCheck::Incorrect;
                c.budget_slot = Some(slot());
            }),
            change: KeyChange::WrongPassword {
                failed_attempts: 2,
                lock: false,
            },
            budget: BudgetEffect::Keep,
            events: vec![ev(EventType::Denied, Some("password_incorrect"))],
            audit: Some(("password_incorrect", false)),
            answer: Answer::Denied(Denial::PasswordIncorrect { now_locked: false }),
        },
        Case {
            name: "the fifth wrong password locks the key",
            found: live(with(row(password), |r| r.failed_password_attempts = 4)),
            cmd: with(cmd(), |c| {
                c.password = PasswordCheck::Incorrect;
                c.budget_slot = Some(slot());
            }),
            change: KeyChange::WrongPassword {
                failed_attempts: 5,
                lock: true,
            },
            budget: BudgetEffect::Keep,
            events: vec![
                ev(EventType::Locked, None),
                ev(EventType::Denied, Some("key_locked")),
            ],
            audit: Some(("key_locked", false)),
            answer: Answer::Denied(Denial::PasswordIncorrect { now_locked: true }),
        },
        Case {
            name: "the right password: the slot given back, the key handed out",
            found: live(with(row(password), |r| r.failed_password_attempts = 3)),
            cmd: with(cmd(), |c| {
                c.password = PasswordCheck::Correct;
                c.budget_slot = Some(slot());
            }),
            change: KeyChange::End {
                state: KeyState::Retrieved,
                retrievals: Some(1),
                clear_hold: false,
            },
            budget: BudgetEffect::GiveBack(slot()),
            events: vec![ev(EventType::Retrieved, None)],
            audit: Some(("success", false)),
            answer: handed(None),
        },
        Case {
            name: "a preview changes nothing but its event",
            found: live(row(single)),
            cmd: with(cmd(), |c| c.preview = true),
            change: KeyChange::Keep,
            budget: BudgetEffect::Keep,
            events: vec![ev(EventType::Previewed, None)],
            audit: Some(("success", false)),
            answer: Answer::Preview,
        },
        Case {
            name: "a refused preview is a refusal",
            found: live(row(only_other)),
            cmd: with(cmd(), |c| c.preview = true),
            change: KeyChange::Keep,
            budget: BudgetEffect::Charge,
            events: vec![ev(EventType::Denied, Some("service_not_allowed"))],
            audit: Some(("service_not_allowed", false)),
            answer: Answer::Denied(Denial::ServiceNotAllowed),
        },
    ];
    for case in cases {
        let (plan, answer) = plan_retrieve(&case.cmd, &case.found).unwrap();
        assert_eq!(plan.change, case.change, "{}", case.name);
        assert_eq!(plan.budget.1, case.budget, "{}", case.name);
        assert_eq!(plan.events, case.events, "{}", case.name);
        assert_eq!(audit_outcome(&plan), case.audit, "{}", case.name);
        assert_eq!(answer, case.answer, "{}", case.name);
        assert_eq!(plan.at, now(), "{}", case.name);
        let records_retrieval = matches!(
            plan.change,
            KeyChange::Count { .. } | KeyChange::Hold { .. } | KeyChange::End { .. }
        );
        assert_eq!(plan.retrieval.is_some(), records_retrieval, "{}", case.name);
        if !plan.events.is_empty() || plan.change != KeyChange::Keep {
            assert!(
                plan.key.is_some(),
                "{}: effects without their key",
                case.name
            );
        }
    }
}

#[test]
fn a_budget_slot_with_no_verdict_is_a_bug_not_a_second_slot() {
    let found = live(with(
        row(r#"{"max_retrievals":1,"has_password":true}"#),
        |r| r.password_hash = Some("h".into()),
    ));
    let c = with(cmd(), |c| {
        c.password = PasswordCheck::Unverified;
        c.budget_slot = Some(slot());
    });
    assert!(plan_retrieve(&c, &found).is_err());
}

fn held_key(retrievals: u32, max: u32, confirm_by: i64) -> HeldKey {
    HeldKey {
        key: KeyIdent::new("key_1".into(), "ten_1".into(), None),
        retrievals,
        max_retrievals: max,
        confirm_by: Some(confirm_by),
    }
}

#[test]
fn confirmation_plans() {
    let cases: Vec<(&str, Option<HeldKey>, Option<KeyChange>)> = vec![
        ("no hold", None, None),
        ("grace over", Some(held_key(1, 1, NOW_MS)), None),
        (
            "the last retrieval confirmed: the key ends",
            Some(held_key(1, 1, NOW_MS + 1)),
            Some(KeyChange::End {
                state: KeyState::Retrieved,
                retrievals: None,
                clear_hold: true,
            }),
        ),
        (
            "retrievals left: back to active",
            Some(held_key(1, 3, NOW_MS + 1)),
            Some(KeyChange::Release),
        ),
    ];
    for (name, held, change) in cases {
        let plan = plan_confirm(held, &service(), now()).unwrap();
        assert_eq!(plan.as_ref().map(|p| p.change.clone()), change, "{name}");
        if let Some(plan) = plan {
            assert_eq!(plan.events, vec![ev(EventType::Confirmed, None)], "{name}");
            assert_eq!(audit_outcome(&plan), Some(("success", false)), "{name}");
            assert_eq!(plan.budget.1, BudgetEffect::Keep, "{name}");
        }
    }
}

fn record(state: KeyState, expires_in_ms: i64, confirm_by: Option<i64>) -> KeyRecord {
    KeyRecord {
        id: "key_1".into(),
        tenant_id: "ten_1".into(),
        label: None,
        algorithm: "ed25519".into(),
        fingerprint: None,
        state,
        expires_at: Timestamp::from_millisecond(NOW_MS + expires_in_ms).unwrap(),
        confirm_by: confirm_by.map(|ms| Timestamp::from_millisecond(ms).unwrap()),
        retrievals: 0,
        max_retrievals: 1,
        notify: None,
        code_format: CodeFormat::Digits,
    }
}

fn holder_audit() -> AuditRecord {
    AuditRecord {
        at: now(),
        actor: "holder".into(),
        action: "key.revoke",
        outcome: "success".into(),
        key_id: Some("key_1".into()),
        ip: None,
        detail: None,
    }
}

#[test]
fn holder_operations_act_only_on_keys_live_at_their_time() {
    let cases = [
        ("active", Some(record(KeyState::Active, 1, None)), true),
        ("locked", Some(record(KeyState::Locked, 1, None)), true),
        (
            "expired, not swept yet",
            Some(record(KeyState::Active, 0, None)),
            false,
        ),
        (
            "held past its grace",
            Some(record(KeyState::AwaitingConfirmation, 60_000, Some(NOW_MS))),
            false,
        ),
        (
            "held within its grace",
            Some(record(
                KeyState::AwaitingConfirmation,
                60_000,
                Some(NOW_MS + 1),
            )),
            true,
        ),
        (
            "ended",
            Some(record(KeyState::Revoked, 60_000, None)),
            false,
        ),
        ("unknown", None, false),
    ];
    let a = holder_audit();
    let later = Timestamp::from_millisecond(NOW_MS + 5000).unwrap();
    for (name, rec, live) in cases {
        let revoke = plan_revoke(rec.as_ref(), &a);
        assert_eq!(revoke.is_some(), live, "revoke, {name}");
        if let Some(plan) = revoke {
            assert_eq!(
                plan.change,
                KeyChange::End {
                    state: KeyState::Revoked,
                    retrievals: None,
                    clear_hold: true
                }
            );
            assert_eq!(plan.events.len(), 1);
            assert_eq!(plan.events[0].ty, EventType::Revoked);
            assert_eq!(plan.events[0].service, None);
        }
        let expiry = plan_set_expiry(rec.as_ref(), later, &a);
        assert_eq!(expiry.is_some(), live, "set_expiry, {name}");
        if let Some(plan) = expiry {
            assert_eq!(plan.change, KeyChange::SetExpiry(later));
            assert!(plan.events.is_empty());
        }
        let (plan, outcome) = plan_recode(rec.as_ref(), b"old".to_vec(), b"new", None, &a);
        assert_eq!(
            matches!(outcome, RecodeOutcome::Done(_)),
            live,
            "recode, {name}"
        );
        if live {
            assert_eq!(
                plan.change,
                KeyChange::Recode {
                    old_code_hash: b"old".to_vec(),
                    new_code_hash: b"new".to_vec()
                }
            );
            assert_eq!(plan.events[0].ty, EventType::CodeReissued);
        } else {
            assert!(matches!(outcome, RecodeOutcome::NotLive));
            assert_eq!(plan, Plan::nothing(now()), "recode, {name}");
        }
    }
}

#[test]
fn recodes_over_the_hourly_limit_change_nothing_but_a_coalesced_row() {
    let rec = record(KeyState::Active, 60_000, None);
    let (plan, outcome) = plan_recode(Some(&rec), vec![1], b"new", Some(42), &holder_audit());
    assert!(matches!(outcome, RecodeOutcome::RateLimited(42)));
    assert_eq!(plan.change, KeyChange::Keep);
    assert!(plan.events.is_empty());
    assert_eq!(audit_outcome(&plan), Some(("rate_limited", true)));
}

#[test]
fn expiry_plans() {
    let ending = Ending {
        key: KeyIdent::new("key_1".into(), "ten_1".into(), None),
        service: svc_pair(),
    };
    let cases = [
        (
            Expiry::Lifetime,
            KeyState::Expired,
            EventType::Expired,
            None,
        ),
        (
            Expiry::Grace,
            KeyState::Retrieved,
            EventType::Unconfirmed,
            svc_pair(),
        ),
    ];
    for (why, state, ty, service) in cases {
        let plan = plan_expire(ending.clone(), why, now());
        assert_eq!(
            plan.change,
            KeyChange::End {
                state,
                retrievals: None,
                clear_hold: true
            },
            "{why:?}"
        );
        assert_eq!(
            plan.events,
            vec![EventEffect {
                ty,
                service,
                reason: None
            }],
            "{why:?}"
        );
        assert_eq!(plan.audit, AuditEffect::None, "{why:?}");
    }
}

#[test]
fn refusals_before_the_key_count_or_coalesce() {
    let a = with(holder_audit(), |a| a.outcome = "ip_not_allowed".into());
    let counted = plan_refuse(&service(), None, &a);
    assert_eq!(
        counted.budget,
        ("service:svc_1".into(), BudgetEffect::Charge)
    );
    assert_eq!(audit_outcome(&counted), Some(("ip_not_allowed", false)));
    let limited = plan_refuse(&service(), Some(3), &a);
    assert_eq!(limited.budget.1, BudgetEffect::Keep);
    assert_eq!(audit_outcome(&limited), Some(("rate_limited", true)));
}

#[test]
fn the_outcome_hands_out_the_row_it_was_planned_from() {
    let r = row(r#"{"max_retrievals":1}"#);
    let out = outcome(live(r.clone()), handed(None), None).unwrap();
    let RetrieveOutcome::Allowed(k) = out else {
        panic!("{out:?}")
    };
    assert_eq!(
        (k.key_id.as_str(), k.spki.as_deref()),
        ("key_1", Some(&[1u8, 2, 3][..]))
    );
    let out = outcome(live(r), Answer::Preview, Some("acme".into())).unwrap();
    let RetrieveOutcome::Previewed(p) = out else {
        panic!("{out:?}")
    };
    assert_eq!(p.tenant_name, "acme");
    assert_eq!(p.deposited_at.as_millisecond(), NOW_MS - 1000);
    assert!(outcome(Found::Unknown, handed(None), None).is_err());
}
