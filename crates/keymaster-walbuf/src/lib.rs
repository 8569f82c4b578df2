//! A SQLite VFS shim for keymaster's one writer connection: the frames a commit appends to the
//! WAL reach the file in one `pwrite` instead of two per frame.
//!
//! SQLite writes each WAL frame as two writes, its 24-byte header and then its page. Under load
//! the writer commits batches of tens of pages, and without this shim those `pwrite`s take
//! 28 % of the writer thread's time (the kernel's per-call and per-page work, not the copying;
//! measured with `perf`). This shim buffers writes that append to the WAL and writes the buffer
//! out when SQLite syncs the WAL at commit.
//!
//! What keeps it safe:
//!
//! - Only files opened with `SQLITE_OPEN_WAL` are wrapped. The database file, its shared memory
//!   (the wal-index) and every other file go straight to the default VFS.
//! - Any call on the WAL file other than an appending write (a read, a write elsewhere, truncate,
//!   size, file control) first writes the buffer out, so the file never looks different to
//!   SQLite than without the shim. (Closing drops it: only an uncommitted transaction's frames
//!   can be left then.)
//! - SQLite publishes a commit to other connections (the wal-index header) only after its frames
//!   are written and, with `synchronous=FULL`, after `xSync` on the WAL. The shim writes the
//!   buffer out in that `xSync` and returns its error, so no reader sees a frame that is not in
//!   the file, and a failed write fails the commit.
//! - That commit `xSync` (flags `SQLITE_SYNC_NORMAL`) does not call `fdatasync`: keymaster's
//!   writer makes the WAL durable on its own sync thread before it reports any commit as done,
//!   exactly as with `synchronous=NORMAL`. With `checkpoint_fullfsync=ON`, SQLite passes
//!   `SQLITE_SYNC_FULL` instead for the syncs that order writes (the WAL before a checkpoint
//!   copies it into the database, a new WAL header), and those are real.
//!
//! So a connection must run `PRAGMA synchronous=FULL` and `PRAGMA checkpoint_fullfsync=ON`
//! with "powersafe overwrite" on (SQLite's default; without it a commit is padded and synced
//! halfway), and be the only writer of the database; [`open`] sets and checks the first three.
//! This crate holds all of keymaster's `unsafe` code, which is also why the checkpointer's paced
//! writeback of the database file ([`writeback`], `sync_file_range`) lives here.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use rusqlite::ffi;
use rusqlite::{Connection, OpenFlags};

pub mod writeback;

/// The name the shim is registered under.
pub const VFS_NAME: &CStr = c"keymaster-walbuf";

/// Buffered bytes from which an appending write goes out before the commit's sync: bounds the
/// memory a very large transaction can hold here.
const MAX_BUFFER: usize = 1 << 20;

/// Largest write passed to the default VFS: its `unixWrite` writes at most 128 KiB - 1 bytes per
/// `pwrite` (it masks the length with `0x1ffff`) and reports a full disk when a `pwrite` writes
/// nothing, which a length of exactly 128 KiB would.
const MAX_WRITE: usize = 64 << 10;

/// Writes the shim passed to the default VFS for WAL files, and the real syncs of WAL files:
/// process-wide counts, for tests and diagnostics.
static WAL_WRITES: AtomicU64 = AtomicU64::new(0);
static WAL_SYNCS: AtomicU64 = AtomicU64::new(0);

/// Process-wide counts of the shim's WAL operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Writes passed to the default VFS (each one `pwrite`).
    pub writes: u64,
    /// `fdatasync`s passed to the default VFS.
    pub syncs: u64,
}

/// The counts so far.
pub fn counts() -> Counts {
    Counts {
        writes: WAL_WRITES.load(Ordering::Relaxed),
        syncs: WAL_SYNCS.load(Ordering::Relaxed),
    }
}

