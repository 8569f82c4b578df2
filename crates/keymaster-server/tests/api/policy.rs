//! Issue 3: every policy rule over HTTP, allowed and denied. Each denial is answered with the
//! rule's code, emits `key.denied` with that code as `reason`, is audited with that outcome,
//! and consumes nothing: an allowed request afterwards still gets the key.

use futures::StreamExt;
use keymaster_client::wire::{
    DepositResponse, GeoInput, PolicyInput, RetrievalContext, RetrievalRequest, RetrievalResponse,
    TimeWindowInput,
};
use keymaster_client::DeviceClient;

use crate::helpers::*;

// ---- helpers of this module ----

async fn deposit_with(device: &DeviceClient, policy: PolicyInput) -> DepositResponse {
    device
        .deposit(&with_policy(deposit_request(ssh_ed25519()), policy))
        .await
        .unwrap()
}

fn with_password(code: &str, password: &str) -> RetrievalRequest {
    RetrievalRequest {
        password: Some(password.into()),
        ..retrieval(code)
    }
}

fn with_context(code: &str, context: RetrievalContext) -> RetrievalRequest {
    RetrievalRequest {
        context: Some(context),
        ..retrieval(code)
    }
}

fn at(latitude: f64, longitude: f64) -> RetrievalContext {
    RetrievalContext {
        latitude: Some(latitude),
        longitude: Some(longitude),
        ..RetrievalContext::default()
    }
}

fn in_country(country: &str) -> RetrievalContext {
    RetrievalContext {
        country: Some(country.into()),
        ..RetrievalContext::default()
    }
}

/// Asserts a `403 code` refusal, the `key.denied` event with `reason = code` in the holder's
/// history, and the newest audit row of a retrieval of this key with `outcome = code`.
async fn assert_denied(
    app: &TestApp,
    dep: &DepositResponse,
    r: Result<RetrievalResponse, keymaster_client::Error>,
    code: &str,
) {
    assert_problem(r, 403, code);
    let st = app.holder(dep).status().await.unwrap();
    let denied = st
        .history
        .iter()
        .rev()
        .find(|e| e.event_type == "key.denied")
        .expect("a key.denied event");
    assert_eq!(
        denied.data.reason.as_deref(),
        Some(code),
        "{:?}",
        st.history
    );
    assert!(denied.data.service.is_some());
    assert_eq!(st.retrievals, 0, "a denial counts no retrieval");
    let audit = app.admin.audit(None, None).await.unwrap().entries;
    let newest = audit
        .iter()
        .find(|e| e.action == "key.retrieve" && e.key_id.as_deref() == Some(dep.id.as_str()))
        .expect("the denial is audited");
    assert_eq!(newest.outcome, code);
}

/// Asserts an allowed retrieval of `dep`.
async fn assert_allowed(
    dep: &DepositResponse,
    r: Result<RetrievalResponse, keymaster_client::Error>,
) -> RetrievalResponse {
    let got = r.expect("allowed");
    assert_eq!(got.key_id, dep.id);
    got
}

/// A raw retrieval with an optional `X-Forwarded-For`.
async fn retrieve_forwarded(
    app: &TestApp,
    service_key: &str,
    req: &RetrievalRequest,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut b = app
        .http
        .post(format!("{}/v1/retrievals", app.base))
        .bearer_auth(service_key)
        .json(req);
    if let Some(x) = forwarded_for {
        b = b.header("x-forwarded-for", x);
    }
    b.send().await.unwrap()
}

fn hh_mm(minutes_of_day: i64) -> String {
    let m = minutes_of_day.rem_euclid(24 * 60);
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// Now, in minutes since midnight in Asia/Tokyo.
fn tokyo_minutes_now() -> i64 {
    let now = jiff::Timestamp::now().in_tz("Asia/Tokyo").unwrap();
    i64::from(now.hour()) * 60 + i64::from(now.minute())
}

fn tokyo_window(start: i64, end: i64) -> TimeWindowInput {
    TimeWindowInput {
        timezone: "Asia/Tokyo".into(),
        days: None,
        start: hh_mm(start),
        end: hh_mm(end),
    }
}

// ---- password ----

#[tokio::test]
async fn password_required_incorrect_then_correct() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let dep = deposit_with(
        &device,
        PolicyInput {
            password: Some("correct horse".into()),
            ..Default::default()
        },
    )
    .await;
    let (_, service, _) = app.service("svc", &[], &[]).await;

    let r = service.retrieve(&retrieval(&dep.code)).await;
    assert_denied(&app, &dep, r, "password_required").await;
    let r = service.retrieve(&with_password(&dep.code, "wrong")).await;
    assert_denied(&app, &dep, r, "password_incorrect").await;
    assert_eq!(app.holder(&dep).status().await.unwrap().status, "active");

    let r = service
        .retrieve(&with_password(&dep.code, "correct horse"))
        .await;
    assert_allowed(&dep, r).await;
    assert_eq!(app.holder(&dep).status().await.unwrap().status, "retrieved");
}

