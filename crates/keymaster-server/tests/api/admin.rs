//! The operator's endpoints and the audit log.

use keymaster_client::wire::{CreateServiceRequest, CreateTenantRequest, PolicyInput};
use keymaster_client::AdminClient;

use crate::helpers::*;

#[tokio::test]
async fn tenant_app_key_and_service_are_created_and_audited() {
    let app = spawn_app().await;
    let t = app
        .admin
        .create_tenant(&CreateTenantRequest {
            name: "acme".into(),
            webhook_url: None,
        })
        .await
        .unwrap();
    assert!(t.webhook_secret.starts_with("whsec_"));
    let k = app.admin.create_app_key(&t.id).await.unwrap();
    assert!(k.token.starts_with("kma_"));
    assert!(k.token.len() >= 4 + 22, "at least 128 bits");
    let s = app
        .admin
        .create_service(&CreateServiceRequest {
            name: "example-web".into(),
            domains: vec!["Example.COM".into()],
            allowed_cidrs: vec!["127.0.0.1".into()],
        })
        .await
        .unwrap();
    assert!(s.token.starts_with("kms_"));

    let audit = app.admin.audit(None, None).await.unwrap().entries;
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["service.create", "app_key.create", "tenant.create"]
    );
    assert!(audit
        .iter()
        .all(|e| e.actor == "admin" && e.outcome == "success"));
    // Paging: newest first, `before` continues.
    let page = app.admin.audit(Some(1), None).await.unwrap().entries;
    assert_eq!(page.len(), 1);
    let next = app
        .admin
        .audit(Some(10), Some(page[0].id))
        .await
        .unwrap()
        .entries;
    assert_eq!(next.len(), 2);
    // No token ever reaches the audit log.
    let dump = serde_json::to_string(&audit).unwrap();
    assert!(
        !dump.contains(&k.token) && !dump.contains(&s.token) && !dump.contains(&t.webhook_secret)
    );
}

#[tokio::test]
async fn bad_credentials_are_refused() {
    let app = spawn_app().await;
    let wrong = AdminClient::new(&app.base, "not-the-admin-token-at-all").unwrap();
    assert_problem(wrong.audit(None, None).await, 401, "unauthorized");
    let resp = app
        .http
        .get(format!("{}/v1/admin/audit", app.base))
        .send()
        .await
        .unwrap();
    assert_raw_problem(resp, 401, "unauthorized").await;
    // A valid app key is the wrong kind of credential here.
    let (_, _, app_key) = app.device().await;
    let as_app = AdminClient::new(&app.base, &app_key).unwrap();
    assert_problem(as_app.audit(None, None).await, 403, "forbidden");
}

#[tokio::test]
async fn invalid_admin_input_is_refused_and_audited() {
    let app = spawn_app().await;
    assert_problem(
        app.admin
            .create_tenant(&CreateTenantRequest {
                name: " ".into(),
                webhook_url: None,
            })
            .await,
        400,
        "invalid_request",
    );
    assert_problem(
        app.admin
            .create_service(&CreateServiceRequest {
                name: "x".into(),
                domains: vec![],
                allowed_cidrs: vec!["10.0.0.0/33".into()],
            })
            .await,
        400,
        "invalid_request",
    );
    assert_problem(app.admin.create_app_key("ten_nope").await, 404, "not_found");
    assert_problem(app.admin.delete_app_key("ak_nope").await, 404, "not_found");
    assert_problem(app.admin.delete_service("svc_nope").await, 404, "not_found");
    assert_problem(app.admin.audit(Some(0), None).await, 400, "invalid_request");
    assert_problem(
        app.admin.audit(Some(1001), None).await,
        400,
        "invalid_request",
    );
    let audit = app.admin.audit(None, None).await.unwrap().entries;
    let outcomes: Vec<&str> = audit.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        [
            "not_found",
            "not_found",
            "not_found",
            "invalid_request",
            "invalid_request"
        ]
    );
}

