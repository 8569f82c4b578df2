//! `POST /v1/retrievals`: single use, the same 404 for every dead code, invalid codes,
//! `max_retrievals`, expiry at the moment of the request, exactly once under concurrency.

use keymaster_client::wire::PolicyInput;
use keymaster_core::key::PublicKey;

use crate::helpers::*;

#[tokio::test]
async fn full_flow_single_use_then_404() {
    let app = spawn_app().await;
    let (tenant, device, _) = app.device().await;
    let line = ssh_ed25519();
    let dep = device
        .deposit(&deposit_request(line.clone()))
        .await
        .unwrap();
    let (sid, service, _) = app.service("example-web", &["example.com"], &[]).await;

    // The code as a person types it: with dashes and spaces.
    let got = service
        .retrieve(&retrieval(&format!(" {} ", dep.code_display)))
        .await
        .unwrap();
    assert_eq!(got.key_id, dep.id);
    assert_eq!(got.kind, "public");
    assert_eq!(got.algorithm, "ed25519");
    assert_eq!(got.label.as_deref(), Some("github.com"));
    assert!(!got.proven);
    assert!(got.confirm_by.is_none());
    let original = PublicKey::parse(&line).unwrap();
    for form in [
        PublicKey::parse(got.public_key_pem.as_deref().unwrap()).unwrap(),
        PublicKey::parse(got.openssh.as_deref().unwrap()).unwrap(),
        PublicKey::from_jwk(got.jwk.as_ref().unwrap()).unwrap(),
    ] {
        assert_eq!(form, original);
    }
    assert_eq!(got.fingerprint, dep.fingerprint);
    assert_eq!(got.ssh_fingerprint, dep.ssh_fingerprint);
    assert_eq!(got.jwk_thumbprint, dep.jwk_thumbprint);

    assert_problem(
        service.retrieve(&retrieval(&dep.code)).await,
        404,
        "not_found",
    );

    // The holder sees it, with the service named, and the later use of the dead code.
    let status = app.holder(&dep).status().await.unwrap();
    assert_eq!(status.status, "retrieved");
    assert_eq!(status.retrievals, 1);
    let types: Vec<&str> = status
        .history
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(types, ["key.deposited", "key.retrieved", "code.stale_used"]);
    let ev = &status.history[1];
    assert_eq!(ev.data.tenant_id, tenant);
    assert_eq!(ev.data.service.as_ref().unwrap().id, sid);
    assert_eq!(ev.data.service.as_ref().unwrap().name, "example-web");
    assert!(ev.id.starts_with("evt_"));

    // Audit: one success and one not_found for the key, no code anywhere.
    let audit = app.admin.audit(None, None).await.unwrap().entries;
    let retr: Vec<&str> = audit
        .iter()
        .filter(|e| e.action == "key.retrieve")
        .map(|e| e.outcome.as_str())
        .collect();
    assert_eq!(retr, ["not_found", "success"]);
    let dump = serde_json::to_string(&audit).unwrap() + &serde_json::to_string(&status).unwrap();
    assert!(!dump.contains(&dep.code) && !dump.contains(&dep.code_display));
}