#[tokio::test]
async fn five_wrong_passwords_lock_the_key() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let dep = deposit_with(
        &device,
        PolicyInput {
            password: Some("correct horse".into()),
            ..Default::default()
        },
    )
    .await;
    let (_, service, _) = app.service("svc", &[], &[]).await;

    for i in 1..=4 {
        let r = service
            .retrieve(&with_password(&dep.code, &format!("wrong {i}")))
            .await;
        assert_denied(&app, &dep, r, "password_incorrect").await;
        assert_eq!(app.holder(&dep).status().await.unwrap().status, "active");
    }
    // The fifth wrong try is the one that locks: it is answered key_locked.
    let r = service.retrieve(&with_password(&dep.code, "wrong 5")).await;
    assert_denied(&app, &dep, r, "key_locked").await;
    let st = app.holder(&dep).status().await.unwrap();
    assert_eq!(st.status, "locked");
    assert_eq!(
        st.history
            .iter()
            .filter(|e| e.event_type == "key.locked")
            .count(),
        1
    );

    // Locked: even the right password is refused, and so is no password at all.
    let r = service
        .retrieve(&with_password(&dep.code, "correct horse"))
        .await;
    assert_denied(&app, &dep, r, "key_locked").await;
    let r = service.retrieve(&retrieval(&dep.code)).await;
    assert_denied(&app, &dep, r, "key_locked").await;
    let st = app.holder(&dep).status().await.unwrap();
    assert_eq!(st.status, "locked");
    assert_eq!(st.retrievals, 0);
}

/// `MAX_PASSWORD_FAILURES` counts wrong passwords in a row (`KeyFacts::failed_password_attempts`
/// is "since the last correct one"): a right password in between starts the count again.
#[tokio::test]
async fn a_right_password_resets_the_count_of_wrong_ones() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let dep = deposit_with(
        &device,
        PolicyInput {
            password: Some("correct horse".into()),
            max_retrievals: Some(2),
            ..Default::default()
        },
    )
    .await;
    let (_, service, _) = app.service("svc", &[], &[]).await;
    for i in 1..=4 {
        let r = service
            .retrieve(&with_password(&dep.code, &format!("wrong {i}")))
            .await;
        assert_problem(r, 403, "password_incorrect");
    }
    service
        .retrieve(&with_password(&dep.code, "correct horse"))
        .await
        .unwrap();
    let r = service.retrieve(&with_password(&dep.code, "wrong 5")).await;
    assert_problem(r, 403, "password_incorrect");
    assert_eq!(app.holder(&dep).status().await.unwrap().status, "active");
    service
        .retrieve(&with_password(&dep.code, "correct horse"))
        .await
        .unwrap();
}

// ---- services, domains, fetcher_cidrs, trusted proxies ----

#[tokio::test]
async fn services_list_allows_only_listed_services() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (allowed_id, allowed, _) = app.service("allowed", &[], &[]).await;
    let (_, other, _) = app.service("other", &[], &[]).await;
    let dep = deposit_with(
        &device,
        PolicyInput {
            services: Some(vec![allowed_id]),
            ..Default::default()
        },
    )
    .await;
    let r = other.retrieve(&retrieval(&dep.code)).await;
    assert_denied(&app, &dep, r, "service_not_allowed").await;
    let r = allowed.retrieve(&retrieval(&dep.code)).await;
    assert_allowed(&dep, r).await;
}

#[tokio::test]
async fn domains_allow_subdomains_not_lookalikes() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (_, sub, _) = app.service("sub", &["a.example.com"], &[]).await;
    let (_, evil, _) = app.service("evil", &["evilexample.com"], &[]).await;
    let (_, none, _) = app.service("none", &[], &[]).await;
    let dep = deposit_with(
        &device,
        PolicyInput {
            domains: Some(vec!["example.com".into()]),
            max_retrievals: Some(2),
            ..Default::default()
        },
    )
    .await;
    let r = evil.retrieve(&retrieval(&dep.code)).await;
    assert_denied(&app, &dep, r, "domain_not_allowed").await;
    let r = none.retrieve(&retrieval(&dep.code)).await;
    assert_denied(&app, &dep, r, "domain_not_allowed").await;
    let r = sub.retrieve(&retrieval(&dep.code)).await;
    assert_allowed(&dep, r).await;

    // The domain itself is allowed too.
    let (_, exact, _) = app.service("exact", &["example.com"], &[]).await;
    let r = exact.retrieve(&retrieval(&dep.code)).await;
    assert_allowed(&dep, r).await;
}

