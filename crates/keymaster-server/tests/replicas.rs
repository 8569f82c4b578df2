//! Several replicas on one PostgreSQL database: two `App`s started in this process, each with
//! its own connection pool and its own sweeper, sharing one fresh database — as two processes
//! behind a load balancer would. Checks what must hold across replicas: a single-use code is
//! handed out once, the failure budget is shared and exact, an expiry is reported once.
//!
//! Built only with the `postgres-tests` feature and run only by the PostgreSQL step of
//! `scripts/test`; without `KEYMASTER_TEST_DATABASE_URL` it fails rather than pass silently.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::time::Duration;

use futures::future::join_all;
use keymaster_client::wire::{CreateServiceRequest, CreateTenantRequest, PolicyInput};
use keymaster_client::{AdminClient, DeviceClient, ServiceClient};
use keymaster_server::{App, Settings};

use helpers::{
    backend_settings, deposit_request, pg_url, retrieval, ssh_ed25519, with_policy, PgDatabase,
    ADMIN_TOKEN, PG_ENV,
};

/// Two replicas on one database.
struct Replicas {
    bases: [String; 2],
    db: PgDatabase,
    _dir: tempfile::TempDir,
}

async fn two_replicas(tweak: impl Fn(&mut Settings)) -> Replicas {
    assert!(
        pg_url().is_some(),
        "the replicas tests need PostgreSQL: set {PG_ENV} \
         (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut settings, db) = backend_settings(dir.path()).await;
    tweak(&mut settings);
    let db = db.unwrap();
    let mut bases = Vec::new();
    for _ in 0..2 {
        let app = App::build(settings.clone()).await.expect("replica builds");
        bases.push(format!("http://{}", app.local_addr().unwrap()));
        tokio::spawn(app.run_until_stopped(std::future::pending()));
    }
    Replicas {
        bases: [bases[0].clone(), bases[1].clone()],
        db,
        _dir: dir,
    }
}

impl Replicas {
    /// A device client (via replica 0) and one service's clients on both replicas.
    async fn clients(&self) -> (DeviceClient, [ServiceClient; 2]) {
        let admin = AdminClient::new(&self.bases[0], ADMIN_TOKEN).unwrap();
        let t = admin
            .create_tenant(&CreateTenantRequest {
                name: "acme".into(),
                webhook_url: None,
            })
            .await
            .unwrap();
        let k = admin.create_app_key(&t.id).await.unwrap();
        let s = admin
            .create_service(&CreateServiceRequest {
                name: "svc".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        (
            DeviceClient::new(&self.bases[0], &k.token).unwrap(),
            [
                ServiceClient::new(&self.bases[0], &s.token).unwrap(),
                ServiceClient::new(&self.bases[1], &s.token).unwrap(),
            ],
        )
    }
}

/// How many `key.expired` events the keys have, together.
async fn expired_events(conn: &mut sqlx::PgConnection, ids: &[String]) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE key_id = ANY($1) AND type = 'key.expired'",
    )
    .bind(ids)
    .fetch_one(conn)
    .await
    .unwrap()
}

/// Statuses of `n` concurrent retrievals of `code`, alternating between the replicas.
async fn race(services: &[ServiceClient; 2], code: &str, n: usize) -> Vec<u16> {
    let req = retrieval(code);
    let calls = (0..n).map(|i| {
        let svc = &services[i % 2];
        let req = &req;
        async move {
            match svc.retrieve(req).await {
                Ok(_) => 200,
                Err(e) => e.status().unwrap_or(0),
            }
        }
    });
    join_all(calls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_single_use_code_is_handed_out_once_across_replicas() {
    let r = two_replicas(|s| s.failed_retrievals_per_minute = 1000).await;
    let (device, services) = r.clients().await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let statuses = race(&services, &dep.code, 80).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let gone = statuses.iter().filter(|s| **s == 404).count();
    assert_eq!((ok, gone), (1, 79), "{statuses:?}");

    let mut conn = r.db.connect().await;
    let retrieved: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE key_id = $1 AND type = 'key.retrieved'",
    )
    .bind(&dep.id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(retrieved, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn max_retrievals_is_exact_across_replicas() {
    let r = two_replicas(|s| s.failed_retrievals_per_minute = 1000).await;
    let (device, services) = r.clients().await;
    let req = with_policy(
        deposit_request(ssh_ed25519()),
        PolicyInput {
            max_retrievals: Some(7),
            ..PolicyInput::default()
        },
    );
    let dep = device.deposit(&req).await.unwrap();
    let statuses = race(&services, &dep.code, 60).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let gone = statuses.iter().filter(|s| **s == 404).count();
    assert_eq!((ok, gone), (7, 53), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn the_failure_budget_is_shared_and_exact_across_replicas() {
    let r = two_replicas(|s| s.failed_retrievals_per_minute = 20).await;
    let (device, services) = r.clients().await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    // Use the code up: from now on it is a well-formed code that opens nothing (404).
    services[0].retrieve(&retrieval(&dep.code)).await.unwrap();
    let statuses = race(&services, &dep.code, 50).await;
    let gone = statuses.iter().filter(|s| **s == 404).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((gone, limited), (20, 30), "{statuses:?}");
    // Either replica now refuses, whatever the code.
    for svc in &services {
        let e = svc.retrieve(&retrieval(&dep.code)).await.unwrap_err();
        assert_eq!(e.status(), Some(429));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn an_expiry_is_reported_once_by_replicas_sweeping_together() {
    let r = two_replicas(|s| s.sweep_interval = Duration::from_millis(20)).await;
    let (device, _services) = r.clients().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let req = with_policy(
            deposit_request(ssh_ed25519()),
            PolicyInput {
                ttl_seconds: Some(1),
                ..PolicyInput::default()
            },
        );
        ids.push(device.deposit(&req).await.unwrap().id);
    }
    let mut conn = r.db.connect().await;
    let mut reported = 0;
    for _ in 0..100 {
        reported = expired_events(&mut conn, &ids).await;
        if reported >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reported, 5, "every key expired and was reported");
    // Both replicas keep sweeping; nothing is reported twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_key: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE key_id = ANY($1) AND type = 'key.expired'
         GROUP BY key_id",
    )
    .bind(&ids)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(per_key, vec![1; 5]);
}

/// A TCP forwarder to PostgreSQL that can be cut, to take the database away from a running
/// server without touching the PostgreSQL that other tests use.
struct Forwarder {
    port: u16,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Forwarder {
    async fn start(target: String) -> Forwarder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let conns = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Forwarder { port, tasks }
    }

    /// Closes the listener and every forwarded connection.
    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_and_requests_answer_503_quickly_while_the_database_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (mut settings, db) = backend_settings(dir.path()).await;
    assert!(db.is_some(), "set {PG_ENV}");
    let db = db.unwrap();
    let mut via = url::Url::parse(&db.url).unwrap();
    let target = format!(
        "{}:{}",
        via.host_str().unwrap(),
        via.port_or_known_default().unwrap()
    );
    let forwarder = Forwarder::start(target).await;
    via.set_host(Some("127.0.0.1")).unwrap();
    via.set_port(Some(forwarder.port)).unwrap();
    settings.database_url = via.to_string();
    let app = App::build(settings).await.expect("server builds");
    let base = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let http = reqwest::Client::new();
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let r = Replicas {
        bases: [base.clone(), base.clone()],
        db,
        _dir: dir,
    };
    let (device, services) = r.clients().await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();

    forwarder.cut();
    let started = std::time::Instant::now();
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let e = services[0]
        .retrieve(&retrieval(&dep.code))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(503), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answers came after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_together_migrate_once_and_share_one_generated_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let (mut settings, db) = backend_settings(dir.path()).await;
    assert!(db.is_some(), "set {PG_ENV}");
    let db = db.unwrap();
    settings.admin_token = None;
    let apps = join_all((0..4).map(|_| App::build(settings.clone()))).await;
    let mut generated = Vec::new();
    let mut bases = Vec::new();
    for app in apps {
        let mut app = app.expect("every replica starts");
        if let Some(token) = app.take_generated_admin_token() {
            generated.push(token.to_string());
        }
        bases.push(format!("http://{}", app.local_addr().unwrap()));
        tokio::spawn(app.run_until_stopped(std::future::pending()));
    }
    assert_eq!(
        generated.len(),
        1,
        "exactly one replica generates the token"
    );
    for base in &bases {
        let admin = AdminClient::new(base, &generated[0]).unwrap();
        admin
            .audit(None, None)
            .await
            .expect("the token works on every replica");
    }
    let mut conn = db.connect().await;
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let files = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../migrations/postgres"
    ))
    .unwrap()
    .count();
    let every: Vec<i64> = (1..=i64::try_from(files).unwrap()).collect();
    assert_eq!(versions, every, "each migration once, in order");
}

/// Polls `status` until it answers 401, for at most `within`; how long that took.
async fn refused_within<F, Fut>(within: Duration, status: F) -> Option<Duration>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if status().await == 401 {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Replicas keep the credentials they authenticated (`store/postgres/credentials.rs`): a
/// deletion on one replica must stop the credential on itself before it answers, and on the
/// other through the notification, well before the kept credential would go stale (5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_deleted_credential_is_refused_by_every_replica_within_a_second() {
    let r = two_replicas(|s| s.failed_retrievals_per_minute = 1000).await;
    let admins = [
        AdminClient::new(&r.bases[0], ADMIN_TOKEN).unwrap(),
        AdminClient::new(&r.bases[1], ADMIN_TOKEN).unwrap(),
    ];
    let t = admins[0]
        .create_tenant(&CreateTenantRequest {
            name: "acme".into(),
            webhook_url: None,
        })
        .await
        .unwrap();
    let k = admins[0].create_app_key(&t.id).await.unwrap();
    let s = admins[0]
        .create_service(&CreateServiceRequest {
            name: "svc".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let devices = r
        .bases
        .clone()
        .map(|b| DeviceClient::new(&b, &k.token).unwrap());
    let services = r
        .bases
        .clone()
        .map(|b| ServiceClient::new(&b, &s.token).unwrap());
    let deposit = |i: usize| {
        let d = &devices[i];
        async move {
            match d.deposit(&deposit_request(ssh_ed25519())).await {
                Ok(_) => 200,
                Err(e) => e.status().unwrap_or(0),
            }
        }
    };
    let unknown = keymaster_core::code::Code::generate(Default::default(), &mut rand::rngs::OsRng);
    let retrieve = |i: usize| {
        let svc = &services[i];
        let code = unknown.as_str().to_owned();
        async move {
            match svc.retrieve(&retrieval(&code)).await {
                Ok(_) => 200,
                Err(e) => e.status().unwrap_or(0),
            }
        }
    };
    // Both replicas authenticate both credentials, a few times (kept after the first).
    for _ in 0..3 {
        for i in 0..2 {
            assert_eq!(deposit(i).await, 200);
            assert_eq!(
                retrieve(i).await,
                404,
                "an unknown code, from an enrolled service"
            );
        }
    }

    admins[0].delete_service(&s.id).await.unwrap();
    assert_eq!(
        retrieve(0).await,
        401,
        "the deleting replica, right after its answer"
    );
    let other = refused_within(Duration::from_secs(1), || retrieve(1)).await;
    assert!(
        other.is_some(),
        "replica 1 still accepts a deleted service after 1 s"
    );

    admins[1].delete_app_key(&k.id).await.unwrap();
    assert_eq!(
        deposit(1).await,
        401,
        "the deleting replica, right after its answer"
    );
    let other = refused_within(Duration::from_secs(1), || deposit(0)).await;
    assert!(
        other.is_some(),
        "replica 0 still accepts a deleted app key after 1 s"
    );
}
