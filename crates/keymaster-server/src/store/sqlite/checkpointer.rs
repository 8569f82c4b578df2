//! The checkpointer: its own thread and connection copy committed WAL pages into the database,
//! write them out paced, and now and then have the WAL start over (see `writer` for why a pause
//! of the writer is needed for that).
//!
//! Every acknowledged write waits for the WAL's `fdatasync`, and that waits behind whatever else
//! the disk is writing, this thread's database pages included. So the thread does not leave its
//! pages for one `fdatasync` to hand to the disk in a burst: it writes them out a slice of the
//! file at a time ([`WRITEBACK_SLICE`], `keymaster_walbuf::writeback`), then syncs. Durability
//! is untouched: SQLite's own syncs inside a checkpoint are unchanged, and the database is still
//! synced after every pass. Its work is in `/metrics` (`keymaster_sqlite_checkpoint_*`, and the
//! WAL syncs that ran beside it, `keymaster_sqlite_sync_beside_checkpoint_seconds`).

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::writer::{pause_writer, WeakWriter, Writer};
use crate::store::StoreError;

/// How often the checkpointer copies committed WAL pages into the database. Each pass copies
/// every page changed since the last one once, however often it was changed (the right-most
/// leaf of each append-only index changes at every commit), and then syncs the database. So
/// passes are a second apart: every 100 ms, those leaves are copied and synced ten times as
/// often, and deposits under `bench/run` reach about a tenth less of the ceiling. The price is
/// up to a second more of WAL to replay after a crash.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// WAL length (in frames, i.e. pages) from which the checkpointer pauses the writer so that the
/// WAL can start over: 256 MiB with 2 KiB pages, a few seconds of writes at full load. A pause
/// lasts 4–11 ms (measured under `bench/run`), so they are kept rare.
pub const RESTART_WAL_FRAMES: i64 = 131_072;
/// The slice of the database file whose pages are written out at a time after a pass: at most
/// two slices of it are queued at the disk ahead of a WAL sync (see docs/performance.md for
/// what was measured).
pub const WRITEBACK_SLICE: u64 = 1 << 20;

/// Whether the checkpointer is at work: a count that is odd during a pass (the copy and the
/// writeback after it), read by the sync thread around each WAL sync.
#[derive(Default)]
pub struct Activity(AtomicU64);

impl Activity {
    /// The count now, to give [`Activity::overlapped`] after the sync.
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// True when a pass was running at `before` or ran since.
    pub fn overlapped(&self, before: u64) -> bool {
        before % 2 == 1 || self.now() != before
    }