#[tokio::test]
async fn fetcher_cidrs_judge_the_source_address() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (_, service, _) = app.service("svc", &[], &[]).await;
    let far = deposit_with(
        &device,
        PolicyInput {
            fetcher_cidrs: Some(vec!["10.0.0.0/8".into()]),
            ..Default::default()
        },
    )
    .await;
    let r = service.retrieve(&retrieval(&far.code)).await;
    assert_denied(&app, &far, r, "ip_not_allowed").await;
    assert_eq!(app.holder(&far).status().await.unwrap().status, "active");

    let near = deposit_with(
        &device,
        PolicyInput {
            fetcher_cidrs: Some(vec!["10.0.0.0/8".into(), "127.0.0.0/8".into()]),
            ..Default::default()
        },
    )
    .await;
    let r = service.retrieve(&retrieval(&near.code)).await;
    assert_allowed(&near, r).await;
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let app = spawn_app_with(|s| s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let (_, device, _) = app.device().await;
    let (_, service, service_key) = app.service("svc", &[], &[]).await;
    let dep = deposit_with(
        &device,
        PolicyInput {
            fetcher_cidrs: Some(vec!["10.0.0.0/8".into()]),
            ..Default::default()
        },
    )
    .await;
    // Straight from 127.0.0.1 (the proxy itself): outside 10/8.
    let r = service.retrieve(&retrieval(&dep.code)).await;
    assert_denied(&app, &dep, r, "ip_not_allowed").await;
    // Forwarded from 10.1.2.3 by the trusted proxy: judged as 10.1.2.3.
    let resp =
        retrieve_forwarded(&app, &service_key, &retrieval(&dep.code), Some("10.1.2.3")).await;
    assert_eq!(resp.status().as_u16(), 200);
    let got: RetrievalResponse = resp.json().await.unwrap();
    assert_eq!(got.key_id, dep.id);
    let audit = app.admin.audit(None, None).await.unwrap().entries;
    let ok = audit
        .iter()
        .find(|e| e.action == "key.retrieve" && e.outcome == "success")
        .unwrap();
    assert_eq!(ok.ip.as_deref(), Some("10.1.2.3"));

    // A key limited to loopback is refused to the forwarded client.
    let local = deposit_with(
        &device,
        PolicyInput {
            fetcher_cidrs: Some(vec!["127.0.0.0/8".into()]),
            ..Default::default()
        },
    )
    .await;
    let resp = retrieve_forwarded(
        &app,
        &service_key,
        &retrieval(&local.code),
        Some("10.1.2.3"),
    )
    .await;
    assert_raw_problem(resp, 403, "ip_not_allowed").await;
}

#[tokio::test]
async fn forwarded_for_is_ignored_without_trusted_proxies() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (_, _, service_key) = app.service("svc", &[], &[]).await;
    let dep = deposit_with(
        &device,
        PolicyInput {
            fetcher_cidrs: Some(vec!["10.0.0.0/8".into()]),
            ..Default::default()
        },
    )
    .await;
    let resp =
        retrieve_forwarded(&app, &service_key, &retrieval(&dep.code), Some("10.1.2.3")).await;
    assert_raw_problem(resp, 403, "ip_not_allowed").await;

    // The peer (127.0.0.1) is what counts.
    let local = deposit_with(
        &device,
        PolicyInput {
            fetcher_cidrs: Some(vec!["127.0.0.0/8".into()]),
            ..Default::default()
        },
    )
    .await;
    let resp = retrieve_forwarded(
        &app,
        &service_key,
        &retrieval(&local.code),
        Some("10.1.2.3"),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
}

// ---- time_window ----

