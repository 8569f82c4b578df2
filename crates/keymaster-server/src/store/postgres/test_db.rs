//! Tests' own databases, and a deposit to fill them: a store on a fresh database of the test server named by
//! `KEYMASTER_TEST_DATABASE_URL` (a maintenance URL, as for the store contract), dropped at the
//! end. Without it there is no server to ask, and the tests that need one return at once;
//! `scripts/test` sets it, so CI runs them.

use jiff::Timestamp;
use sqlx::{Connection, PgConnection};

use super::keys::Deposit;
use super::PostgresStore;
use crate::store::{AuditRecord, NewKey};

/// A store on a database of its own (named from `prefix`), with the URL and the name to drop it
/// with; `None` without a test server.
pub async fn store(prefix: &str) -> Option<(PostgresStore, String, String)> {
    let (url, name, db) = database(prefix).await?;
    Some((PostgresStore::open(&db).await.unwrap(), url, name))
}

/// A new empty database named from `prefix` on the test server: (the server's URL, the name,
/// the database's URL); `None` without a test server.
async fn database(prefix: &str) -> Option<(String, String, String)> {
    let url = std::env::var("KEYMASTER_TEST_DATABASE_URL").ok()?;
    let name = crate::crypto::new_id(prefix).to_lowercase();
    let mut c = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .unwrap();
    let mut db = url::Url::parse(&url).unwrap();
    db.set_path(&format!("/{name}"));
    Some((url, name, db.to_string()))
}

/// [`store`] on a database that held the schema of migration `version` when `setup` ran on it
/// (rows as an older version wrote them); opening the store applied the later migrations.
pub async fn store_after(
    prefix: &str,
    version: usize,
    setup: &str,
) -> Option<(PostgresStore, String, String)> {
    let (url, name, db) = database(prefix).await?;
    let mut old = PgConnection::connect(&db).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE schema_migrations (
             version    BIGINT PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .execute(&mut old)
    .await
    .unwrap();
    for (i, sql) in super::MIGRATIONS[..version].iter().enumerate() {
        sqlx::raw_sql(sql).execute(&mut old).await.unwrap();
        sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
            .bind(i64::try_from(i + 1).unwrap())
            .execute(&mut old)
            .await
            .unwrap();
    }
    sqlx::raw_sql(setup).execute(&mut old).await.unwrap();
    old.close().await.unwrap();
    Some((PostgresStore::open(&db).await.unwrap(), url, name))
}

/// Closes `store` and drops its database.
pub async fn drop_db(store: PostgresStore, url: &str, name: &str) {
    drop(store);
    let mut c = PgConnection::connect(url).await.unwrap();
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::raw_sql(&sql).execute(&mut c).await.unwrap();
}

/// The plan PostgreSQL keeps for `sql` after five runs on a connection, made now (while the
/// tables are as the test left them, empty for most): `EXPLAIN` of the statement prepared under
/// `plan_cache_mode = force_generic_plan`, its `params` parameters all `NULL` (`docs/scaling.md`,
/// "Plans made once per connection").
pub async fn generic_plan(store: &PostgresStore, sql: &str, params: usize) -> String {
    generic_plan_typed(store, sql, &vec!["unknown"; params]).await
}

/// [`generic_plan`] with the parameters' types given (`unknown`: inferred), for a statement
/// where PostgreSQL cannot infer every one (sqlx names them all when it binds).
pub async fn generic_plan_typed(store: &PostgresStore, sql: &str, types: &[&str]) -> String {
    let mut c = store.pool.acquire().await.unwrap();
    plan_on(&mut c, sql, types).await
}

/// [`generic_plan`] in a transaction that first runs `setting` (a `SET LOCAL`), as the code
/// that runs `sql` does.
pub async fn generic_plan_after(
    store: &PostgresStore,
    setting: &str,
    sql: &str,
    params: usize,
) -> String {
    let mut c = store.pool.acquire().await.unwrap();
    sqlx::raw_sql(&format!("BEGIN; {setting}"))
        .execute(&mut *c)
        .await
        .unwrap();
    let plan = plan_on(&mut c, sql, &vec!["unknown"; params]).await;
    sqlx::raw_sql("COMMIT").execute(&mut *c).await.unwrap();
    plan
}

async fn plan_on(c: &mut sqlx::PgConnection, sql: &str, types: &[&str]) -> String {
    let params = types.len();
    let types = types.join(", ");
    let prepare = format!("SET plan_cache_mode = force_generic_plan; PREPARE p ({types}) AS {sql}");
    sqlx::raw_sql(&prepare).execute(&mut *c).await.unwrap();
    let nulls = vec!["NULL"; params].join(", ");
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN EXECUTE p({nulls})"))
        .fetch_all(&mut *c)
        .await
        .unwrap();
    sqlx::raw_sql("DEALLOCATE p; RESET plan_cache_mode")
        .execute(&mut *c)
        .await
        .unwrap();
    plan.join("\n")
}

/// A deposit of a secret key with the code hash `code` (the code's bytes: tests need no HMAC),
/// made at `at`, live for five minutes.
pub fn deposit(code: &str, at: Timestamp, max_retrievals: u32) -> Deposit {
    let id = crate::crypto::new_id("key_");
    let k = NewKey {
        id: id.clone(),
        tenant_id: "ten_test".into(),
        holder_hash: format!("holder-{id}").into_bytes(),
        code_hash: code.as_bytes().to_vec(),
        code_format: keymaster_core::wire::CodeFormat::Digits,
        label: None,
        kind: "secret",
        algorithm: "secret".into(),
        spki: None,
        secret_sealed: Some(vec![7; 40]),
        fingerprint: None,
        ssh_fingerprint: None,
        jwk_thumbprint: None,
        proven: false,
        policy: serde_json::from_value(serde_json::json!({ "max_retrievals": max_retrievals }))
            .unwrap(),
        password_hash: None,
        notify: None,
        created_at: at,
        expires_at: at + jiff::SignedDuration::from_mins(5),
        origin_network: None,
        sas_commitment: None,
    };
    let a = AuditRecord {
        at,
        actor: "app".into(),
        action: "key.deposit",
        outcome: "success".into(),
        key_id: Some(id),
        ip: None,
        detail: None,
    };
    Deposit::new(k, &a, None, None).unwrap()
}