    fn step(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts the checkpointer: `every` ([`CHECKPOINT_EVERY`]) it copies committed WAL pages into the
/// database on `conn` (`PRAGMA wal_checkpoint(PASSIVE)`: never blocks the writer or readers;
/// SQLite syncs the WAL before copying), then writes the database out paced and syncs it. Once
/// the WAL holds `restart_frames` frames ([`RESTART_WAL_FRAMES`]) it catches up, pauses the
/// writer between transactions and copies the last frames, so that the writer's next
/// transaction starts the WAL over. Stops when the writer's channel closes, i.e. with the store.
pub fn start(
    conn: Connection,
    database: PathBuf,
    writer: &Writer,
    every: Duration,
    restart_frames: i64,
) -> Result<(), StoreError> {
    let file = File::open(&database)
        .map_err(|e| StoreError::Db(format!("cannot open {}: {e}", database.display())))?;
    let page_size: u64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(super::writer::db)?;
    let mut ckpt = Checkpointer {
        conn,
        file,
        page_size: page_size.max(512),
        writer: writer.downgrade(),
    };
    std::thread::Builder::new()
        .name("km-sqlite-ckpt".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let Some(writer) = ckpt.writer.upgrade() else {
                return;
            };
            let Some(log) = ckpt.pass(&writer) else {
                continue;
            };
            if log >= restart_frames {
                // Catch up first, so that the copy made while the writer waits is short.
                ckpt.pass(&writer);
                let started = Instant::now();
                if let Some(restartable) = pause_writer(&writer, || finish_copy(&ckpt.conn)) {
                    metrics::histogram!("keymaster_sqlite_pause_seconds")
                        .record(started.elapsed().as_secs_f64());
                    if !restartable {
                        tracing::debug!("sqlite WAL still in use by a reader; not restarted");
                    }
                }
            }
        })
        .map_err(|e| StoreError::Db(format!("cannot start checkpoint thread: {e}")))?;
    Ok(())
}

/// The checkpointer thread's state. Fields drop in order: the connection before the file.
struct Checkpointer {
    conn: Connection,
    /// The database file, for the writeback and the sync after a pass.
    file: File,
    page_size: u64,
    writer: WeakWriter,
}

impl Checkpointer {
    /// One passive checkpoint, then the database written out and synced: the frames in the WAL,
    /// or `None` when the checkpoint failed.
    fn pass(&mut self, writer: &Writer) -> Option<i64> {
        let activity = writer.activity().clone();
        activity.step();
        let written = written_bytes();
        let started = Instant::now();
        let done = checkpoint(&self.conn);
        metrics::histogram!("keymaster_sqlite_checkpoint_seconds")
            .record(started.elapsed().as_secs_f64());
        if let (Some(before), Some(after)) = (written, written_bytes()) {
            metrics::histogram!("keymaster_sqlite_checkpoint_pages")
                .record((after.saturating_sub(before) / self.page_size) as f64);
        }
        if done.is_some() {
            self.sync_database();
        }
        activity.step();
        done.map(|(log, _)| log)
    }

    /// Writes the database's dirty pages out a slice at a time, then syncs it. SQLite syncs the
    /// database only after a pass that copied the whole WAL, which under steady writes is rare;
    /// the pages copied meanwhile would all be flushed by the sync of the final copy made while
    /// the writer waits (160 ms seen). Flushing them here, off the writer's path, keeps that
    /// last sync short.
    fn sync_database(&self) {
        let started = Instant::now();
        if let Err(e) = keymaster_walbuf::writeback::write_out_paced(&self.file, WRITEBACK_SLICE) {
            tracing::warn!(error = %e, "cannot write the SQLite database file out");
        }
        let synced = Instant::now();
        metrics::histogram!("keymaster_sqlite_checkpoint_writeback_seconds")
            .record((synced - started).as_secs_f64());
        if let Err(e) = self.file.sync_data() {
            tracing::warn!(error = %e, "cannot sync the SQLite database file");
        }
        metrics::histogram!("keymaster_sqlite_checkpoint_sync_seconds")
            .record(synced.elapsed().as_secs_f64());
    }
}

/// One passive checkpoint: `(frames in the WAL, frames copied)`, or `None` when it failed.
fn checkpoint(conn: &Connection) -> Option<(i64, i64)> {
    let done: rusqlite::Result<(i64, i64)> =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(1)?, r.get(2)?))
        });
    done.map_err(|e| tracing::warn!(error = %e, "sqlite checkpoint failed"))
        .ok()
}

/// With the writer paused: copies the WAL's last frames. True when every frame was copied
/// (a reader still on an older snapshot can hold some back for a moment; tried a few times).
fn finish_copy(conn: &Connection) -> bool {
    for _ in 0..5 {
        match checkpoint(conn) {
            Some((log, copied)) if log == copied => return true,
            Some(_) => std::thread::sleep(Duration::from_micros(200)),
            None => return false,
        }
    }
    false
}

/// Bytes this thread has passed to `write`/`pwrite` so far (`wchar` of `/proc/thread-self/io`):
/// the checkpointer writes nothing but database pages, so a pass's difference is its pages.
/// `None` where the kernel does not say.
fn written_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/thread-self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|n| n.trim().parse().ok())
}
