//! A throw-away PostgreSQL primary with one synchronous standby, built from the PostgreSQL 15
//! server binaries (Debian's `/usr/lib/postgresql/15/bin`, or `KEYMASTER_TEST_PG_BIN`) in a
//! temporary directory, on two free loopback ports: `initdb`, then `pg_basebackup -R -X stream`
//! for the standby, with `synchronous_standby_names = '*'` on the primary so that a commit is
//! acknowledged only once the standby has flushed it. That is the setup under which a fail-over
//! may lose no acknowledged write, which is what the fail-over test checks of keymaster.
//!
//! As root (CI), the binaries run as the `postgres` user (`runuser`), because `initdb` refuses
//! root; the directory is given to that user. Dropping the pair stops both servers with
//! `-m immediate` and removes the directory, also when the test failed (then the servers' logs
//! are printed first).

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Where the server binaries are unless `KEYMASTER_TEST_PG_BIN` says otherwise.
const DEFAULT_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The primary and its synchronous standby.
pub struct PgPair {
    pub primary_port: u16,
    pub standby_port: u16,
    bin: PathBuf,
    as_postgres: bool,
    dir: tempfile::TempDir,
}

impl PgPair {
    /// Builds and starts both servers and waits until the standby replicates synchronously.
    /// Panics (never skips) when the binaries are missing.
    pub fn start() -> PgPair {
        let bin = PathBuf::from(
            std::env::var("KEYMASTER_TEST_PG_BIN").unwrap_or_else(|_| DEFAULT_BIN.to_owned()),
        );
        for tool in ["initdb", "pg_ctl", "pg_basebackup", "postgres", "psql"] {
            assert!(
                bin.join(tool).is_file(),
                "{} is missing: the fail-over test needs the PostgreSQL 15 server binaries \
                 (Debian package postgresql-15, which `scripts/test` installs), or \
                 KEYMASTER_TEST_PG_BIN naming their directory",
                bin.join(tool).display()
            );
        }
        // `initdb` refuses to run as root.
        let as_postgres = std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(0)
            == 0;
        // In /tmp as root: `postgres` could not reach a TMPDIR under root's home.
        let parent = if as_postgres {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("km-failover-")
            .tempdir_in(parent)
            .unwrap();
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(dir.path()));
        }
        let (primary_port, standby_port) = two_free_ports();
        let pair = PgPair {
            primary_port,
            standby_port,
            bin,
            as_postgres,
            dir,
        };
        pair.build_primary();
        pair.build_standby();
        pair.wait_for_sync();
        pair
    }

    /// The URL of one server, for keymaster and `psql`.
    pub fn url(port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    }

    /// libpq's several-host form: whichever of the two accepts writes.
    pub fn multi_host_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
            self.primary_port, self.standby_port
        )
    }

    /// Stops the primary as a crash would: no checkpoint, no goodbye to the clients.
    pub fn crash_primary(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-D"], "primary");
    }

    /// Makes the standby the primary and waits until it accepts writes.
    pub fn promote_standby(&self) {
        self.pg_ctl(&["promote", "-w", "-t", "30", "-D"], "standby");
    }

    /// One value (or rows, one a line) from `sql` on the server at `port`.
    pub fn query(&self, port: u16, sql: &str) -> String {
        let out = run(Command::new(self.bin.join("psql")).args([
            &PgPair::url(port),
            "-XqAt",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn build_primary(&self) {
        let data = self.data("primary");
        run(self
            .tool(
                "initdb",
                &["-N", "-A", "trust", "-U", "postgres", "-E", "UTF8", "-D"],
            )
            .arg(&data));
        append(
            &data.join("postgresql.conf"),
            &format!(
                "\n# the fail-over test\n\
                 listen_addresses = '127.0.0.1'\n\
                 port = {}\n\
                 unix_socket_directories = '{}'\n\
                 max_connections = 100\n\
                 shared_buffers = 32MB\n\
                 wal_level = replica\n\
                 max_wal_senders = 4\n\
                 synchronous_commit = on\n\
                 synchronous_standby_names = '*'\n",
                self.primary_port,
                self.dir.path().display()
            ),
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all         all               trust\n\
             host  all         all  127.0.0.1/32 trust\n\
             local replication all               trust\n\
             host  replication all  127.0.0.1/32 trust\n",
        )
        .unwrap();
        self.start_server("primary");
    }

    fn build_standby(&self) {
        let data = self.data("standby");
        let port = self.primary_port.to_string();
        run(self
            .tool("pg_basebackup", &["-h", "127.0.0.1", "-p", &port])
            .args([
                "-U", "postgres", "-N", "-R", "-X", "stream", "-c", "fast", "-D",
            ])
            .arg(&data));
        // Once promoted it has no standby of its own: were it to wait for one, no commit would
        // ever return.
        append(
            &data.join("postgresql.conf"),
            &format!(
                "\n# the standby of the fail-over test\n\
                 port = {}\n\
                 synchronous_standby_names = ''\n",
                self.standby_port
            ),
        );
        self.start_server("standby");
    }

    fn wait_for_sync(&self) {
        let started = Instant::now();
        loop {
            let state = self.query(
                self.primary_port,
                "SELECT string_agg(sync_state, ',') FROM pg_stat_replication",
            );
            if state == "sync" {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the standby is not a synchronous standby after 30 s (sync_state: {state:?})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start_server(&self, name: &str) {
        let log = self.dir.path().join(format!("{name}.log"));
        run(self
            .tool("pg_ctl", &["start", "-w", "-t", "30", "-l"])
            .arg(&log)
            .arg("-D")
            .arg(self.data(name)));
    }

    fn pg_ctl(&self, args: &[&str], name: &str) {
        run(self.tool("pg_ctl", args).arg(self.data(name)));
    }

    fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A command running one of the binaries, as `postgres` when this process is root.
    fn tool(&self, name: &str, args: &[&str]) -> Command {
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(name));
            c
        } else {
            Command::new(self.bin.join(name))
        };
        command.args(args).current_dir(self.dir.path());
        command
    }

    fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for PgPair {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in ["primary", "standby"] {
                eprintln!("--- {name}.log (last lines)\n{}", self.log_tail(name));
            }
        }
        for name in ["primary", "standby"] {
            if self.data(name).join("postmaster.pid").exists() {
                let _ = self
                    .tool("pg_ctl", &["stop", "-m", "immediate", "-D"])
                    .arg(self.data(name))
                    .output();
            }
        }
        // The temporary directory removes itself (root may remove what `postgres` made).
    }
}

/// Two distinct ports nobody listens on now.
fn two_free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

fn append(file: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Runs `command` and panics with its output when it fails.
fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
