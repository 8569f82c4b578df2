//! Refusals that change nothing else — mistyped codes (`400 invalid_code`), over-budget
//! retrievals and recodes (`429`) — are counted in the metrics and coalesced in the audit log:
//! at most one row per credential, action, outcome and minute, whose `detail` says how many.
//! And re-coding a key is bounded (`recodes_per_hour`).

use keymaster_client::wire::AuditEntry;

use crate::helpers::*;

/// The rows of `action` with `outcome`, newest first.
async fn audit_rows(app: &TestApp, action: &str, outcome: &str) -> Vec<AuditEntry> {
    app.admin
        .audit(Some(1000), None)
        .await
        .unwrap()
        .entries
        .into_iter()
        .filter(|e| e.action == action && e.outcome == outcome)
        .collect()
}

/// How many refusals a coalesced row stands for: its `detail` is "N time(s) in this minute".
fn times(e: &AuditEntry) -> u64 {
    let detail = e.detail.as_deref().unwrap_or_default();
    detail
        .split_once(' ')
        .filter(|(_, rest)| rest.starts_with("time"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("a coalesced row says how many: {e:?}"))
}

/// The value of one series in the server's `/metrics` (summed over processes in this test
/// binary: the recorder is per process, so only lower bounds hold).
async fn metric(app: &TestApp, series: &str) -> u64 {
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
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}

fn assert_coalesced(rows: &[AuditEntry], total: u64, actor: &str) {
    assert!(
        (1..=2).contains(&rows.len()),
        "one row per minute, not {}: {rows:?}",
        rows.len()
    );
    assert_eq!(rows.iter().map(times).sum::<u64>(), total, "{rows:?}");
    assert!(rows.iter().all(|r| r.actor == actor), "{rows:?}");
}

#[tokio::test]
async fn mistyped_codes_are_counted_and_coalesced_in_the_audit_log() {
    let app = spawn_app().await;
    let (sid, _, service_key) = app.service("svc", &[], &[]).await;
    let series = r#"keymaster_retrievals_total{outcome="invalid_code"}"#;
    let before = metric(&app, series).await;
    let body = serde_json::to_string(&retrieval("1234-5678")).unwrap();
    for _ in 0..500 {
        let resp = app
            .post_raw("/v1/retrievals", &service_key, body.clone())
            .await;
        assert_eq!(resp.status(), 400);
    }
    let rows = audit_rows(&app, "key.retrieve", "invalid_code").await;
    assert_coalesced(&rows, 500, &format!("service:{sid}"));
    assert!(metric(&app, series).await >= before + 500);
}

#[tokio::test]
async fn over_budget_retrievals_are_counted_and_coalesced_in_the_audit_log() {
    let app = spawn_app_with(|s| s.failed_retrievals_per_minute = 1).await;
    let (sid, service, _) = app.service("svc", &[], &[]).await;
    let series = r#"keymaster_retrievals_total{outcome="rate_limited"}"#;
    let unknown = keymaster_core::code::Code::generate(Default::default(), &mut rand::rngs::OsRng);
    assert_problem(
        service.retrieve(&retrieval(unknown.as_str())).await,
        404,
        "not_found",
    );
    let before = metric(&app, series).await;
    for _ in 0..200 {
        assert_problem(
            service.retrieve(&retrieval(unknown.as_str())).await,
            429,
            "rate_limited",
        );
    }
    let rows = audit_rows(&app, "key.retrieve", "rate_limited").await;
    assert_coalesced(&rows, 200, &format!("service:{sid}"));
    assert!(metric(&app, series).await >= before + 200);
    // The one failure that counted has a row of its own.
    assert_eq!(audit_rows(&app, "key.retrieve", "not_found").await.len(), 1);
}

/// With `recodes_per_hour = 3`, the fourth recode within the hour is `429 rate_limited` with
/// `Retry-After`, changes nothing (the third code still works, no `code.reissued`), and many
/// such refusals make one audit row.
#[tokio::test]
async fn recodes_beyond_the_hourly_bound_are_429_and_change_nothing() {
    let app = spawn_app_with(|s| s.recodes_per_hour = 3).await;
    let (_, device, _) = app.device().await;
    let (_, service, _) = app.service("svc", &[], &[]).await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let holder = app.holder(&dep);
    let mut last = None;
    for _ in 0..3 {
        last = Some(holder.recode().await.unwrap());
    }
    let series = r#"keymaster_recodes_total{outcome="rate_limited"}"#;
    let before = metric(&app, series).await;
    let resp = app
        .post_raw(&format!("/v1/keys/{}/code", dep.id), &dep.holder_token, "")
        .await;
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3500..=3600).contains(&retry), "Retry-After {retry}");
    assert_raw_problem(resp, 429, "rate_limited").await;
    for _ in 0..49 {
        assert_problem(holder.recode().await, 429, "rate_limited");
    }
    assert!(metric(&app, series).await >= before + 50);

    let st = holder.status().await.unwrap();
    let reissued = st
        .history
        .iter()
        .filter(|e| e.event_type == "code.reissued")
        .count();
    assert_eq!(reissued, 3);
    let rows = audit_rows(&app, "key.recode", "rate_limited").await;
    assert_coalesced(&rows, 50, &format!("holder:{}", dep.id));
    assert_eq!(rows[0].key_id.as_deref(), Some(dep.id.as_str()));
    assert_eq!(audit_rows(&app, "key.recode", "success").await.len(), 3);
    // The last code issued is still the live one.
    service
        .retrieve(&retrieval(&last.unwrap().code))
        .await
        .unwrap();
}
