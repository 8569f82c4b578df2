//! `keymaster backup` and `keymaster restore` of a SQLite database.
//!
//! A backup is `VACUUM INTO` through a read-only connection: one read transaction, so the copy
//! is the database as of one commit, taken while `serve` goes on writing (in WAL mode a reader
//! never blocks the writer). It holds everything committed before the backup started. It is
//! written under a temporary name, checked, made durable and only then renamed into place, so
//! a file of the final name is always a whole backup. Files are `0600`.
//!
//! A restore takes the database's lock (`lock_owner`), so it is refused while a server runs on
//! it and no server can start during it; it checks the backup, removes the old database's WAL
//! and shared-memory files (their frames would otherwise be replayed onto the restored file),
//! and renames a copy into place.
//!
//! Not in a backup: the server secret (`<database>.secret` or `KEYMASTER_SECRET`). Codes and
//! sealed secrets in the database are useless without it, which is why it is kept apart, and why
//! a restore needs the very secret the backup was made under.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::{lock_owner, MIGRATIONS};

/// Why a backup or a restore did not happen; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackupError(pub String);

/// What a backup or a restore wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Copied {
    /// The file written.
    pub file: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The schema version (migrations applied) of the copy.
    pub schema_version: i64,
}

/// Writes a consistent copy of the database at `db` to `out`, which must not exist.
pub fn backup(db: &Path, out: &Path) -> Result<Copied, BackupError> {
    if !db.is_file() {
        return Err(BackupError(format!("{}: no such database", db.display())));
    }
    if out.exists() {
        return Err(BackupError(format!(
            "{} exists; a backup never overwrites a file",
            out.display()
        )));
    }
    let partial = with_suffix(out, &format!(".partial-{}", std::process::id()));
    let result = backup_into(db, &partial).and_then(|version| {
        finish(&partial, out)?;
        Ok(version)
    });
    match result {
        Ok(schema_version) => Ok(Copied {
            file: out.to_owned(),
            bytes: size(out)?,
            schema_version,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn backup_into(db: &Path, partial: &Path) -> Result<i64, BackupError> {
    // An empty 0600 file first: `VACUUM INTO` writes into an empty file and keeps its mode.
    new_private_file(partial)?;
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| BackupError(format!("cannot open {}: {e}", db.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| BackupError(format!("{}: {e}", db.display())))?;
    let target = partial
        .to_str()
        .ok_or_else(|| BackupError(format!("{}: not a UTF-8 path", partial.display())))?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(|e| BackupError(format!("cannot back up {}: {e}", db.display())))?;
    drop(conn);
    check(partial)
}

/// Puts the backup `file` in place of the database at `db`. Refused while a server holds the
/// database's lock, and over an existing database unless `replace`.
pub fn restore(db: &Path, file: &Path, replace: bool) -> Result<Copied, BackupError> {
    // Held until the end: no server can open the database while it is being replaced.
    let _lock = lock_owner(db).map_err(|e| BackupError(format!("restore refused: {e}")))?;
    let schema_version = check(file)?;
    if db.exists() && !replace {
        return Err(BackupError(format!(
            "{} exists; restore over it with --force (its data is then lost)",
            db.display()
        )));
    }
    let partial = with_suffix(db, ".restore-partial");
    let copied = (|| {
        let _ = std::fs::remove_file(&partial);
        let mut to = new_private_file(&partial)?;
        let mut from = File::open(file)
            .map_err(|e| BackupError(format!("cannot read {}: {e}", file.display())))?;
        std::io::copy(&mut from, &mut to)
            .and_then(|_| to.flush())
            .map_err(|e| BackupError(format!("cannot write {}: {e}", partial.display())))?;
        drop(to);
        // The old database's WAL would be replayed onto the restored file: gone first.
        for stale in [with_suffix(db, "-wal"), with_suffix(db, "-shm")] {
            match std::fs::remove_file(&stale) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(BackupError(format!(
                        "cannot remove {}: {e}",
                        stale.display()
                    )))
                }
            }
        }
        finish(&partial, db)
    })();
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    Ok(Copied {
        file: db.to_owned(),
        bytes: size(db)?,
        schema_version,
    })
}

/// Checks that `file` is a whole keymaster database this version can open; its schema version.
fn check(file: &Path) -> Result<i64, BackupError> {
    let bad = |e: rusqlite::Error| {
        BackupError(format!("{} is not a usable database: {e}", file.display()))
    };
    let conn = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(bad)?;
    let verdict: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(bad)?;
    if verdict != "ok" {
        return Err(BackupError(format!(
            "{} is damaged (quick_check: {verdict})",
            file.display()
        )));
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(bad)?;
    if version < 1 {
        return Err(BackupError(format!(
            "{} is not a keymaster database",
            file.display()
        )));
    }
    if version > MIGRATIONS.len() as i64 {
        return Err(BackupError(format!(
            "{} was made by a newer keymaster (schema {version}, this one knows {})",
            file.display(),
            MIGRATIONS.len()
        )));
    }
    Ok(version)
}

/// Makes `partial` durable and renames it to `fin`, durably.
fn finish(partial: &Path, fin: &Path) -> Result<(), BackupError> {
    let io = |what: &Path, e: std::io::Error| BackupError(format!("{}: {e}", what.display()));
    File::open(partial)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(partial, e))?;
    std::fs::rename(partial, fin).map_err(|e| io(fin, e))?;
    let dir = match fin.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

/// A new, empty file readable and writable by its owner only, whatever the umask (one that
/// took the owner's own bits is undone too, as in `private_files`).
fn new_private_file(path: &Path) -> Result<File, BackupError> {
    let failed = |e: std::io::Error| BackupError(format!("cannot create {}: {e}", path.display()));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(failed)?;
    Ok(file)
}

fn size(path: &Path) -> Result<u64, BackupError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| BackupError(format!("{}: {e}", path.display())))
}

/// `keymaster.db` + `-wal` → `keymaster.db-wal`.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(dir: &Path) -> PathBuf {
        let db = dir.join("k.db");
        let conn = Connection::open(&db).unwrap();
        migrate_all(&conn);
        conn.execute_batch("PRAGMA journal_mode=WAL;").unwrap();
        db
    }

    fn migrate_all(conn: &Connection) {
        super::super::migrate(conn).unwrap();
    }

    #[test]
    fn a_backup_is_0600_checked_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(dir.path());
        let out = dir.path().join("b.sqlite");
        let copied = backup(&db, &out).unwrap();
        assert_eq!(copied.schema_version, MIGRATIONS.len() as i64);
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = backup(&db, &out).unwrap_err().0;
        assert!(again.contains("exists"), "{again}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("partial"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn restore_refuses_a_held_lock_a_foreign_file_and_an_existing_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(dir.path());
        let out = dir.path().join("b.sqlite");
        backup(&db, &out).unwrap();

        let target = dir.path().join("restored.db");
        let held = lock_owner(&target).unwrap();
        let err = restore(&target, &out, false).unwrap_err().0;
        assert!(err.contains("in use"), "{err}");
        drop(held);

        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"not a database at all, not even close to one").unwrap();
        assert!(restore(&target, &junk, false).is_err());
        assert!(!target.exists());

        restore(&target, &out, false).unwrap();
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = restore(&target, &out, false).unwrap_err().0;
        assert!(err.contains("--force"), "{err}");
        restore(&target, &out, true).unwrap();
    }

    #[test]
    fn restore_removes_the_old_write_ahead_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(dir.path());
        let out = dir.path().join("b.sqlite");
        backup(&db, &out).unwrap();
        std::fs::write(with_suffix(&db, "-wal"), b"frames of another database").unwrap();
        restore(&db, &out, true).unwrap();
        assert!(!with_suffix(&db, "-wal").exists());
    }
}