/// Opens `path` (read-write, created if missing) through the shim, with the settings the shim
/// relies on, and checks them. The caller must not change `synchronous` or
/// `checkpoint_fullfsync` on the connection afterwards, and must be the only process writing the
/// database (see `wal_close` for why).
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    register()?;
    let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), VFS_NAME)?;
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA checkpoint_fullfsync=ON;")?;
    let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    let full: i64 = conn.query_row("PRAGMA checkpoint_fullfsync", [], |r| r.get(0))?;
    // Without "powersafe overwrite" (a `psow=0` URI), SQLite pads a commit to a sector boundary
    // and syncs in the middle of the padding (`walWriteToLog`), so the end of the commit would
    // still be in the buffer when the commit is published.
    let mut psow: c_int = -1;
    // SAFETY: the handle is open; the file control only reads the flag into `psow`.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_POWERSAFE_OVERWRITE,
            (&mut psow as *mut c_int).cast(),
        )
    };
    if sync != 2 || full != 1 || rc != ffi::SQLITE_OK || psow != 1 {
        return Err(rusqlite::Error::SqliteFailure(
            ffi::Error::new(ffi::SQLITE_MISUSE),
            Some(format!(
                "{}: needs synchronous=FULL, checkpoint_fullfsync=ON and powersafe overwrite, \
                 got {sync}, {full} and {psow} (rc {rc})",
                VFS_NAME.to_string_lossy()
            )),
        ));
    }
    Ok(conn)
}

/// Registers the shim (once per process) over the default VFS, without making it the default.
pub fn register() -> rusqlite::Result<()> {
    static REGISTERED: OnceLock<Result<(), c_int>> = OnceLock::new();
    let rc = *REGISTERED.get_or_init(|| {
        // SAFETY: sqlite3_initialize and sqlite3_vfs_find are safe to call at any time; the
        // default VFS lives as long as the process.
        let root = unsafe {
            let rc = ffi::sqlite3_initialize();
            if rc != ffi::SQLITE_OK {
                return Err(rc);
            }
            ffi::sqlite3_vfs_find(ptr::null())
        };
        if root.is_null() {
            return Err(ffi::SQLITE_ERROR);
        }
        // SAFETY: `root` is a valid VFS; ours is leaked so it lives as long as the process, as
        // a registered VFS must.
        unsafe {
            let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
                iVersion: 2,
                szOsFile: (REAL_AT + (*root).szOsFile as usize) as c_int,
                mxPathname: (*root).mxPathname,
                pNext: ptr::null_mut(),
                zName: VFS_NAME.as_ptr(),
                pAppData: root.cast(),
                xOpen: Some(x_open),
                xDelete: Some(x_delete),
                xAccess: Some(x_access),
                xFullPathname: Some(x_full_pathname),
                xDlOpen: Some(x_dl_open),
                xDlError: Some(x_dl_error),
                xDlSym: Some(x_dl_sym),
                xDlClose: Some(x_dl_close),
                xRandomness: Some(x_randomness),
                xSleep: Some(x_sleep),
                xCurrentTime: Some(x_current_time),
                xGetLastError: Some(x_get_last_error),
                xCurrentTimeInt64: Some(x_current_time_int64),
                xSetSystemCall: None,
                xGetSystemCall: None,
                xNextSystemCall: None,
            }));
            match ffi::sqlite3_vfs_register(vfs, 0) {
                ffi::SQLITE_OK => Ok(()),
                rc => Err(rc),
            }
        }
    });
    rc.map_err(|rc| {
        rusqlite::Error::SqliteFailure(
            ffi::Error::new(rc),
            Some("registering the WAL-buffering VFS".into()),
        )
    })
}

// --- the VFS: everything but xOpen goes to the default VFS ----------------------------------

/// The default VFS, kept in our VFS's `pAppData`.
unsafe fn root(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    (*vfs).pAppData.cast()
}

/// A wrapped WAL file. SQLite allocates `szOsFile` bytes for it; the default VFS's own file
/// object lives at offset [`REAL_AT`].
#[repr(C)]
struct WalFile {
    /// Must come first: SQLite sees a `sqlite3_file` whose methods are [`WAL_METHODS`].
    base: ffi::sqlite3_file,
    /// The default VFS's file, just after this struct.
    real: *mut ffi::sqlite3_file,
    /// Bytes written by SQLite and not yet passed on, belonging at file offset `at`.
    buf: Vec<u8>,
    at: i64,
}

