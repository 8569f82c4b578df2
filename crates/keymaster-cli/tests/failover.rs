//! A PostgreSQL fail-over under load (built with `--features postgres-tests`; `scripts/test` runs
//! it in its PostgreSQL step; it needs the PostgreSQL 15 server binaries and fails, never skips,
//! without them).
//!
//! A throw-away primary with a synchronous standby (`support/pg_pair.rs`), two `keymaster serve`
//! processes on the URL naming both hosts with `target_session_attrs=read-write`, and clients
//! depositing through both. After a few hundred acknowledged deposits the primary is stopped
//! with `-m immediate` while the load goes on, and the standby is promoted once both processes'
//! `/readyz` have answered `503` (what they must say while no primary answers; it also shows
//! that the test saw the gap). Then:
//!
//! - both processes answer `/readyz` `200` and acknowledge a deposit within 30 s of the crash,
//!   with nothing restarted;
//! - every error answer meanwhile (deposits and `/readyz`) was `503` problem+json `unavailable`,
//!   never a `500`;
//! - no acknowledged deposit was lost: every acknowledged code is retrieved once (`200`, the
//!   deposit's key), through either process, and is then gone (`404`); no code was acknowledged
//!   twice; the new primary holds no more keys than were acknowledged, refused or unanswered
//!   (those may or may not have been made).

#[path = "support/deposit_load.rs"]
mod deposit_load;
#[allow(dead_code)]
#[path = "support/keymaster_process.rs"]
mod keymaster_process;
#[path = "support/pg_pair.rs"]
mod pg_pair;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use keymaster_client::wire::{CreateServiceRequest, CreateTenantRequest};
use keymaster_client::AdminClient;

use deposit_load::{send, Answer, Load, Outcome, Refusal};
use keymaster_process::{Server, ADMIN_TOKEN};
use pg_pair::PgPair;