#[tokio::test]
async fn every_dead_code_gets_the_same_404_body() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (_, _, service_key) = app.service("svc", &[], &[]).await;
    let service = keymaster_client::ServiceClient::new(&app.base, &service_key).unwrap();
    let consumed = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    service.retrieve(&retrieval(&consumed.code)).await.unwrap();
    let revoked = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    app.holder(&revoked).revoke().await.unwrap();
    let replaced = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let fresh = app.holder(&replaced).recode().await.unwrap();
    let expired = device
        .deposit(&with_policy(
            deposit_request(ssh_ed25519()),
            PolicyInput {
                ttl_seconds: Some(1),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let unknown = keymaster_core::code::Code::generate(Default::default(), &mut rand::rngs::OsRng);

    let mut bodies = Vec::new();
    for code in [
        &consumed.code,
        &revoked.code,
        &replaced.code,
        &expired.code,
        &unknown.as_str().to_owned(),
    ] {
        let resp = app
            .post_raw(
                "/v1/retrievals",
                &service_key,
                serde_json::to_string(&retrieval(code)).unwrap(),
            )
            .await;
        bodies.push(assert_raw_problem(resp, 404, "not_found").await);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    // The new code of the replaced key works.
    service.retrieve(&retrieval(&fresh.code)).await.unwrap();
}

#[tokio::test]
async fn mistyped_codes_are_400_and_not_counted() {
    let app = spawn_app_with(|s| s.failed_retrievals_per_minute = 2).await;
    let (_, device, _) = app.device().await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let (_, service, service_key) = app.service("svc", &[], &[]).await;
    // Change one digit: the Damm check catches it.
    let mut typo: Vec<u8> = dep.code.clone().into_bytes();
    typo[3] = if typo[3] == b'9' { b'0' } else { typo[3] + 1 };
    let typo = String::from_utf8(typo).unwrap();
    for bad in [typo.as_str(), "1234", "abcd-efgh-ijkl-mnop", ""] {
        for _ in 0..3 {
            let resp = app
                .post_raw(
                    "/v1/retrievals",
                    &service_key,
                    serde_json::to_string(&retrieval(bad)).unwrap(),
                )
                .await;
            assert_raw_problem(resp, 400, "invalid_code").await;
        }
    }
    // Not one counted against the budget of 2: the real code still works.
    service.retrieve(&retrieval(&dep.code)).await.unwrap();
}

#[tokio::test]
async fn max_retrievals_counts_exactly() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let dep = device
        .deposit(&with_policy(
            deposit_request(ssh_ed25519()),
            PolicyInput {
                max_retrievals: Some(3),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let (_, service, _) = app.service("svc", &[], &[]).await;
    for i in 1..=3 {
        service.retrieve(&retrieval(&dep.code)).await.unwrap();
        let st = app.holder(&dep).status().await.unwrap();
        assert_eq!(st.retrievals, i);
        assert_eq!(st.max_retrievals, 3);
    }
    assert_problem(
        service.retrieve(&retrieval(&dep.code)).await,
        404,
        "not_found",
    );
    assert_eq!(app.holder(&dep).status().await.unwrap().status, "retrieved");
}

#[tokio::test]
async fn single_use_code_is_handed_out_exactly_once_under_concurrency() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let (_, service, _) = app.service("svc", &[], &[]).await;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let service = service.clone();
        let code = dep.code.clone();
        tasks.push(tokio::spawn(async move {
            service.retrieve(&retrieval(&code)).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert!(matches!(e.status(), Some(404) | Some(429)), "{e:?}"),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn service_budget_of_failures_gives_429_with_retry_after() {
    let app = spawn_app_with(|s| s.failed_retrievals_per_minute = 3).await;
    let (_, device, _) = app.device().await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let (_, service, service_key) = app.service("svc", &[], &[]).await;
    for _ in 0..3 {
        let unknown =
            keymaster_core::code::Code::generate(Default::default(), &mut rand::rngs::OsRng);
        assert_problem(
            service.retrieve(&retrieval(unknown.as_str())).await,
            404,
            "not_found",
        );
    }
    // Spent: even the right code is refused now.
    let resp = app
        .post_raw(
            "/v1/retrievals",
            &service_key,
            serde_json::to_string(&retrieval(&dep.code)).unwrap(),
        )
        .await;
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_raw_problem(resp, 429, "rate_limited").await;
    // Another service has its own budget.
    let (_, other, _) = app.service("other", &[], &[]).await;
    other.retrieve(&retrieval(&dep.code)).await.unwrap();
}

#[tokio::test]
async fn service_enrolment_cidrs_apply_before_the_key() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let (_, outside, _) = app.service("far", &[], &["203.0.113.0/24"]).await;
    assert_problem(
        outside.retrieve(&retrieval(&dep.code)).await,
        403,
        "ip_not_allowed",
    );
    // Nothing was consumed.
    let (_, inside, _) = app.service("near", &[], &["127.0.0.0/8", "::1/128"]).await;
    inside.retrieve(&retrieval(&dep.code)).await.unwrap();
}

#[tokio::test]
async fn sweeper_reports_expiry_without_anyone_touching_the_key() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let dep = device
        .deposit(&with_policy(
            deposit_request(ssh_ed25519()),
            PolicyInput {
                ttl_seconds: Some(1),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let holder = app.holder(&dep);
    eventually(|| {
        let holder = holder.clone();
        async move {
            let st = holder.status().await.unwrap();
            st.history.iter().any(|e| e.event_type == "key.expired")
        }
    })
    .await;
    let st = holder.status().await.unwrap();
    assert_eq!(st.status, "expired");
    assert_eq!(
        st.history
            .iter()
            .filter(|e| e.event_type == "key.expired")
            .count(),
        1
    );
}

/// Three hundred keys expire together, one of them held for confirmation past its grace: each
/// is ended once, with at most one `key.expired`, and its code no longer opens it.
#[tokio::test]
async fn sweeper_ends_a_crowd_of_keys_expiring_together_once_each() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (_, service, _) = app.service("svc", &[], &[]).await;
    let short = |confirm: bool| {
        with_policy(
            deposit_request(ssh_ed25519()),
            PolicyInput {
                ttl_seconds: Some(1),
                require_confirmation: Some(confirm),
                confirm_grace_seconds: confirm.then_some(1),
                ..Default::default()
            },
        )
    };
    let held = device.deposit(&short(true)).await.unwrap();
    service.retrieve(&retrieval(&held.code)).await.unwrap();
    let mut deposits = vec![held];
    for _ in 0..300 {
        deposits.push(device.deposit(&short(false)).await.unwrap());
    }
    for dep in &deposits {
        let holder = app.holder(dep);
        eventually(|| {
            let holder = holder.clone();
            async move { holder.status().await.unwrap().status != "active" }
        })
        .await;
    }
    for dep in &deposits {
        let st = app.holder(dep).status().await.unwrap();
        let expired = st
            .history
            .iter()
            .filter(|e| e.event_type == "key.expired")
            .count();
        assert!(expired <= 1, "{}: {expired} key.expired", dep.id);
        assert!(
            st.status == "expired" || (st.status == "retrieved" && dep.id == deposits[0].id),
            "{} is {}",
            dep.id,
            st.status
        );
    }
    assert_problem(
        service.retrieve(&retrieval(&deposits[1].code)).await,
        404,
        "not_found",
    );
}