/// Where the default VFS's file object starts inside ours (8-byte aligned).
const REAL_AT: usize = std::mem::size_of::<WalFile>().next_multiple_of(8);

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let root = root(vfs);
    let open = (*root).xOpen.expect("default VFS has xOpen");
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // Not a WAL: the default VFS's file object takes our space directly.
        return open(root, name, file, flags, out_flags);
    }
    let real = file.cast::<u8>().add(REAL_AT).cast::<ffi::sqlite3_file>();
    let rc = open(root, name, real, flags, out_flags);
    if rc != ffi::SQLITE_OK {
        // No methods: SQLite will not call xClose on a file that failed to open.
        (*file).pMethods = ptr::null();
        return rc;
    }
    file.cast::<WalFile>().write(WalFile {
        base: ffi::sqlite3_file {
            pMethods: &WAL_METHODS,
        },
        real,
        buf: Vec::new(),
        at: 0,
    });
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_delete(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync: c_int,
) -> c_int {
    let r = root(vfs);
    (*r).xDelete.expect("xDelete")(r, name, sync)
}

unsafe extern "C" fn x_access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    let r = root(vfs);
    (*r).xAccess.expect("xAccess")(r, name, flags, out)
}

unsafe extern "C" fn x_full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    let r = root(vfs);
    (*r).xFullPathname.expect("xFullPathname")(r, name, n, out)
}

unsafe extern "C" fn x_dl_open(vfs: *mut ffi::sqlite3_vfs, name: *const c_char) -> *mut c_void {
    let r = root(vfs);
    (*r).xDlOpen.expect("xDlOpen")(r, name)
}

unsafe extern "C" fn x_dl_error(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) {
    let r = root(vfs);
    (*r).xDlError.expect("xDlError")(r, n, out)
}

unsafe extern "C" fn x_dl_sym(
    vfs: *mut ffi::sqlite3_vfs,
    handle: *mut c_void,
    name: *const c_char,
) -> Option<unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char)> {
    let r = root(vfs);
    (*r).xDlSym.expect("xDlSym")(r, handle, name)
}

unsafe extern "C" fn x_dl_close(vfs: *mut ffi::sqlite3_vfs, handle: *mut c_void) {
    let r = root(vfs);
    (*r).xDlClose.expect("xDlClose")(r, handle)
}

unsafe extern "C" fn x_randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    let r = root(vfs);
    (*r).xRandomness.expect("xRandomness")(r, n, out)
}

unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    let r = root(vfs);
    (*r).xSleep.expect("xSleep")(r, micros)
}

unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    let r = root(vfs);
    (*r).xCurrentTime.expect("xCurrentTime")(r, out)
}

unsafe extern "C" fn x_get_last_error(
    vfs: *mut ffi::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    let r = root(vfs);
    (*r).xGetLastError.expect("xGetLastError")(r, n, out)
}

unsafe extern "C" fn x_current_time_int64(vfs: *mut ffi::sqlite3_vfs, out: *mut i64) -> c_int {
    let r = root(vfs);
    (*r).xCurrentTimeInt64.expect("xCurrentTimeInt64")(r, out)
}

// --- the WAL file ----------------------------------------------------------------------------

/// Version 1: SQLite never maps or locks a WAL file through the shared-memory methods.
static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(wal_close),
    xRead: Some(wal_read),
    xWrite: Some(wal_write),
    xTruncate: Some(wal_truncate),
    xSync: Some(wal_sync),
    xFileSize: Some(wal_file_size),
    xLock: Some(wal_lock),
    xUnlock: Some(wal_unlock),
    xCheckReservedLock: Some(wal_check_reserved_lock),
    xFileControl: Some(wal_file_control),
    xSectorSize: Some(wal_sector_size),
    xDeviceCharacteristics: Some(wal_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

unsafe fn wal<'a>(file: *mut ffi::sqlite3_file) -> &'a mut WalFile {
    &mut *file.cast::<WalFile>()
}

unsafe fn methods(real: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    &*(*real).pMethods
}

/// Passes the buffered bytes to the default VFS. The buffer is emptied whether or not that
/// succeeds: after a failed write SQLite abandons the transaction whose frames these were.
unsafe fn flush(f: &mut WalFile) -> c_int {
    if f.buf.is_empty() {
        return ffi::SQLITE_OK;
    }
    let write = methods(f.real).xWrite.expect("xWrite");
    let mut rc = ffi::SQLITE_OK;
    let mut at = f.at;
    for chunk in f.buf.chunks(MAX_WRITE) {
        WAL_WRITES.fetch_add(1, Ordering::Relaxed);
        rc = write(f.real, chunk.as_ptr().cast(), chunk.len() as c_int, at);
        if rc != ffi::SQLITE_OK {
            break;
        }
        at += chunk.len() as i64;
    }
    f.buf.clear();
    rc
}

/// The WAL file with its buffer written out, and the default VFS's methods for it; or the
/// error of writing the buffer out.
unsafe fn flushed<'a>(
    file: *mut ffi::sqlite3_file,
) -> Result<(&'a mut WalFile, &'static ffi::sqlite3_io_methods), c_int> {
    let f = wal(file);
    match flush(f) {
        ffi::SQLITE_OK => {
            let m = methods(f.real);
            Ok((f, m))
        }
        rc => Err(rc),
    }
}

