//! The files `keymaster serve` keeps beside its SQLite database (the database, its `-wal` and
//! `-shm`, the lock file and the generated secret file) are `0600` whatever the umask it runs
//! under, and a start on files that others can read (an install from before this rule) tightens
//! them and says so in the log.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::{bin, Server, Setup};

/// The files of the database `keymaster.db` that must exist once a deposit is committed.
const EXPECTED: [&str; 5] = [
    "keymaster.db",
    "keymaster.db-wal",
    "keymaster.db-shm",
    "keymaster.db.lock",
    "keymaster.db.secret",
];

/// A command that runs the `keymaster` binary (with the arguments added to it) under `umask`.
fn under_umask(umask: &str) -> Command {
    let mut sh = Command::new("sh");
    // `$0` is the binary and `$@` the arguments `Server::spawn` appends.
    sh.args(["-c", &format!("umask {umask} && exec \"$0\" \"$@\""), bin()]);
    sh
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Every file in the server's directory but the device's keystore (which the CLI makes, 0700),
/// with its mode.
fn server_files(dir: &Path) -> Vec<(String, u32)> {
    let mut files: Vec<(String, u32)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name() != "keystore")
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                mode(&entry.path()),
            )
        })
        .collect();
    files.sort();
    files
}

/// Deposits one key so that the WAL holds a commit; returns the setup.
fn with_a_deposit(server: Server) -> Setup {
    let s = Setup::on(server);
    let deposit = s.device(&["device", "add", "--label", "modes", "--json"]);
    assert!(deposit["code"].is_string(), "{deposit}");
    s
}

fn assert_all_private(dir: &Path, context: &str) {
    let files = server_files(dir);
    let listed: Vec<String> = files.iter().map(|(n, m)| format!("{n} {m:04o}")).collect();
    for name in EXPECTED {
        assert!(
            files.iter().any(|(n, _)| n == name),
            "{context}: {name} is missing; the server's files: {listed:?}"
        );
    }
    for (name, mode) in &files {
        assert_eq!(
            *mode, 0o600,
            "{context}: {name} has mode {mode:04o}; the server's files: {listed:?}"
        );
    }
}

#[test]
fn files_the_server_creates_are_0600_whatever_the_umask() {
    for umask in ["000", "022"] {
        let s = with_a_deposit(Server::spawn(
            under_umask(umask),
            tempfile::tempdir().unwrap(),
            &[],
            |_| {},
        ));
        assert_all_private(s.server.dir.path(), &format!("umask {umask}"));
    }
}

#[test]
fn a_start_tightens_files_that_others_can_read() {
    let s = with_a_deposit(Server::spawn(
        under_umask("022"),
        tempfile::tempdir().unwrap(),
        &[],
        |_| {},
    ));
    // As an older keymaster left them: killed (so `-wal` and `-shm` stay), every file 0644.
    let dir = s.server.into_dir();
    for (name, _) in server_files(dir.path()) {
        std::fs::set_permissions(
            dir.path().join(&name),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    let server = Server::spawn(under_umask("022"), dir, &[], |_| {});
    assert_all_private(server.dir.path(), "after a start on 0644 files");
    let said: Vec<&String> = server
        .startup_log
        .iter()
        .filter(|line| line.contains("0600"))
        .collect();
    assert!(
        said.iter().any(|line| line.contains("secret file")),
        "the start does not say that it tightened the files: {:?}",
        server.startup_log
    );
    let dir = server.dir.path().display().to_string();
    assert!(
        said.iter().all(|line| !line.contains(&dir)),
        "the log names the files' paths: {said:?}"
    );
}
