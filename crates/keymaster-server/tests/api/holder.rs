//! The holder's own key: status, expiry changes, revoke, re-code, and isolation.

use keymaster_client::wire::PatchKeyRequest;
use keymaster_client::HolderClient;

use crate::helpers::*;

#[tokio::test]
async fn status_patch_revoke() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let holder = app.holder(&dep);
    let st = holder.status().await.unwrap();
    assert_eq!(st.status, "active");
    assert_eq!(st.algorithm, "ed25519");
    assert_eq!(st.fingerprint, dep.fingerprint);
    assert_eq!(st.history.len(), 1);
    assert_eq!(st.history[0].event_type, "key.deposited");

    let st = holder
        .patch(&PatchKeyRequest {
            ttl_seconds: Some(7200),
            expires_at: None,
        })
        .await
        .unwrap();
    let left = st
        .expires_at
        .duration_since(jiff::Timestamp::now())
        .as_secs();
    assert!((7100..=7200).contains(&left), "{left}");
    assert_problem(
        holder
            .patch(&PatchKeyRequest {
                ttl_seconds: Some(40 * 86_400),
                expires_at: None,
            })
            .await,
        400,
        "invalid_request",
    );
    assert_problem(
        holder.patch(&PatchKeyRequest::default()).await,
        400,
        "invalid_request",
    );

    holder.revoke().await.unwrap();
    let st = holder.status().await.unwrap();
    assert_eq!(st.status, "revoked");
    assert_eq!(st.history.last().unwrap().event_type, "key.revoked");
    assert_problem(holder.revoke().await, 404, "not_found");
    assert_problem(holder.recode().await, 404, "not_found");
    assert_problem(
        holder
            .patch(&PatchKeyRequest {
                ttl_seconds: Some(7200),
                expires_at: None,
            })
            .await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn recode_kills_the_old_code_and_reports_stale_use() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let holder = app.holder(&dep);
    let fresh = holder.recode().await.unwrap();
    assert_ne!(fresh.code, dep.code);
    assert_eq!(fresh.expires_at, dep.expires_at);
    let (_, service, _) = app.service("svc", &[], &[]).await;
    assert_problem(
        service.retrieve(&retrieval(&dep.code)).await,
        404,
        "not_found",
    );
    let st = holder.status().await.unwrap();
    let types: Vec<&str> = st.history.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["key.deposited", "code.reissued", "code.stale_used"]);
    service.retrieve(&retrieval(&fresh.code)).await.unwrap();
}

#[tokio::test]
async fn a_holder_token_opens_exactly_one_key() {
    let app = spawn_app().await;
    let (_, device_a, _) = app.device().await;
    let (_, device_b, _) = app.device().await;
    let a = device_a
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let b = device_b
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let a_on_b = HolderClient::new(&app.base, &b.id, &a.holder_token).unwrap();
    assert_problem(a_on_b.status().await, 404, "not_found");
    assert_problem(a_on_b.revoke().await, 404, "not_found");
    assert_problem(a_on_b.recode().await, 404, "not_found");
    let forged = HolderClient::new(&app.base, &a.id, "kmh_forged").unwrap();
    assert_problem(forged.status().await, 401, "unauthorized");
    // A token names its key (`kmh_<id hex>.<secret>`): A's secret under B's id opens nothing.
    let (_, a_secret) = a.holder_token.split_once('.').unwrap();
    let b_hex = b.id.strip_prefix("key_").unwrap();
    for key in [&a.id, &b.id] {
        let spliced = format!("kmh_{b_hex}.{a_secret}");
        let spliced = HolderClient::new(&app.base, key, &spliced).unwrap();
        assert_problem(spliced.status().await, 401, "unauthorized");
    }
    // An app key is not a holder token.
    let (_, _, app_key) = app.device().await;
    let wrong_kind = HolderClient::new(&app.base, &a.id, &app_key).unwrap();
    assert_problem(wrong_kind.status().await, 403, "forbidden");
    // B's key is untouched.
    assert_eq!(app.holder(&b).status().await.unwrap().status, "active");
}

#[tokio::test]
async fn event_stream_is_live_resumable_and_ends_when_the_key_is_gone() {
    use futures::StreamExt;
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let holder = app.holder(&dep);
    let (_, service, _) = app.service("example-web", &[], &[]).await;

    let follower = tokio::spawn({
        let holder = holder.clone();
        async move {
            let events: Vec<_> = holder.events(None).collect().await;
            events.into_iter().map(|e| e.unwrap()).collect::<Vec<_>>()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    service.retrieve(&retrieval(&dep.code)).await.unwrap();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(5), follower)
        .await
        .expect("stream ends after the key is gone")
        .unwrap();
    let types: Vec<&str> = seen.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["key.deposited", "key.retrieved"]);
    assert_eq!(seen[1].data.service.as_ref().unwrap().name, "example-web");

    // Resuming after the first event gives only the rest.
    let rest: Vec<_> = holder.events(Some(&seen[0].id)).collect().await;
    let rest: Vec<String> = rest.into_iter().map(|e| e.unwrap().event_type).collect();
    assert_eq!(rest, ["key.retrieved"]);
}
