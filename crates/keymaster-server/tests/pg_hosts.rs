//! The PostgreSQL store's choice of host and its answers when the database cannot write:
//! libpq's multi-host `database_url` with `target_session_attrs`, `503` (never `500`) from a
//! read-only session, `/readyz` failing while no primary answers, following the next host
//! when the first goes away, and retries of work that cannot have been done.
//!
//! A read-only server is made with a per-database setting on the test's own throw-away
//! database (`ALTER DATABASE … SET default_transaction_read_only`), which new sessions take
//! up; a host going away with a TCP forwarder that is cut. Built only with the
//! `postgres-tests` feature; without `KEYMASTER_TEST_DATABASE_URL` it fails rather than pass.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keymaster_client::wire::CreateTenantRequest;
use keymaster_client::{AdminClient, DeviceClient};
use keymaster_server::{App, Settings};
use sqlx::{Connection, PgConnection};

use helpers::{
    backend_settings, deposit_request, retrieval, ssh_ed25519, PgDatabase, ADMIN_TOKEN, PG_ENV,
};

/// A server on the test's own database, reached through `url` (made from that database's URL).
struct Server {
    base: String,
    http: reqwest::Client,
    db: PgDatabase,
    _dir: tempfile::TempDir,
}

/// The test database's URL with `hosts` as its host list and `query` as its parameters.
fn with_hosts(db_url: &str, hosts: &str, query: &str) -> String {
    let url = url::Url::parse(db_url).unwrap();
    let user = match url.username() {
        "" => String::new(),
        u => format!("{u}:not-the-password-hunter2@"),
    };
    format!("postgres://{user}{hosts}{}?{query}", url.path())
}

/// The test database's `host:port`.
fn real_host(db_url: &str) -> String {
    let url = url::Url::parse(db_url).unwrap();
    format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432))
}

async fn settings() -> (Settings, PgDatabase, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (settings, db) = backend_settings(dir.path()).await;
    let db = db.unwrap_or_else(|| panic!("these tests need PostgreSQL: set {PG_ENV}"));
    (settings, db, dir)
}

async fn start(settings: Settings, db: PgDatabase, dir: tempfile::TempDir) -> Server {
    let app = App::build(settings).await.expect("server builds");
    let base = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    Server {
        base,
        http: reqwest::Client::new(),
        db,
        _dir: dir,
    }
}

impl Server {
    async fn device(&self) -> (DeviceClient, String) {
        let admin = AdminClient::new(&self.base, ADMIN_TOKEN).unwrap();
        let t = admin
            .create_tenant(&CreateTenantRequest {
                name: "acme".into(),
                webhook_url: None,
            })
            .await
            .unwrap();
        let k = admin.create_app_key(&t.id).await.unwrap();
        (DeviceClient::new(&self.base, &k.token).unwrap(), k.token)
    }

    async fn ready(&self) -> u16 {
        let r = self
            .http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }

    /// A deposit sent by hand, to see the status and body as a client would.
    async fn deposit(&self, token: &str) -> (u16, String, String) {
        let r = self
            .http
            .post(format!("{}/v1/keys", self.base))
            .bearer_auth(token)
            .json(&deposit_request(ssh_ed25519()))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let ctype = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, ctype, r.text().await.unwrap())
    }
}

/// Sets or resets `default_transaction_read_only` on the test database and ends its sessions
/// (through the maintenance database), so that the server's next sessions take it up.
async fn make_read_only(db: &PgDatabase, on: bool) {
    let mut admin = PgConnection::connect(&helpers::pg_url().unwrap())
        .await
        .unwrap();
    let set = if on {
        format!(
            "ALTER DATABASE {} SET default_transaction_read_only = on",
            db.name
        )
    } else {
        format!(
            "ALTER DATABASE {} RESET default_transaction_read_only",
            db.name
        )
    };
    sqlx::raw_sql(&set).execute(&mut admin).await.unwrap();
    end_sessions(&mut admin, &db.name).await;
    admin.close().await.unwrap();
}