/// Concurrent depositing clients.
const CLIENTS: usize = 8;
/// Deposits acknowledged before the crash.
const BEFORE_CRASH: usize = 300;
/// How soon after the crash both processes must serve again.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_under_load_loses_no_acknowledged_deposit() {
    let began = Instant::now();
    let pair = PgPair::start();
    let cluster_ready = began.elapsed();
    let url = pair.multi_host_url();
    // Retrieving every code a second time is hundreds of failed retrievals by one service.
    let env = [("KEYMASTER_FAILED_RETRIEVALS_PER_MINUTE", "1000000")];
    let servers = [
        Server::start_with(&url, &env),
        Server::start_with(&url, &env),
    ];
    let bases: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();

    let admin = AdminClient::new(&bases[0], ADMIN_TOKEN).unwrap();
    let tenant = admin
        .create_tenant(&CreateTenantRequest {
            name: "fail-over".into(),
            webhook_url: None,
        })
        .await
        .unwrap();
    let app_key = admin.create_app_key(&tenant.id).await.unwrap().token;
    let service = admin
        .create_service(&CreateServiceRequest {
            name: "fail-over".into(),
            ..CreateServiceRequest::default()
        })
        .await
        .unwrap()
        .token;

    // Load, then the crash while it goes on.
    let load = Load::start(bases.clone(), app_key, CLIENTS);
    let waited = Instant::now();
    while load.acked() < BEFORE_CRASH {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "only {} deposits acknowledged in 60 s before the crash",
            load.acked()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let crashed = Instant::now();
    let load_for = waited.elapsed();
    pair.crash_primary();
    let probes: Vec<_> = (0..bases.len())
        .map(|s| load.until_serving(s, RECOVERY_LIMIT * 2))
        .collect();
    // Promoted once both processes say they are not ready, which is what they must say while
    // no primary answers (and which shows that this test saw the gap).
    while !(0..bases.len()).all(|s| load.refused_since(s, "readyz", crashed)) {
        assert!(
            crashed.elapsed() < Duration::from_secs(15),
            "a process still answered /readyz 200 15 s after the primary crashed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unready = crashed.elapsed();
    pair.promote_standby();
    let promoted = crashed.elapsed();
    let mut serving = Vec::new();
    for probe in probes {
        serving.push(probe.await.unwrap());
    }
    // A little more load on the new primary, then stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answers = load.stop().await;

    // What was said, before and after the crash.
    let recovery: Vec<Option<Duration>> = serving
        .iter()
        .map(|at| at.map(|at| at.duration_since(crashed)))
        .collect();
    let before: Vec<&Answer> = answers.iter().filter(|a| a.at < crashed).collect();
    let mut refusals: BTreeMap<(&str, u16, Option<String>), usize> = BTreeMap::new();
    let mut unknown = Vec::new();
    for a in &answers {
        match &a.outcome {
            Outcome::Refused(Refusal { status, problem }) => {
                *refusals
                    .entry((a.what, *status, problem.clone()))
                    .or_default() += 1
            }
            Outcome::Unknown(why) => unknown.push(format!("{} via {}: {why}", a.what, a.server)),
            _ => {}
        }
    }
    let acked: Vec<(&str, &str)> = answers
        .iter()
        .filter_map(|a| match &a.outcome {
            Outcome::Acked { code, id } => Some((code.as_str(), id.as_str())),
            _ => None,
        })
        .collect();
    let acked_before = before
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Acked { .. }))
        .count();
    eprintln!(
        "fail-over: clusters ready after {cluster_ready:?}, {acked_before} deposits acknowledged \
         in {load_for:?}; after the crash: both processes unready at {unready:?}, standby \
         promoted at {promoted:?}, serving again at {recovery:?}; {} deposits acknowledged \
         after it; refusals {refusals:?}; {} unanswered {:?}",
        acked.len() - acked_before,
        unknown.len(),
        &unknown[..unknown.len().min(3)]
    );

    for (i, r) in recovery.iter().enumerate() {
        assert!(
            r.is_some_and(|r| r <= RECOVERY_LIMIT),
            "process {i} did not serve again within {RECOVERY_LIMIT:?} of the crash ({r:?}); \
             its stderr:\n{}",
            servers[i].stderr_tail()
        );
    }
    assert!(
        before
            .iter()
            .all(|a| matches!(a.outcome, Outcome::Acked { .. })),
        "answers before the crash that were not acknowledgements: {:?}",
        before
            .iter()
            .filter(|a| !matches!(a.outcome, Outcome::Acked { .. }))
            .map(|a| &a.outcome)
            .collect::<Vec<_>>()
    );
    let wrong: Vec<_> = refusals
        .keys()
        .filter(|(_, status, problem)| *status != 503 || problem.as_deref() != Some("unavailable"))
        .collect();
    assert!(
        wrong.is_empty(),
        "during the fail-over every error must be 503 problem+json `unavailable`; also came \
         {wrong:?} (all refusals: {refusals:?}); stderr of the processes:\n{}\n---\n{}",
        servers[0].stderr_tail(),
        servers[1].stderr_tail()
    );

    // No code acknowledged twice, no key either.
    let codes: HashSet<&str> = acked.iter().map(|(code, _)| *code).collect();
    let ids: HashSet<&str> = acked.iter().map(|(_, id)| *id).collect();
    assert_eq!(codes.len(), acked.len(), "a code was acknowledged twice");
    assert_eq!(ids.len(), acked.len(), "a key id was acknowledged twice");

    // The new primary holds every acknowledged deposit, and at most those whose answer was an
    // error or none (they may or may not have been made).
    let maybe = answers
        .iter()
        .filter(|a| a.what == "deposit" && !matches!(a.outcome, Outcome::Acked { .. }))
        .count();
    let stored: usize = pair
        .query(pair.standby_port, "SELECT count(*) FROM keys")
        .parse()
        .unwrap();
    assert!(
        acked.len() <= stored && stored <= acked.len() + maybe,
        "{stored} keys stored after the fail-over; {} acknowledged, {maybe} unanswered or refused",
        acked.len()
    );

    // Every acknowledged code once, through either process, then never again.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let retrieve = |round: usize| {
        let (http, bases, service) = (&http, &bases, &service);
        futures::stream::iter(acked.iter().enumerate())
            .map(move |(i, (code, id))| async move {
                let base = &bases[(i + round) % bases.len()];
                let reply = send(
                    http.post(format!("{base}/v1/retrievals"))
                        .bearer_auth(service)
                        .json(&serde_json::json!({ "code": code })),
                )
                .await;
                (*code, *id, reply)
            })
            .buffer_unordered(CLIENTS)
            .collect::<Vec<_>>()
    };
    for (code, id, reply) in retrieve(0).await {
        let reply = reply.unwrap_or_else(|e| panic!("no answer to retrieving {code}: {e}"));
        assert_eq!(
            reply.status, 200,
            "acknowledged deposit {id} ({code}) not retrieved after the fail-over: {}",
            reply.body
        );
        assert_eq!(
            reply.body["key_id"].as_str(),
            Some(id),
            "{code} gave another key"
        );
    }
    for (code, id, reply) in retrieve(1).await {
        let reply = reply.unwrap_or_else(|e| panic!("no answer to retrieving {code}: {e}"));
        assert_eq!(
            reply.refusal(),
            Refusal {
                status: 404,
                problem: Some("not_found".into())
            },
            "single-use deposit {id} ({code}) retrieved a second time: {}",
            reply.body
        );
    }
    eprintln!(
        "fail-over: {} codes retrieved once and refused the second time; test took {:?}",
        acked.len(),
        began.elapsed()
    );
}