/// Closes without writing the buffer out: every commit is written out in its sync, so what is
/// left can only be frames of a transaction that never committed (pages SQLite spilled from a
/// full cache before a `ROLLBACK`, which makes no call on the WAL file).
///
/// Until the next write or close, such frames stay in the buffer after the `ROLLBACK` released
/// the write lock, and are written out later, beyond the WAL's last valid frame where SQLite
/// ignores them. That is harmless while this connection is the only writer. If another
/// *process* committed to the WAL in between, those late bytes could overwrite its frames:
/// hence the single-writer requirement of [`open`] (keymaster holds a lock file for it).
unsafe extern "C" fn wal_close(file: *mut ffi::sqlite3_file) -> c_int {
    let f = wal(file);
    let closed = methods(f.real).xClose.expect("xClose")(f.real);
    ptr::drop_in_place(file.cast::<WalFile>());
    closed
}

unsafe extern "C" fn wal_read(
    file: *mut ffi::sqlite3_file,
    out: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    match flushed(file) {
        Ok((f, m)) => m.xRead.expect("xRead")(f.real, out, amount, offset),
        Err(rc) => rc,
    }
}

unsafe extern "C" fn wal_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let f = wal(file);
    let appends = f.buf.is_empty() || offset == f.at + f.buf.len() as i64;
    if !appends || f.buf.len() >= MAX_BUFFER {
        let rc = flush(f);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    if f.buf.is_empty() {
        f.at = offset;
    }
    f.buf.extend_from_slice(std::slice::from_raw_parts(
        data.cast::<u8>(),
        amount as usize,
    ));
    ffi::SQLITE_OK
}

unsafe extern "C" fn wal_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    match flushed(file) {
        Ok((f, m)) => m.xTruncate.expect("xTruncate")(f.real, size),
        Err(rc) => rc,
    }
}

/// Writes the buffer out; syncs only for `SQLITE_SYNC_FULL` (see the crate's documentation).
unsafe extern "C" fn wal_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    let f = wal(file);
    let rc = flush(f);
    if rc != ffi::SQLITE_OK || flags & 0x0f != ffi::SQLITE_SYNC_FULL {
        return rc;
    }
    WAL_SYNCS.fetch_add(1, Ordering::Relaxed);
    methods(f.real).xSync.expect("xSync")(f.real, flags)
}

unsafe extern "C" fn wal_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    match flushed(file) {
        Ok((f, m)) => m.xFileSize.expect("xFileSize")(f.real, size),
        Err(rc) => rc,
    }
}

unsafe extern "C" fn wal_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let f = wal(file);
    methods(f.real).xLock.expect("xLock")(f.real, level)
}

unsafe extern "C" fn wal_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let f = wal(file);
    methods(f.real).xUnlock.expect("xUnlock")(f.real, level)
}

unsafe extern "C" fn wal_check_reserved_lock(
    file: *mut ffi::sqlite3_file,
    out: *mut c_int,
) -> c_int {
    let f = wal(file);
    methods(f.real)
        .xCheckReservedLock
        .expect("xCheckReservedLock")(f.real, out)
}

unsafe extern "C" fn wal_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    match flushed(file) {
        Ok((f, m)) => m.xFileControl.expect("xFileControl")(f.real, op, arg),
        Err(rc) => rc,
    }
}

unsafe extern "C" fn wal_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let f = wal(file);
    methods(f.real).xSectorSize.expect("xSectorSize")(f.real)
}

unsafe extern "C" fn wal_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let f = wal(file);
    methods(f.real)
        .xDeviceCharacteristics
        .expect("xDeviceCharacteristics")(f.real)
}
