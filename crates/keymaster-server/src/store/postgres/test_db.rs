//! Tests' own databases: a store on a fresh database of the test server named by
//! `KEYMASTER_TEST_DATABASE_URL` (a maintenance URL, as for the store contract), dropped at the
//! end. Without it there is no server to ask, and the tests that need one return at once;
//! `scripts/test` sets it, so CI runs them.

use sqlx::{Connection, PgConnection};

use super::PostgresStore;

/// A store on a database of its own (named from `prefix`), with the URL and the name to drop it
/// with; `None` without a test server.
pub async fn store(prefix: &str) -> Option<(PostgresStore, String, String)> {
    let url = std::env::var("KEYMASTER_TEST_DATABASE_URL").ok()?;
    let name = crate::crypto::new_id(prefix).to_lowercase();
    let mut c = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .unwrap();
    let mut db = url::Url::parse(&url).unwrap();
    db.set_path(&format!("/{name}"));
    Some((PostgresStore::open(db.as_str()).await.unwrap(), url, name))
}

/// Closes `store` and drops its database.
pub async fn drop_db(store: PostgresStore, url: &str, name: &str) {
    drop(store);
    let mut c = PgConnection::connect(url).await.unwrap();
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::raw_sql(&sql).execute(&mut c).await.unwrap();
}
