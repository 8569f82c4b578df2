//! Paced writeback of a file's dirty pages, for the checkpointer's database file.
//!
//! A checkpoint copies a second's worth of WAL pages into the database's page cache, and the
//! `fdatasync` after it hands every one of those pages to the disk at once: the writer's next WAL
//! `fdatasync` (which every acknowledged write waits for) then queues behind that whole burst.
//! [`write_out_paced`] starts the writeback one slice of the file at a time and waits for each
//! slice before starting the one after the next, so that no more than two slices of the database
//! are ever queued ahead of a WAL sync. It makes nothing durable by itself (no metadata, no
//! cache flush of the device): the caller's `fdatasync` afterwards stays the one that counts,
//! and finds the data already written.

use std::fs::File;
use std::io;

/// Starts the writeback of `file`'s dirty pages slice by slice (`slice` bytes of the file each),
/// with at most two slices under writeback at once, and returns when all of it has reached the
/// device. Not a substitute for `sync_data`, which must follow for durability. On systems
/// without `sync_file_range` it does nothing.
pub fn write_out_paced(file: &File, slice: u64) -> io::Result<()> {
    imp::write_out_paced(file, slice.max(4096))
}

#[cfg(target_os = "linux")]
mod imp {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;

    pub fn write_out_paced(file: &File, slice: u64) -> io::Result<()> {
        let len = file.metadata()?.len();
        let fd = file.as_raw_fd();
        let mut previous: Option<u64> = None;
        let mut at = 0;
        while at < len {
            range(fd, at, slice, libc::SYNC_FILE_RANGE_WRITE)?;
            if let Some(before) = previous {
                wait(fd, before, slice)?;
            }
            previous = Some(at);
            at += slice;
        }
        if let Some(before) = previous {
            wait(fd, before, slice)?;
        }
        Ok(())
    }

    /// Waits until the pages of the range that are under writeback have been written.
    fn wait(fd: i32, at: u64, len: u64) -> io::Result<()> {
        range(
            fd,
            at,
            len,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    }

    fn range(fd: i32, at: u64, len: u64, flags: libc::c_uint) -> io::Result<()> {
        // SAFETY: `fd` is an open descriptor borrowed from a live `File`; sync_file_range reads
        // no memory of ours.
        let rc = unsafe { libc::sync_file_range(fd, at as i64, len as i64, flags) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub fn write_out_paced(_file: &std::fs::File, _slice: u64) -> std::io::Result<()> {
        Ok(())
    }
}
