//! One real `keymaster serve` process on a PostgreSQL database, for the process tests
//! (`processes`, `failover`): started on a free loopback port with a fixed admin token and
//! secret, killed (SIGKILL) when dropped. Its stderr is kept (the last lines) so that a test that
//! fails can say what the server said.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

pub const ADMIN_TOKEN: &str = "processes-admin-token-0123456789abcdef";
pub const SECRET: &str = "processes-secret-0123456789abcdef0123456789";

/// Lines of stderr kept for a failure message.
const KEPT_LINES: usize = 40;

/// One `keymaster serve` process.
pub struct Server {
    child: Child,
    pub url: String,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// A server on `database_url` with the settings the process tests share.
    pub fn start(database_url: &str) -> Server {
        Server::start_with(database_url, &[])
    }

    /// As [`Server::start`], with `env` (`KEYMASTER_*` settings) set after the shared ones.
    pub fn start_with(database_url: &str, env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keymaster"));
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database",
                database_url,
            ])
            .env("KEYMASTER_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("KEYMASTER_SECRET", SECRET)
            .env("KEYMASTER_MIN_TTL", "1s")
            .env("KEYMASTER_SWEEP_INTERVAL", "200ms")
            .env("KEYMASTER_FAILED_RETRIEVALS_PER_MINUTE", "20")
            .env("KEYMASTER_DEMO", "false")
            // Plain lines in a failing test's message.
            .env("NO_COLOR", "1")
            // The webhook receiver of the delivery test is on loopback.
            .env("KEYMASTER_ALLOW_PRIVATE_WEBHOOKS", "true")
            .env_remove("KEYMASTER_LISTEN")
            .env_remove("KEYMASTER_DATABASE_URL");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start `keymaster serve`");
        let stderr = child.stderr.take().unwrap();
        let kept: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let (tx, rx) = mpsc::channel();
        let lines = kept.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("listening on http://") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line[at + "listening on ".len()..].trim().to_owned());
                    }
                }
                let mut lines = lines.lock().unwrap();
                if lines.len() == KEPT_LINES {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                "`keymaster serve --database {database_url}` printed no address; its stderr:\n{}",
                kept.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n")
            )
            });
        Server {
            child,
            url,
            stderr: kept,
        }
    }

    /// The last lines the server wrote on stderr.
    pub fn stderr_tail(&self) -> String {
        let lines = self.stderr.lock().unwrap();
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}
