//! The operator's endpoints and the audit log.

use keymaster_client::wire::{CreateServiceRequest, CreateTenantRequest};
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
