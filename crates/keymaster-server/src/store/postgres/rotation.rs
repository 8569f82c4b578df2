//! PostgreSQL: what a rotation of the server secret reads and writes — codes of previous
//! secrets, and the pages and compare-and-set updates of the re-sealing task
//! (`store::rotation`).

use sqlx::{Connection, PgConnection};

use super::{db, is_unique_violation};
use crate::crypto::KEY_ID_LEN;
use crate::store::rotation::{Resealed, SealedBlob, SealedPlace};
use crate::store::StoreError;

/// Gives the live key `key_id` (locked by the caller), found by its code's hash under a
/// previous secret (`old`), the hash under the current one, so that the code no longer needs
/// the previous secret. In a savepoint: should another row hold the new hash already (a code
/// drawn twice: only a newer key can), the key keeps the old hash and the retrieval goes on.
pub async fn rehash_code(
    c: &mut PgConnection,
    key_id: &str,
    old: &[u8],
    new: &[u8],
) -> Result<(), StoreError> {
    let mut savepoint = c.begin().await.map_err(db)?;
    let updated = sqlx::query("UPDATE keys SET code_hash = $3 WHERE id = $1 AND code_hash = $2")
        .bind(key_id)
        .bind(old)
        .bind(new)
        .execute(&mut *savepoint)
        .await;
    match updated {
        Ok(_) => savepoint.commit().await.map_err(db),
        Err(e) if is_unique_violation(&e) => savepoint.rollback().await.map_err(db),
        Err(e) => Err(db(e)),
    }
}

/// The key of a dead code kept in `tombstones` (a replaced code, or that of a key that ended
/// before migration 9; an ended row keeps its own) whose hash is `current` or one of
/// `previous`, of `tenant` if the service is confined to one, locked.
pub async fn tombstone(
    c: &mut PgConnection,
    current: &[u8],
    previous: &[Vec<u8>],
    tenant: Option<&str>,
) -> Result<Option<(String, String, Option<String>)>, StoreError> {
    for hash in std::iter::once(current).chain(previous.iter().map(Vec::as_slice)) {
        let hit = sqlx::query_as(
            "SELECT k.id, k.tenant_id, k.label FROM tombstones t JOIN keys k ON k.id = t.key_id
             WHERE t.code_hash = $1 AND ($2::text IS NULL OR k.tenant_id = $2) FOR UPDATE OF k",
        )
        .bind(hash)
        .bind(tenant)
        .fetch_optional(&mut *c)
        .await
        .map_err(db)?;
        if hit.is_some() {
            return Ok(hit);
        }
    }
    Ok(None)
}

pub async fn code_hash_in_use(
    c: &mut PgConnection,
    hashes: &[Vec<u8>],
) -> Result<bool, StoreError> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM keys WHERE code_hash = ANY($1)")
        .bind(hashes)
        .fetch_optional(c)
        .await
        .map_err(db)?;
    Ok(found.is_some())
}

pub async fn sealed_not_under(
    c: &mut PgConnection,
    place: SealedPlace,
    current: [u8; KEY_ID_LEN],
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<SealedBlob>, StoreError> {
    let (table, column) = place.table_column();
    let sql = format!(
        "SELECT id, {column} FROM {table}
         WHERE id > $1 AND {column} IS NOT NULL
               AND substring({column} from 1 for {KEY_ID_LEN}) <> $2
         ORDER BY id LIMIT $3"
    );
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(&sql)
        .bind(after.unwrap_or(""))
        .bind(&current[..])
        .bind(i64::from(limit))
        .fetch_all(c)
        .await
        .map_err(db)?;
    Ok(rows
        .into_iter()
        .map(|(id, blob)| SealedBlob { id, blob })
        .collect())
}

pub async fn replace_sealed(
    c: &mut PgConnection,
    place: SealedPlace,
    changes: &[Resealed],
) -> Result<u64, StoreError> {
    let (table, column) = place.table_column();
    let sql = format!("UPDATE {table} SET {column} = $3 WHERE id = $1 AND {column} = $2");
    let mut replaced = 0;
    for r in changes {
        replaced += sqlx::query(&sql)
            .bind(&r.id)
            .bind(&r.old)
            .bind(&r.new)
            .execute(&mut *c)
            .await
            .map_err(db)?
            .rows_affected();
    }
    Ok(replaced)
}

pub async fn count_sealed_not_under(
    c: &mut PgConnection,
    current: [u8; KEY_ID_LEN],
) -> Result<u64, StoreError> {
    let mut total = 0u64;
    for place in SealedPlace::ALL {
        let (table, column) = place.table_column();
        let sql = format!(
            "SELECT count(*) FROM {table}
             WHERE {column} IS NOT NULL AND substring({column} from 1 for {KEY_ID_LEN}) <> $1"
        );
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(&current[..])
            .fetch_one(&mut *c)
            .await
            .map_err(db)?;
        total += n.max(0) as u64;
    }
    Ok(total)
}
