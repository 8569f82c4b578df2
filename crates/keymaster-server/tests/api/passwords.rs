//! A policy password costs an argon2id run to check: it is checked only after the service's
//! failure budget has a slot for the attempt, and only for a key that every other rule would
//! hand to this service. Counted through `keymaster_password_verifications_total`, which each
//! server counts for itself (the suite runs many servers in one process).

use keymaster_client::wire::{DepositResponse, PolicyInput, RetrievalRequest};
use keymaster_client::DeviceClient;

use crate::helpers::*;

const PASSWORD: &str = "correct horse";

/// The server's count of argon2 verifications of retrieval passwords.
async fn verifications(app: &TestApp) -> u64 {
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("keymaster_password_verifications_total "))
        .unwrap_or_else(|| panic!("no verification count in {text}"))
        .trim()
        .parse()
        .unwrap()
}

async fn deposit_with_password(device: &DeviceClient, policy: PolicyInput) -> DepositResponse {
    device
        .deposit(&with_policy(
            deposit_request(ssh_ed25519()),
            PolicyInput {
                password: Some(PASSWORD.into()),
                ..policy
            },
        ))
        .await
        .unwrap()
}

fn with_password(code: &str, password: &str) -> RetrievalRequest {
    RetrievalRequest {
        password: Some(password.into()),
        ..retrieval(code)
    }
}

/// 60 wrong passwords at once against a budget of 20 (spread over keys so that no key locks):
/// at most 20 argon2 runs, the rest `429` without one. A right password gives its slot back.
#[tokio::test]
async fn wrong_passwords_at_once_verify_no_more_than_the_failure_budget() {
    let app = spawn_app_with(|s| s.failed_retrievals_per_minute = 20).await;
    let (_, device, _) = app.device().await;
    let (_, service, _) = app.service("svc", &[], &[]).await;
    let mut keys = Vec::new();
    for _ in 0..15 {
        keys.push(deposit_with_password(&device, PolicyInput::default()).await);
    }
    let before = verifications(&app).await;

    let mut tasks = Vec::new();
    for i in 0..60 {
        let service = service.clone();
        let code = keys[i % keys.len()].code.clone();
        tasks.push(tokio::spawn(async move {
            service
                .retrieve(&with_password(&code, &format!("wrong {i}")))
                .await
        }));
    }
    let (mut incorrect, mut limited) = (0, 0);
    for t in tasks {
        let err = t.await.unwrap().expect_err("a wrong password");
        match (err.status(), err.code()) {
            (Some(403), Some("password_incorrect")) => incorrect += 1,
            (Some(429), Some("rate_limited")) => limited += 1,
            other => panic!("unexpected answer {other:?}: {err:?}"),
        }
    }
    let ran = verifications(&app).await - before;
    assert_eq!(incorrect + limited, 60);
    assert!(
        (1..=20).contains(&incorrect),
        "{incorrect} password_incorrect"
    );
    assert!(
        ran <= 20,
        "{ran} argon2 verifications against a budget of 20"
    );
    assert_eq!(
        ran, incorrect as u64,
        "one verification per answered password"
    );

    // The budget is spent: the right password is refused too, without an argon2 run.
    assert_problem(
        service
            .retrieve(&with_password(&keys[0].code, PASSWORD))
            .await,
        429,
        "rate_limited",
    );
    assert_eq!(verifications(&app).await - before, ran);
}

/// A slot taken for a password that turns out right is given back: with a budget of one,
/// a successful password retrieval leaves the one failure for the next wrong code.
#[tokio::test]
async fn a_right_password_gives_its_budget_slot_back() {
    let app = spawn_app_with(|s| s.failed_retrievals_per_minute = 1).await;
    let (_, device, _) = app.device().await;
    let (_, service, _) = app.service("svc", &[], &[]).await;
    let a = deposit_with_password(
        &device,
        PolicyInput {
            max_retrievals: Some(2),
            ..Default::default()
        },
    )
    .await;
    for _ in 0..2 {
        service
            .retrieve(&with_password(&a.code, PASSWORD))
            .await
            .unwrap();
    }
    let unknown = keymaster_core::code::Code::generate(Default::default(), &mut rand::rngs::OsRng);
    assert_problem(
        service.retrieve(&retrieval(unknown.as_str())).await,
        404,
        "not_found",
    );
    assert_problem(
        service.retrieve(&retrieval(unknown.as_str())).await,
        429,
        "rate_limited",
    );
}

/// No argon2 run for a key that would not be handed to this service anyway: held for another
/// service (`404`, like an unknown code), locked, refused by another rule, or answered again
/// within the same service's confirmation grace.
#[tokio::test]
async fn passwords_are_not_verified_for_keys_the_policy_refuses_anyway() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (holder_sid, holder, _) = app.service("holder", &[], &[]).await;
    let (_, other, _) = app.service("other", &[], &[]).await;

    // Held for `holder`: for `other` it is the same 404 as an unknown code.
    let held = deposit_with_password(
        &device,
        PolicyInput {
            require_confirmation: Some(true),
            ..Default::default()
        },
    )
    .await;
    let first = holder
        .retrieve(&with_password(&held.code, PASSWORD))
        .await
        .unwrap();
    let before = verifications(&app).await;
    for password in [PASSWORD, "wrong"] {
        assert_problem(
            other.retrieve(&with_password(&held.code, password)).await,
            404,
            "not_found",
        );
    }
    let unknown = keymaster_core::code::Code::generate(Default::default(), &mut rand::rngs::OsRng);
    assert_problem(
        other
            .retrieve(&with_password(unknown.as_str(), "wrong"))
            .await,
        404,
        "not_found",
    );
    // The holding service asks again within its grace: the same retrieval, no new check.
    let again = holder
        .retrieve(&with_password(&held.code, PASSWORD))
        .await
        .unwrap();
    assert_eq!(again.retrieval_id, first.retrieval_id);
    assert_eq!(verifications(&app).await, before);

    // Refused by the `services` rule before the password is looked at.
    let only_holder = deposit_with_password(
        &device,
        PolicyInput {
            services: Some(vec![holder_sid]),
            ..Default::default()
        },
    )
    .await;
    assert_problem(
        other
            .retrieve(&with_password(&only_holder.code, PASSWORD))
            .await,
        403,
        "service_not_allowed",
    );
    assert_eq!(verifications(&app).await, before);

    // Locked after five wrong passwords (five runs); later tries run none.
    let locked = deposit_with_password(&device, PolicyInput::default()).await;
    for i in 0..5 {
        let r = other
            .retrieve(&with_password(&locked.code, &format!("wrong {i}")))
            .await;
        assert!(r.is_err());
    }
    assert_eq!(verifications(&app).await, before + 5);
    for password in [PASSWORD, "wrong"] {
        assert_problem(
            other.retrieve(&with_password(&locked.code, password)).await,
            403,
            "key_locked",
        );
    }
    assert_eq!(verifications(&app).await, before + 5);
}