#[tokio::test]
async fn time_window_allows_inside_and_refuses_outside() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (_, service, _) = app.service("svc", &[], &[]).await;
    let now = tokyo_minutes_now();
    // Two hours from now to three hours from now: now is outside, whatever the hour (the
    // window may run overnight; both forms exclude now).
    let closed = deposit_with(
        &device,
        PolicyInput {
            time_window: Some(tokyo_window(now + 120, now + 180)),
            ..Default::default()
        },
    )
    .await;
    let r = service.retrieve(&retrieval(&closed.code)).await;
    assert_denied(&app, &closed, r, "outside_time_window").await;

    // An hour either side of now: contains now, whatever the hour (near midnight it is the
    // overnight form, e.g. 23:30–01:30).
    let open = deposit_with(
        &device,
        PolicyInput {
            time_window: Some(tokyo_window(now - 60, now + 60)),
            ..Default::default()
        },
    )
    .await;
    let r = service.retrieve(&retrieval(&open.code)).await;
    assert_allowed(&open, r).await;

    // Every day named: still open.
    let mut window = tokyo_window(now - 60, now + 60);
    window.days = Some(
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .map(String::from)
            .to_vec(),
    );
    let every_day = deposit_with(
        &device,
        PolicyInput {
            time_window: Some(window),
            ..Default::default()
        },
    )
    .await;
    let r = service.retrieve(&retrieval(&every_day.code)).await;
    assert_allowed(&every_day, r).await;
}

// ---- geo ----

#[tokio::test]
async fn geo_radius_inside_outside_and_missing_context() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (_, service, _) = app.service("svc", &[], &[]).await;
    let dep = deposit_with(
        &device,
        PolicyInput {
            geo: Some(GeoInput {
                latitude: Some(42.28),
                longitude: Some(-83.74),
                radius_km: Some(50.0),
                countries: None,
            }),
            ..Default::default()
        },
    )
    .await;
    let r = service.retrieve(&retrieval(&dep.code)).await;
    assert_denied(&app, &dep, r, "geo_context_required").await;
    let r = service
        .retrieve(&with_context(&dep.code, in_country("US")))
        .await;
    assert_denied(&app, &dep, r, "geo_context_required").await;
    // Berlin is far from Ann Arbor.
    let r = service
        .retrieve(&with_context(&dep.code, at(52.52, 13.40)))
        .await;
    assert_denied(&app, &dep, r, "geo_denied").await;
    let r = service
        .retrieve(&with_context(&dep.code, at(42.30, -83.70)))
        .await;
    assert_allowed(&dep, r).await;
}

#[tokio::test]
async fn geo_countries() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (_, service, _) = app.service("svc", &[], &[]).await;
    let dep = deposit_with(
        &device,
        PolicyInput {
            geo: Some(GeoInput {
                countries: Some(vec!["DE".into()]),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let r = service.retrieve(&retrieval(&dep.code)).await;
    assert_denied(&app, &dep, r, "geo_context_required").await;
    let r = service
        .retrieve(&with_context(&dep.code, in_country("US")))
        .await;
    assert_denied(&app, &dep, r, "geo_denied").await;
    let r = service
        .retrieve(&with_context(&dep.code, in_country("DE")))
        .await;
    assert_allowed(&dep, r).await;
}

// ---- require_confirmation ----

#[tokio::test]
async fn confirmation_holds_the_key_for_the_same_service() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (_, service, _) = app.service("svc", &[], &[]).await;
    let (_, other, _) = app.service("other", &[], &[]).await;
    let dep = deposit_with(
        &device,
        PolicyInput {
            require_confirmation: Some(true),
            ..Default::default()
        },
    )
    .await;
    let first = service.retrieve(&retrieval(&dep.code)).await.unwrap();
    let by = first.confirm_by.expect("confirm_by");
    let now = jiff::Timestamp::now();
    assert!(by > now && by <= now + jiff::SignedDuration::from_secs(301));
    assert_eq!(
        app.holder(&dep).status().await.unwrap().status,
        "awaiting_confirmation"
    );

    // The same service again: the same retrieval.
    let again = service.retrieve(&retrieval(&dep.code)).await.unwrap();
    assert_eq!(again.retrieval_id, first.retrieval_id);
    assert_eq!(again.confirm_by, first.confirm_by);
    assert_eq!(again.fingerprint, dep.fingerprint);
    // Another service: gone, as far as it can tell.
    assert_problem(
        other.retrieve(&retrieval(&dep.code)).await,
        404,
        "not_found",
    );
    // Another service cannot confirm it.
    assert_problem(other.confirm(&first.retrieval_id).await, 404, "not_found");
    assert_eq!(app.holder(&dep).status().await.unwrap().retrievals, 1);

    service.confirm(&first.retrieval_id).await.unwrap();
    assert_problem(
        service.retrieve(&retrieval(&dep.code)).await,
        404,
        "not_found",
    );
    assert_problem(service.confirm(&first.retrieval_id).await, 404, "not_found");
    let st = app.holder(&dep).status().await.unwrap();
    assert_eq!(st.status, "retrieved");
    assert_eq!(st.retrievals, 1);
    let types: Vec<&str> = st.history.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "key.confirmed" || **t == "key.retrieved")
            .copied()
            .collect::<Vec<_>>(),
        ["key.retrieved", "key.confirmed"],
        "{types:?}"
    );
}

