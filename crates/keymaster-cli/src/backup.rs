//! `keymaster backup` and `keymaster restore`: a SQLite database copied out while `serve` runs
//! on it, and put back while no server does. The work is `keymaster_server`'s
//! (`store::sqlite::backup`); this module reads the flags and prints what was written.
//! PostgreSQL is backed up with its own tools (docs/operations.md).

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;
use keymaster_server::config::{Database, Settings};
use keymaster_server::store::sqlite::backup;

use crate::output::Output;

/// Write a consistent copy of a SQLite database, while `keymaster serve` runs on it.
#[derive(Debug, Args)]
#[command(
    after_help = "The copy is 0600 and never overwrites a file. The server secret
(keymaster.db.secret beside the database, or KEYMASTER_SECRET) is not in it: keep the secret
apart from the backups, and restore the two together.

Examples:
  keymaster backup --database /var/lib/keymaster/keymaster.db /backup/keymaster-$(date +%F).db"
)]
pub struct BackupArgs {
    /// The SQLite database [default: keymaster.db in the working directory].
    #[arg(long, env = "KEYMASTER_DATABASE_URL", value_name = "PATH")]
    database: Option<String>,
    /// Where to write the copy (must not exist).
    file: PathBuf,
}

/// Put a backup back in place of a SQLite database; refused while a server runs on it.
#[derive(Debug, Args)]
#[command(
    after_help = "Stop the server first. The backup is checked before anything is
replaced. Put the secret the backup was made under beside the database
(keymaster.db.secret) or give it as KEYMASTER_SECRET.

Examples:
  keymaster restore --database /var/lib/keymaster/keymaster.db /backup/keymaster-2026-12-01.db"
)]
pub struct RestoreArgs {
    /// The SQLite database to restore [default: keymaster.db in the working directory].
    #[arg(long, env = "KEYMASTER_DATABASE_URL", value_name = "PATH")]
    database: Option<String>,
    /// Replace an existing database (its data is lost).
    #[arg(long)]
    force: bool,
    /// The backup to restore.
    file: PathBuf,
}

/// The SQLite file `--database` names; PostgreSQL is refused with where to look instead.
fn sqlite_path(database: Option<String>) -> anyhow::Result<PathBuf> {
    let settings = Settings {
        database_url: database.unwrap_or_else(|| Settings::default().database_url),
        ..Settings::default()
    };
    match settings.database() {
        Database::Sqlite(path) => Ok(path),
        Database::Postgres(_) => bail!(
            "backup and restore are for SQLite; back up PostgreSQL with pg_dump or \
             point-in-time recovery (docs/operations.md)"
        ),
    }
}

pub fn run_backup(args: BackupArgs, out: &Output) -> anyhow::Result<()> {
    let db = sqlite_path(args.database)?;
    let copied = backup::backup(&db, &args.file)?;
    if out.is_json() {
        out.json(&copied)?;
    } else {
        out.text(&format!(
            "backup of {} written to {} ({} bytes); the secret is not in it",
            db.display(),
            copied.file.display(),
            copied.bytes
        ))?;
    }
    Ok(())
}

pub fn run_restore(args: RestoreArgs, out: &Output) -> anyhow::Result<()> {
    let db = sqlite_path(args.database)?;
    let copied = backup::restore(&db, &args.file, args.force)?;
    if out.is_json() {
        out.json(&copied)?;
    } else {
        out.text(&format!(
            "{} restored into {} ({} bytes)",
            args.file.display(),
            db.display(),
            copied.bytes
        ))?;
    }
    warn_without_secret(&db);
    Ok(())
}

/// A restored database is useless under another secret; say so when none is in sight.
fn warn_without_secret(db: &Path) {
    let secret = keymaster_server::startup::secret_path(db);
    if !secret.exists() && std::env::var_os("KEYMASTER_SECRET").is_none() {
        eprintln!(
            "keymaster: note: {} does not exist and KEYMASTER_SECRET is not set: put the secret \
             this backup was made under there before starting the server",
            secret.display()
        );
    }
}