#[tokio::test]
async fn deleted_app_key_and_service_stop_working() {
    let app = spawn_app().await;
    let t = app
        .admin
        .create_tenant(&CreateTenantRequest {
            name: "acme".into(),
            webhook_url: None,
        })
        .await
        .unwrap();
    let k = app.admin.create_app_key(&t.id).await.unwrap();
    let device = keymaster_client::DeviceClient::new(&app.base, &k.token).unwrap();
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    app.admin.delete_app_key(&k.id).await.unwrap();
    assert_problem(
        device.deposit(&deposit_request(ssh_ed25519())).await,
        401,
        "unauthorized",
    );

    // Each credential was used before its deletion (so a server that remembers credentials
    // has them in memory), and stops working at once after it.
    let (sid, service, _) = app.service("svc", &[], &[]).await;
    service.retrieve(&retrieval(&dep.code)).await.unwrap();
    app.admin.delete_service(&sid).await.unwrap();
    assert_problem(
        service.retrieve(&retrieval(&dep.code)).await,
        401,
        "unauthorized",
    );
}

#[tokio::test]
async fn bad_tokens_from_one_address_are_budgeted() {
    let app = spawn_app_with(|s| s.failed_auth_per_minute = 3).await;
    let wrong = AdminClient::new(&app.base, "not-the-admin-token-at-all").unwrap();
    for _ in 0..3 {
        assert_problem(wrong.audit(None, None).await, 401, "unauthorized");
    }
    // Spent: now even the right token from this address waits.
    let resp = app
        .http
        .get(format!("{}/v1/admin/audit", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("retry-after"));
    assert_raw_problem(resp, 429, "rate_limited").await;
}

/// A service's `domains` and `allowed_cidrs` are parsed as a key's `domains` and
/// `fetcher_cidrs` are: the inputs that the enrolment used to accept and a policy refused (a
/// space around the value, more than one trailing dot, an address given as a domain) are
/// refused at both, with the element named; what both accept is normalised alike.
#[tokio::test]
async fn enrolment_parses_domains_and_networks_as_a_policy_does() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let refused_domains = [
        " example.com",
        "example.com ",
        "example.com..",
        "10.0.0.1",
        "example.123",
    ];
    let refused_cidrs = [" 10.0.0.0/8", "10.0.0.0/8 ", "\t127.0.0.1"];
    for (domains, cidrs, field) in refused_domains
        .iter()
        .map(|d| (vec![d.to_string()], vec![], "domains[0]"))
        .chain(
            refused_cidrs
                .iter()
                .map(|c| (vec![], vec![c.to_string()], "allowed_cidrs[0]")),
        )
    {
        let body = serde_json::json!({"name": "x", "domains": domains, "allowed_cidrs": cidrs});
        let resp = app
            .post_raw("/v1/admin/services", ADMIN_TOKEN, body.to_string())
            .await;
        let problem = assert_raw_problem(resp, 400, "invalid_request").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.starts_with(field), "{body}: {detail}");

        // The same value in a key's policy is refused too.
        let policy = PolicyInput {
            domains: (!domains.is_empty()).then(|| domains.clone()),
            fetcher_cidrs: (!cidrs.is_empty()).then(|| cidrs.clone()),
            ..PolicyInput::default()
        };
        let r = device
            .deposit(&with_policy(deposit_request(ssh_ed25519()), policy))
            .await;
        assert_problem(r, 400, "invalid_request");
    }
    let audit = app.admin.audit(None, None).await.unwrap().entries;
    let refusals = audit
        .iter()
        .filter(|e| e.action == "service.create" && e.outcome == "invalid_request")
        .count();
    assert_eq!(refusals, refused_domains.len() + refused_cidrs.len());
    assert!(!audit
        .iter()
        .any(|e| e.action == "service.create" && e.outcome == "success"));

    // Accepted by both and normalised alike: case and one trailing dot of a domain, the host
    // bits of a network (the test client comes from 127.0.0.1).
    let (_, service, _) = app
        .service("normalised", &["Shop.Example.COM."], &["127.0.0.77/8"])
        .await;
    let dep = device
        .deposit(&with_policy(
            deposit_request(ssh_ed25519()),
            PolicyInput {
                domains: Some(vec!["EXAMPLE.com.".into()]),
                fetcher_cidrs: Some(vec!["127.1.2.3/8".into()]),
                ..PolicyInput::default()
            },
        ))
        .await
        .unwrap();
    let got = service.retrieve(&retrieval(&dep.code)).await.unwrap();
    assert_eq!(got.key_id, dep.id);
}
