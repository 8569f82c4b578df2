//! SQLite: what a rotation of the server secret reads and writes — codes of previous secrets,
//! and the pages and compare-and-set updates of the re-sealing task (`store::rotation`).

use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::writer::db;
use crate::crypto::KEY_ID_LEN;
use crate::store::rotation::{Resealed, SealedBlob, SealedPlace};
use crate::store::StoreError;

/// Gives the live key `key_id`, found by its code's hash under a previous secret (`old`), the
/// hash under the current one, so that the code no longer needs the previous secret. Left as it
/// is if another row holds the new hash already (a code drawn twice: only a newer key can).
pub fn rehash_code(c: &Connection, key_id: &str, old: &[u8], new: &[u8]) -> Result<(), StoreError> {
    c.prepare_cached("UPDATE OR IGNORE keys SET code_hash = ?3 WHERE id = ?1 AND code_hash = ?2")
        .and_then(|mut s| s.execute(params![key_id, old, new]))
        .map_err(db)?;
    Ok(())
}

/// The key of a replaced code (or of a key that ended before migration 3) whose hash is
/// `current` or one of `previous`, of `tenant` if the service is confined to one.
pub fn tombstone(
    c: &Connection,
    current: &[u8],
    previous: &[Vec<u8>],
    tenant: Option<&str>,
) -> Result<Option<(String, String, Option<String>)>, StoreError> {
    let mut s = c
        .prepare_cached(
            "SELECT k.id, k.tenant_id, k.label FROM tombstones t JOIN keys k ON k.id = t.key_id
             WHERE t.code_hash = ?1 AND (?2 IS NULL OR k.tenant_id = ?2)",
        )
        .map_err(db)?;
    for hash in std::iter::once(current).chain(previous.iter().map(Vec::as_slice)) {
        let hit = s
            .query_row(params![hash, tenant], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(db)?;
        if hit.is_some() {
            return Ok(hit);
        }
    }
    Ok(None)
}

pub fn code_hash_in_use(c: &Connection, hashes: &[Vec<u8>]) -> Result<bool, StoreError> {
    let mut s = c
        .prepare_cached("SELECT 1 FROM keys WHERE code_hash = ?1")
        .map_err(db)?;
    for h in hashes {
        if s.exists(params![h]).map_err(db)? {
            return Ok(true);
        }
    }
    Ok(false)
}

pub fn sealed_not_under(
    c: &Connection,
    place: SealedPlace,
    current: [u8; KEY_ID_LEN],
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<SealedBlob>, StoreError> {
    let (table, column) = place.table_column();
    let sql = format!(
        "SELECT id, {column} FROM {table}
         WHERE id > ?1 AND {column} IS NOT NULL AND substr({column}, 1, {KEY_ID_LEN}) <> ?2
         ORDER BY id LIMIT ?3"
    );
    c.prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(params![after.unwrap_or(""), &current[..], limit], |r| {
                Ok(SealedBlob {
                    id: r.get(0)?,
                    blob: r.get(1)?,
                })
            })?
            .collect()
        })
        .map_err(db)
}

pub fn replace_sealed(
    c: &Connection,
    place: SealedPlace,
    changes: &[Resealed],
) -> Result<u64, StoreError> {
    let (table, column) = place.table_column();
    let sql = format!("UPDATE {table} SET {column} = ?3 WHERE id = ?1 AND {column} = ?2");
    let mut s = c.prepare_cached(&sql).map_err(db)?;
    let mut replaced = 0;
    for r in changes {
        replaced += s.execute(params![r.id, r.old, r.new]).map_err(db)? as u64;
    }
    Ok(replaced)
}

pub fn count_sealed_not_under(
    c: &Connection,
    current: [u8; KEY_ID_LEN],
) -> Result<u64, StoreError> {
    let mut total = 0u64;
    for place in SealedPlace::ALL {
        let (table, column) = place.table_column();
        let sql = format!(
            "SELECT count(*) FROM {table}
             WHERE {column} IS NOT NULL AND substr({column}, 1, {KEY_ID_LEN}) <> ?1"
        );
        let n: i64 = c
            .query_row(&sql, params_from_iter([&current[..]]), |r| r.get(0))
            .map_err(db)?;
        total += n.max(0) as u64;
    }
    Ok(total)
}
