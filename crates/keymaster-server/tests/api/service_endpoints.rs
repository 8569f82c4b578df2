//! `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, and problem bodies for unknown routes.

use crate::helpers::*;

#[tokio::test]
async fn health_ready_metrics_openapi() {
    let app = spawn_app().await;
    let get = |p: &str| app.http.get(format!("{}{p}", app.base)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);

    // Make some traffic so that keymaster_ series exist.
    let (_, device, _) = app.device().await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let (_, service, _) = app.service("svc", &[], &[]).await;
    service.retrieve(&retrieval(&dep.code)).await.unwrap();
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("keymaster_deposits_total"), "{metrics}");
    assert!(metrics.contains("keymaster_retrievals_total"), "{metrics}");
    assert!(!metrics.contains(&dep.code));
    if pg_url().is_none() {
        // The writer's latencies are histograms (bucket counts that two scrapes can be
        // subtracted from, as bench/run does per phase), not rolling summaries.
        for name in [
            "keymaster_sqlite_commit_seconds",
            "keymaster_sqlite_sync_seconds",
        ] {
            assert!(
                metrics.contains(&format!("# TYPE {name} histogram")),
                "{metrics}"
            );
            assert!(
                metrics.contains(&format!("{name}_bucket{{le=\"0.001\"}}")),
                "{metrics}"
            );
        }
        // The checkpointer's own work, a pass a second: its time, its database writeback and
        // sync, and the pages it wrote (at least the deposit's), as histograms too.
        let mut metrics = metrics;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !checkpoint_wrote_pages(&metrics) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            metrics = get("/metrics").await.unwrap().text().await.unwrap();
        }
        assert!(checkpoint_wrote_pages(&metrics), "{metrics}");
        for name in [
            "keymaster_sqlite_checkpoint_seconds",
            "keymaster_sqlite_checkpoint_writeback_seconds",
            "keymaster_sqlite_checkpoint_sync_seconds",
        ] {
            assert!(
                metrics.contains(&format!("# TYPE {name} histogram")),
                "{metrics}"
            );
            assert!(
                metrics.contains(&format!("{name}_bucket{{le=\"0.001\"}}")),
                "{metrics}"
            );
        }
    }

    let doc: serde_json::Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/keys",
        "/v1/keys/{id}",
        "/v1/keys/{id}/code",
        "/v1/retrievals",
        "/v1/retrievals/{retrieval_id}/confirm",
        "/v1/admin/tenants",
        "/v1/admin/tenants/{id}/app-keys",
        "/v1/admin/app-keys/{id}",
        "/v1/admin/services",
        "/v1/admin/services/{id}",
        "/v1/admin/audit",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
    assert!(doc["components"]["schemas"].get("DepositRequest").is_some());
}

/// True when some checkpoint pass wrote at least one database page (a `_bucket` of
/// `keymaster_sqlite_checkpoint_pages` below 1 page holds fewer passes than all of them).
fn checkpoint_wrote_pages(metrics: &str) -> bool {
    let count = |prefix: &str| -> Option<f64> {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
    };
    match (
        count("keymaster_sqlite_checkpoint_pages_bucket{le=\"1\"}"),
        count("keymaster_sqlite_checkpoint_pages_count"),
    ) {
        (Some(at_most_one), Some(all)) => all > at_most_one,
        _ => false,
    }
}

#[tokio::test]
async fn unknown_routes_answer_problem_json() {
    let app = spawn_app().await;
    let resp = app
        .http
        .get(format!("{}/nope", app.base))
        .send()
        .await
        .unwrap();
    assert_raw_problem(resp, 404, "not_found").await;
    let resp = app
        .http
        .put(format!("{}/v1/keys", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
}