#[tokio::test]
async fn unconfirmed_key_is_gone_after_the_grace_and_reported_once() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (sid, service, _) = app.service("svc", &[], &[]).await;
    let dep = deposit_with(
        &device,
        PolicyInput {
            require_confirmation: Some(true),
            confirm_grace_seconds: Some(1),
            ..Default::default()
        },
    )
    .await;
    let first = service.retrieve(&retrieval(&dep.code)).await.unwrap();
    assert!(first.confirm_by.is_some());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_problem(
        service.retrieve(&retrieval(&dep.code)).await,
        404,
        "not_found",
    );
    assert_problem(service.confirm(&first.retrieval_id).await, 404, "not_found");
    let holder = app.holder(&dep);
    // The holder's stream follows the key to its end: the sweeper reports the ended grace.
    let follower = tokio::spawn({
        let holder = holder.clone();
        async move {
            let events: Vec<_> = holder.events(None).collect().await;
            events.into_iter().map(|e| e.unwrap()).collect::<Vec<_>>()
        }
    });
    eventually(|| {
        let holder = holder.clone();
        async move { holder.status().await.unwrap().status == "retrieved" }
    })
    .await;
    let streamed = tokio::time::timeout(std::time::Duration::from_secs(5), follower)
        .await
        .expect("the stream ends after the key is gone")
        .unwrap();
    let unconfirmed = streamed
        .iter()
        .find(|e| e.event_type == "key.unconfirmed")
        .unwrap_or_else(|| panic!("key.unconfirmed in the stream: {streamed:?}"));
    assert_eq!(unconfirmed.data.service.as_ref().unwrap().id, sid);
    // Several more sweeps: reported once.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let st = holder.status().await.unwrap();
    assert!(!st.history.iter().any(|e| e.event_type == "key.confirmed"));
    let reported = st
        .history
        .iter()
        .filter(|e| e.event_type == "key.unconfirmed")
        .count();
    assert_eq!(reported, 1, "{:?}", st.history);
}

// ---- invalid policies at deposit ----

async fn assert_invalid_policy(device: &DeviceClient, policy: PolicyInput, field: &str) {
    let err = device
        .deposit(&with_policy(deposit_request(ssh_ed25519()), policy))
        .await
        .expect_err("invalid policy refused");
    let keymaster_client::Error::Api {
        status, problem, ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!(status, 400);
    assert_eq!(problem.code, "invalid_request");
    let detail = problem.detail.unwrap_or_default();
    assert!(detail.contains(field), "{detail:?} should name {field}");
}

#[tokio::test]
async fn invalid_policies_are_400_naming_the_field() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let window = |zone: &str, start: &str| TimeWindowInput {
        timezone: zone.into(),
        days: None,
        start: start.into(),
        end: "18:00".into(),
    };
    assert_invalid_policy(
        &device,
        PolicyInput {
            time_window: Some(window("Mars/Olympus_Mons", "08:00")),
            ..Default::default()
        },
        "policy.time_window.timezone",
    )
    .await;
    assert_invalid_policy(
        &device,
        PolicyInput {
            time_window: Some(window("Europe/Berlin", "8:00")),
            ..Default::default()
        },
        "policy.time_window.start",
    )
    .await;
    assert_invalid_policy(
        &device,
        PolicyInput {
            fetcher_cidrs: Some(vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()]),
            ..Default::default()
        },
        "policy.fetcher_cidrs[1]",
    )
    .await;
    for radius in [0.0, -5.0] {
        assert_invalid_policy(
            &device,
            PolicyInput {
                geo: Some(GeoInput {
                    latitude: Some(42.28),
                    longitude: Some(-83.74),
                    radius_km: Some(radius),
                    countries: None,
                }),
                ..Default::default()
            },
            "policy.geo.radius_km",
        )
        .await;
    }
    let (sid, _, _) = app.service("real", &[], &[]).await;
    assert_invalid_policy(
        &device,
        PolicyInput {
            services: Some(vec![sid, "svc_does_not_exist".into()]),
            ..Default::default()
        },
        "policy.services",
    )
    .await;
    // Nothing was deposited.
    let audit = app.admin.audit(None, None).await.unwrap().entries;
    assert!(!audit
        .iter()
        .any(|e| e.action == "key.deposit" && e.outcome == "success"));
}
