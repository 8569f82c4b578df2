//! The files the server keeps on disk — the SQLite database, its `-wal` and `-shm`, the lock
//! file and the generated secret file — are readable by the server's user only (`0600`),
//! whatever the umask: they hold argon2 hashes, webhook URLs, e-mail and audit addresses, and the
//! secret that everything else is derived from.
//!
//! A new file is created `0600` before anything else opens it (SQLite gives the `-wal` and
//! `-shm` it creates the mode of the database file, so a private database file is enough for
//! them). An existing file that others can read or write — an install from before this rule — is
//! tightened at start, with one warning per file naming its role but not its path.
//!
//! Not responsible for the directory around the files (the operator's) or for what is in them.
//! On platforms without Unix modes these functions only create files.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Creates `path` (empty, mode `0600`) if it does not exist, or tightens an existing file that
/// others can read or write; returns it opened for reading and writing. `role` names the file in
/// the warning (for example `"SQLite database"`): never a path, which may name a secret's place.
pub fn create(path: &Path, role: &str) -> io::Result<File> {
    let mut new = OpenOptions::new();
    new.read(true).write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        new.mode(0o600);
    }
    match new.open(path) {
        Ok(file) => {
            // The umask can only take bits away from 0600; an unusual one (`0200`) that took the
            // owner's own is undone too, so that the file is exactly 0600.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(file)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            restrict(path, role)?;
            OpenOptions::new().read(true).write(true).open(path)
        }
        Err(e) => Err(e),
    }
}

/// Takes away every permission of group and others from `path` if it exists (the owner's stay as
/// they are); a missing file is fine. Warns, naming `role`, when it changed a mode.
///
/// By path, not through an open descriptor: closing a descriptor of a file drops every POSIX
/// lock this process holds on it, and SQLite keeps such locks on the database and its `-shm`.
pub fn restrict(path: &Path, role: &str) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = match std::fs::metadata(path) {
            Ok(meta) => meta.permissions().mode() & 0o7777,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if mode & 0o077 != 0 {
            let tightened = mode & 0o700;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(tightened))?;
            tracing::warn!(
                was = format!("{mode:04o}"),
                "the {role} was open to other users; its mode is now {tightened:04o}"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (path, role);
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_file_is_0600_and_an_open_one_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh");
        create(&fresh, "test file").unwrap();
        assert_eq!(mode(&fresh), 0o600);

        let old = dir.path().join("old");
        std::fs::write(&old, b"kept").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o666)).unwrap();
        create(&old, "test file").unwrap();
        assert_eq!(mode(&old), 0o600);
        assert_eq!(std::fs::read(&old).unwrap(), b"kept", "not truncated");

        // The owner's own choice stays: a read-only secret file is not made writable.
        let read_only = dir.path().join("read-only");
        std::fs::write(&read_only, b"s").unwrap();
        std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o444)).unwrap();
        restrict(&read_only, "test file").unwrap();
        assert_eq!(mode(&read_only), 0o400);

        restrict(&dir.path().join("missing"), "test file").unwrap();
    }
}
