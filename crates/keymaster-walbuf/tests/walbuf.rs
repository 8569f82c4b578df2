//! The shim against the default VFS: what one connection commits through it, others read back
//! intact (also after WAL recovery from the files alone), with fewer writes and no sync per
//! commit, while the syncs that order a checkpoint stay real.

use std::path::Path;
use std::sync::Mutex;

use keymaster_walbuf::{counts, open, Counts};
use rusqlite::{params, Connection};

/// The counts are process-wide: every test holds this while it writes through the shim, so
/// that those comparing counts see only their own.
static COUNTED: Mutex<()> = Mutex::new(());

fn writer(path: &Path) -> Connection {
    let c = open(path).unwrap();
    c.execute_batch(
        "PRAGMA page_size=2048; PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB NOT NULL);
         CREATE INDEX IF NOT EXISTS t_v ON t(v);",
    )
    .unwrap();
    c
}

/// Inserts `rows` rows of `size` bytes derived from their id, in one transaction.
fn insert(c: &Connection, first: i64, rows: i64, size: usize) {
    c.execute_batch("BEGIN IMMEDIATE").unwrap();
    insert_rows(c, first, rows, size);
    c.execute_batch("COMMIT").unwrap();
}

/// The rows of [`insert`], in the caller's transaction.
fn insert_rows(c: &Connection, first: i64, rows: i64, size: usize) {
    for id in first..first + rows {
        c.execute(
            "INSERT INTO t (id, v) VALUES (?1, ?2)",
            params![id, value(id, size)],
        )
        .unwrap();
    }
}

fn value(id: i64, size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (id as usize * 31 + i * 7) as u8)
        .collect()
}

/// Every row of `t`, checked against what `insert` wrote; returns how many there are.
fn check_rows(c: &Connection, size: usize) -> i64 {
    let mut stmt = c.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    let mut n = 0;
    for row in stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .unwrap()
    {
        let (id, v) = row.unwrap();
        assert_eq!(v, value(id, size), "row {id}");
        n += 1;
    }
    n
}

/// A connection to copies of `dir`'s `k.db` and its WAL without the shared-memory index, as
/// after a crash: SQLite rebuilds the index from the WAL's frames and checks their checksums.
fn recovered_copy(dir: &Path) -> Connection {
    std::fs::copy(dir.join("k.db"), dir.join("copy.db")).unwrap();
    std::fs::copy(dir.join("k.db-wal"), dir.join("copy.db-wal")).unwrap();
    Connection::open(dir.join("copy.db")).unwrap()
}

fn integrity(c: &Connection) -> String {
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

fn since(before: Counts) -> Counts {
    let now = counts();
    Counts {
        writes: now.writes - before.writes,
        syncs: now.syncs - before.syncs,
    }
}

#[test]
fn open_sets_the_pragmas_the_shim_relies_on() {
    let _one = COUNTED.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let c = writer(&dir.path().join("k.db"));
    let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
    let full: i64 = c
        .query_row("PRAGMA checkpoint_fullfsync", [], |r| r.get(0))
        .unwrap();
    assert_eq!((sync, full), (2, 1));
}

/// Without powersafe overwrite SQLite pads a commit and syncs halfway through the padding, which
/// the shim cannot allow: `open` refuses it.
#[test]
fn open_refuses_a_database_without_powersafe_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("file:{}?psow=0", dir.path().join("k.db").display());
    let err = open(Path::new(&uri)).expect_err("refused");
    assert!(err.to_string().contains("powersafe"), "{err}");
    assert!(open(&dir.path().join("k.db")).is_ok());
}

/// A commit of many pages is one write per 64 KiB of frames (SQLite alone makes two per frame)
/// and no sync; another connection sees it at once.
#[test]
fn a_commit_is_one_write_without_a_sync_and_visible_to_other_connections() {
    let _one = COUNTED.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let wal_len = || {
        std::fs::metadata(dir.path().join("k.db-wal"))
            .unwrap()
            .len()
    };
    let c = writer(&path);
    let reader = Connection::open(&path).unwrap();
    insert(&c, 0, 1, 300);
    for round in 0..20 {
        let (before, len) = (counts(), wal_len());
        // 20 rows of 300 bytes, in the table and in an index: ten to thirty pages.
        insert(&c, 1 + round * 20, 20, 300);
        let (done, grown) = (since(before), wal_len() - len);
        assert!(grown >= 10 * 2072, "round {round}: {grown} bytes of frames");
        assert_eq!(done.writes, grown.div_ceil(64 << 10), "round {round}");
        assert_eq!(done.syncs, 0, "round {round}");
        assert_eq!(check_rows(&reader, 300), 1 + (round + 1) * 20);
    }
}

/// The syncs that order a checkpoint (the WAL before its pages are copied into the database)
/// and a WAL restart (its new header) are real.
#[test]
fn checkpoints_and_wal_restarts_still_sync_the_wal() {
    let _one = COUNTED.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let c = writer(&dir.path().join("k.db"));
    insert(&c, 0, 50, 300);
    let before = counts();
    let busy: i64 = c
        .query_row("PRAGMA wal_checkpoint(FULL)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(busy, 0);
    assert_eq!(since(before).syncs, 1, "the WAL, before copying it");
    let before = counts();
    insert(&c, 50, 5, 300);
    assert_eq!(since(before).syncs, 1, "the restarted WAL's header");
}

/// A transaction larger than the buffer and than the page cache (so SQLite spills pages into
/// the WAL before the commit and reads them back), then restarts of the WAL: the database reads
/// back intact, also when recovered from its files alone by a fresh process's view.
#[test]
fn large_transactions_and_restarts_read_back_intact_and_recover() {
    let _one = COUNTED.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let c = writer(&path);
    c.execute_batch("PRAGMA cache_size=-256").unwrap();
    insert(&c, 0, 4000, 1000);
    for round in 0..5 {
        insert(&c, 4000 + round * 100, 100, 1000);
        if round % 2 == 0 {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
        }
    }
    let reader = Connection::open(&path).unwrap();
    assert_eq!(check_rows(&reader, 1000), 4500);
    assert_eq!(integrity(&reader), "ok");

    let recovered = recovered_copy(dir.path());
    assert_eq!(check_rows(&recovered, 1000), 4500);
    assert_eq!(integrity(&recovered), "ok");
    drop(reader);
    drop(c);
    assert_eq!(check_rows(&Connection::open(&path).unwrap(), 1000), 4500);
}

/// A transaction whose pages SQLite spilled into the WAL before a `ROLLBACK` (a call the WAL file
/// never sees) leaves nothing behind: the next commits, another connection and a recovery from
/// the files see exactly the committed rows.
#[test]
fn a_rolled_back_transaction_that_spilled_leaves_nothing_behind() {
    let _one = COUNTED.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let c = writer(&path);
    c.execute_batch("PRAGMA cache_size=-64").unwrap();
    insert(&c, 0, 10, 1000);
    let before = counts();
    c.execute_batch("BEGIN IMMEDIATE").unwrap();
    insert_rows(&c, 1000, 2000, 1000);
    assert!(
        counts().writes > before.writes,
        "the cache spilled into the WAL"
    );
    c.execute_batch("ROLLBACK").unwrap();
    insert(&c, 10, 10, 1000);
    let reader = Connection::open(&path).unwrap();
    assert_eq!(check_rows(&reader, 1000), 20);
    assert_eq!(integrity(&reader), "ok");

    let recovered = recovered_copy(dir.path());
    assert_eq!(check_rows(&recovered, 1000), 20);
    assert_eq!(integrity(&recovered), "ok");
}
