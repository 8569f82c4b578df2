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
         ORDER BY id LIMIT +?3"
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

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: [u8; KEY_ID_LEN] = *b"old1";
    const NEW: [u8; KEY_ID_LEN] = *b"new1";

    fn blob(id: [u8; KEY_ID_LEN], rest: &str) -> Vec<u8> {
        [&id[..], rest.as_bytes()].concat()
    }

    fn db(dir: &std::path::Path) -> Connection {
        let c = Connection::open(dir.join("r.db")).unwrap();
        super::super::migrate(&c).unwrap();
        c
    }

    fn key(c: &Connection, id: &str, code_hash: &[u8], sealed: Option<Vec<u8>>) {
        c.execute(
            "INSERT INTO keys (id, tenant_id, holder_hash, code_hash, code_format, kind, algorithm,
                 secret_sealed, proven, policy, state, created_at, expires_at, max_retrievals)
             VALUES (?1, 'ten_1', ?4, ?2, 'digits', 'secret', 'secret', ?3, 0,
                 '{\"max_retrievals\":1}', 'active', 0, 9999999999999, 1)",
            params![id, code_hash, sealed, id.as_bytes()],
        )
        .unwrap();
    }

    #[test]
    fn pages_hold_only_blobs_of_other_keys_and_replacing_is_compare_and_set() {
        let dir = tempfile::tempdir().unwrap();
        let c = db(dir.path());
        for (id, sealed) in [
            ("key_a", Some(blob(OLD, "a"))),
            ("key_b", Some(blob(NEW, "b"))),
            ("key_c", Some(blob(OLD, "c"))),
            ("key_d", None),
            ("key_e", Some(blob(OLD, "e"))),
        ] {
            key(&c, id, id.as_bytes(), sealed);
        }
        c.execute(
            "INSERT INTO tenants (id, name, webhook_secret_sealed, previous_secret_sealed,
                 created_at) VALUES ('ten_1', 't', ?1, ?2, 0)",
            params![blob(NEW, "w"), blob(OLD, "p")],
        )
        .unwrap();
        assert_eq!(count_sealed_not_under(&c, NEW).unwrap(), 4);
        assert_eq!(count_sealed_not_under(&c, OLD).unwrap(), 2);

        let ids = |page: Vec<SealedBlob>| page.into_iter().map(|b| b.id).collect::<Vec<_>>();
        let first = sealed_not_under(&c, SealedPlace::KeySecret, NEW, None, 2).unwrap();
        assert_eq!(first[0].blob, blob(OLD, "a"));
        assert_eq!(ids(first), ["key_a", "key_c"]);
        let rest = sealed_not_under(&c, SealedPlace::KeySecret, NEW, Some("key_c"), 2).unwrap();
        assert_eq!(ids(rest), ["key_e"]);
        let tenants =
            sealed_not_under(&c, SealedPlace::TenantPreviousWebhook, NEW, None, 10).unwrap();
        assert_eq!(ids(tenants), ["ten_1"]);
        assert!(
            sealed_not_under(&c, SealedPlace::TenantWebhook, NEW, None, 10)
                .unwrap()
                .is_empty()
        );

        // key_c changed since its page was read: it keeps what it holds now.
        c.execute(
            "UPDATE keys SET secret_sealed = NULL WHERE id = 'key_c'",
            [],
        )
        .unwrap();
        let changes = ["key_a", "key_c"].map(|id| Resealed {
            id: id.into(),
            old: blob(OLD, &id[4..]),
            new: blob(NEW, &id[4..]),
        });
        assert_eq!(
            replace_sealed(&c, SealedPlace::KeySecret, &changes).unwrap(),
            1
        );
        let held: Option<Vec<u8>> = c
            .query_row(
                "SELECT secret_sealed FROM keys WHERE id = 'key_c'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(held, None);
        assert_eq!(count_sealed_not_under(&c, NEW).unwrap(), 2);
    }

    #[test]
    fn a_live_code_is_rehashed_unless_its_new_hash_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let c = db(dir.path());
        key(&c, "key_a", b"old-a", None);
        key(&c, "key_b", b"old-b", None);
        key(&c, "key_c", b"new-b", None);
        assert!(code_hash_in_use(&c, &[b"x".to_vec(), b"old-a".to_vec()]).unwrap());
        assert!(!code_hash_in_use(&c, &[b"new-a".to_vec()]).unwrap());

        rehash_code(&c, "key_a", b"old-a", b"new-a").unwrap();
        rehash_code(&c, "key_b", b"old-b", b"new-b").unwrap();
        let hash = |id: &str| -> Vec<u8> {
            c.query_row("SELECT code_hash FROM keys WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap()
        };
        assert_eq!(hash("key_a"), b"new-a");
        assert_eq!(hash("key_b"), b"old-b", "new-b belongs to key_c");
        assert_eq!(hash("key_c"), b"new-b");
    }
}