/// Terminates every session of database `name` open now and waits until they are gone (the
/// server opens new ones meanwhile: its sweeper and listener do not wait).
async fn end_sessions(admin: &mut PgConnection, name: &str) {
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .fetch_all(&mut *admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid")
        .bind(&pids)
        .execute(&mut *admin)
        .await
        .unwrap();
    for _ in 0..200 {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                .bind(&pids)
                .fetch_one(&mut *admin)
                .await
                .unwrap();
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the sessions of {name} did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_host_listed_first_is_passed_over() {
    let (mut settings, db, dir) = settings().await;
    settings.database_url = with_hosts(
        &db.url,
        &format!("127.0.0.1:1,{}", real_host(&db.url)),
        "target_session_attrs=read-write",
    );
    let server = start(settings, db, dir).await;
    assert_eq!(server.ready().await, 200);
    let (device, _) = server.device().await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let admin = AdminClient::new(&server.base, ADMIN_TOKEN).unwrap();
    let s = admin
        .create_service(&keymaster_client::wire::CreateServiceRequest {
            name: "svc".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let service = keymaster_client::ServiceClient::new(&server.base, &s.token).unwrap();
    let got = service.retrieve(&retrieval(&dep.code)).await.unwrap();
    assert_eq!(got.key_id, dep.id);
}

/// The same test for `any` (the default) and `read-write`: the paths differ (a read-only
/// session answers 25006 to the write; a read-only new connection is refused by the pool's
/// check), the answers must not.
async fn read_only_answers_503_then_serves_again(query: &str) {
    let (mut settings, db, dir) = settings().await;
    settings.database_url = with_hosts(&db.url, &real_host(&db.url), query);
    let server = start(settings, db, dir).await;
    let (_, token) = server.device().await;
    assert_eq!(server.deposit(&token).await.0, 201);

    make_read_only(&server.db, true).await;
    let started = Instant::now();
    let (status, ctype, body) = server.deposit(&token).await;
    assert_eq!(status, 503, "{query}: {body}");
    assert_eq!(ctype, "application/problem+json", "{query}");
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["code"], "unavailable", "{query}: {body}");
    assert_eq!(problem["status"], 503, "{query}: {body}");
    for secret in ["hunter2", "postgres://", "25006", "read-only"] {
        assert!(!body.contains(secret), "{query}: {secret} in {body}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{query}: answered after {:?}",
        started.elapsed()
    );
    assert_eq!(
        server.ready().await,
        503,
        "{query}: /readyz on a read-only database"
    );

    make_read_only(&server.db, false).await;
    let (status, _, body) = server.deposit(&token).await;
    assert_eq!(status, 201, "{query}: {body}");
    assert_eq!(server.ready().await, 200, "{query}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_only_database_answers_503_then_serves_again_any() {
    read_only_answers_503_then_serves_again("target_session_attrs=any").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_only_database_answers_503_then_serves_again_read_write() {
    read_only_answers_503_then_serves_again("target_session_attrs=read-write").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_fails_while_the_only_host_that_answers_is_read_only() {
    let (mut settings, db, dir) = settings().await;
    // `any` takes the read-only host; readiness still asks for a primary.
    settings.database_url = with_hosts(
        &db.url,
        &format!("127.0.0.1:1,{}", real_host(&db.url)),
        "target_session_attrs=any",
    );
    let server = start(settings, db, dir).await;
    assert_eq!(server.ready().await, 200);
    make_read_only(&server.db, true).await;
    let r = server
        .http
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("\"unavailable\""), "{body}");
    make_read_only(&server.db, false).await;
    assert_eq!(server.ready().await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_host_that_can_write_is_a_start_error_naming_each_host_not_the_password() {
    let (mut settings, db, _dir) = settings().await;
    make_read_only(&db, true).await;
    settings.database_url = with_hosts(
        &db.url,
        &format!("127.0.0.1:1,{}", real_host(&db.url)),
        "target_session_attrs=read-write",
    );
    let err = match App::build(settings).await {
        Ok(_) => panic!("a server started on a read-only database"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("no host of database_url accepts writes"),
        "{err}"
    );
    assert!(err.contains("127.0.0.1:1: "), "{err}");
    assert!(
        err.contains(&format!("{}: read-only", real_host(&db.url))),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn work_on_connections_cut_before_commit_is_retried_not_failed() {
    let (settings, db, dir) = settings().await;
    let server = start(settings, db, dir).await;
    let admin = AdminClient::new(&server.base, ADMIN_TOKEN).unwrap();
    let tenant = || CreateTenantRequest {
        name: "acme".into(),
        webhook_url: None,
    };
    admin.create_tenant(&tenant()).await.unwrap();
    for round in 0..3 {
        // The pool's connections were used just now, so they are not pinged before use: the
        // next transaction meets a terminated session (57P01) before its COMMIT, and is run
        // again on a new connection.
        let mut conn = PgConnection::connect(&helpers::pg_url().unwrap())
            .await
            .unwrap();
        end_sessions(&mut conn, &server.db.name).await;
        admin
            .create_tenant(&tenant())
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        admin.audit(None, None).await.unwrap();
    }
    let mut conn = server.db.connect().await;
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(tenants, 4, "each tenant created once");
}

/// A TCP forwarder to PostgreSQL that can be cut; counts the connections it accepted.
struct Forwarder {
    port: u16,
    accepted: Arc<AtomicUsize>,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Forwarder {
    async fn start(target: String) -> Forwarder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tasks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (conns, count) = (tasks.clone(), accepted.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
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
        Forwarder {
            port,
            accepted,
            tasks,
        }
    }

    /// Closes the listener and every forwarded connection: the host is gone.
    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_first_host_goes_away_the_server_follows_the_next() {
    let (mut settings, db, dir) = settings().await;
    let first = Forwarder::start(real_host(&db.url)).await;
    let second = Forwarder::start(real_host(&db.url)).await;
    settings.database_url = with_hosts(
        &db.url,
        &format!("127.0.0.1:{},127.0.0.1:{}", first.port, second.port),
        "target_session_attrs=read-write",
    );
    let server = start(settings, db, dir).await;
    let (_, token) = server.device().await;
    assert_eq!(server.deposit(&token).await.0, 201);
    assert!(first.accepted.load(Ordering::SeqCst) > 0);
    assert_eq!(
        second.accepted.load(Ordering::SeqCst),
        0,
        "the second host is not used while the first serves"
    );

    first.cut();
    let cut = Instant::now();
    let mut answers = Vec::new();
    let serving_again = loop {
        let (status, _, body) = server.deposit(&token).await;
        assert!(status == 201 || status == 503, "{status} {body}");
        answers.push(status);
        if status == 201 {
            break cut.elapsed();
        }
        assert!(cut.elapsed() < Duration::from_secs(15), "still {answers:?}");
    };
    assert_eq!(server.ready().await, 200);
    assert!(second.accepted.load(Ordering::SeqCst) > 0);
    eprintln!("served again {serving_again:?} after the first host went away; answers {answers:?}");
}
