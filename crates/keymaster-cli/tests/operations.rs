//! Tests of what an operator runs the built `keymaster` binary for besides the API: the JSON log
//! stream, shell completions and the man page, the systemd unit, backup and restore of a SQLite
//! database under load, and HTTPS with a certificate reload (checked with `openssl` and `curl`). Each test spawns `keymaster serve` processes of its own on
//! `127.0.0.1:0`, with their databases in temporary directories.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_keymaster")
}

/// A running `keymaster serve`, its address and every line it wrote so far on stderr and stdout.
struct Serve {
    child: Child,
    url: String,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keeps reading `pipe` into `lines` (so that the child never blocks on a full pipe), and sends
/// the address of the first line that says where the server listens.
fn drain(
    pipe: impl Read + Send + 'static,
    lines: Arc<Mutex<Vec<String>>>,
    listening: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        let mut listening = listening;
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find("listening on http") {
                if let Some(tx) = listening.take() {
                    let url: String = line[at + "listening on ".len()..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    let _ = tx.send(url);
                }
            }
            lines.lock().unwrap().push(line);
        }
    });
}

impl Serve {
    /// `keymaster serve` on the SQLite file `db`, with `envs` besides a clean environment.
    fn start(db: &Path, envs: &[(&str, &str)]) -> Serve {
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--database"])
            .arg(db)
            .current_dir(db.parent().unwrap())
            .env_remove("KEYMASTER_ADMIN_TOKEN")
            .env_remove("KEYMASTER_SECRET")
            .env_remove("KEYMASTER_LOG_FORMAT")
            .env_remove("KEYMASTER_DEMO")
            .env_remove("KEYMASTER_LISTEN")
            .env_remove("KEYMASTER_DATABASE_URL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in envs {
            cmd.env(name, value);
        }
        let mut child = cmd.spawn().expect("cannot start `keymaster serve`");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        drain(child.stderr.take().unwrap(), stderr.clone(), Some(tx));
        drain(child.stdout.take().unwrap(), stdout.clone(), None);
        let Ok(url) = rx.recv_timeout(Duration::from_secs(60)) else {
            let status = child.try_wait().ok().flatten();
            panic!(
                "`keymaster serve` printed no `listening on http://…` line (exit: {status:?}); its stderr:\n{}",
                stderr.lock().unwrap().join("\n")
            );
        };
        Serve {
            child,
            url,
            stderr,
            stdout,
        }
    }

    /// Sends SIGTERM and waits until the process has exited and both pipes are read to the end.
    fn stop(mut self) -> (Vec<String>, Vec<String>) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "serve exited with {exit:?}");
        // The readers see end-of-file once the process is gone; give them a moment to finish.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.stderr) > 1 || Arc::strong_count(&self.stdout) > 1 {
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let err = self.stderr.lock().unwrap().clone();
        let out = self.stdout.lock().unwrap().clone();
        (err, out)
    }
}

/// `GET path` over a fresh connection; the status and the answer's `x-request-id`.
fn get(url: &str, path: &str) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {response}"));
    let request_id = response
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-request-id")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no x-request-id: {response}"));
    (status, request_id)
}

#[test]
fn json_logs_are_one_object_a_line_with_the_request_id_and_no_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(
        &dir.path().join("keymaster.db"),
        &[
            ("KEYMASTER_LOG_FORMAT", "json"),
            // The request span's lines are at debug level (`tower_http`).
            ("RUST_LOG", "info,tower_http=debug"),
        ],
    );
    let (status, request_id) = get(&server.url, "/no/such/path");
    assert_eq!(status, 404);
    let (stderr, stdout) = server.stop();

    // The generated admin token is on stdout, once, and nowhere in the log stream.
    let token_lines: Vec<&String> = stdout.iter().filter(|l| l.contains("kmadmin_")).collect();
    assert_eq!(token_lines.len(), 1, "stdout: {stdout:?}");
    let token = token_lines[0]
        .split_whitespace()
        .find(|w| w.starts_with("kmadmin_"))
        .unwrap();
    assert!(
        !stderr
            .iter()
            .any(|l| l.contains(token) || l.contains("kmadmin_")),
        "the admin token is in the log stream"
    );

    let mut listening = false;
    let mut in_request = 0;
    for line in &stderr {
        let object: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        for field in ["timestamp", "level", "message"] {
            assert!(object[field].is_string(), "no top-level {field}: {line}");
        }
        if object["message"]
            .as_str()
            .unwrap()
            .contains("listening on http://")
        {
            listening = true;
        }
        if object["path"] == "/no/such/path" {
            assert_eq!(object["request_id"], request_id.as_str(), "{line}");
            in_request += 1;
        }
    }
    assert!(listening, "no JSON listening line: {stderr:?}");
    assert!(
        in_request >= 1,
        "no line logged inside the request: {stderr:?}"
    );
}

/// `keymaster ARGS`, asserted to succeed; its stdout.
fn run_ok(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "`keymaster {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completion_scripts_are_valid_and_cover_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let bash = run_ok(&["completions", "bash"]);
    let script = dir.path().join("keymaster.bash");
    std::fs::write(&script, &bash).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    for word in ["serve", "admin", "device", "service", "--database"] {
        assert!(bash.contains(word), "the bash script lacks {word}");
    }
    assert!(run_ok(&["completions", "zsh"]).starts_with("#compdef keymaster"));
    assert!(run_ok(&["completions", "fish"]).contains("complete -c keymaster"));
    let refused = Command::new(bin())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

#[test]
fn the_man_page_is_roff_with_the_commands() {
    let page = run_ok(&["man"]);
    assert!(page.contains(".TH keymaster"), "{page}");
    assert!(
        page.contains(".SH SYNOPSIS") && page.contains("serve"),
        "{page}"
    );
}

/// The unit file, its `ExecStart` pointed at the binary under test (`systemd-analyze verify`
/// checks that the program exists), written into a fresh directory.
fn unit_for_test(dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../packaging/keymaster.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/keymaster serve"));
    let path = dir.join("keymaster.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/keymaster", bin())).unwrap();
    path
}

/// The settings of the unit's `[Service]` section, in order (a key may repeat).
fn service_settings(unit: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut settings = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]" && !line.is_empty() && !line.starts_with('#') {
            let (key, value) = line.split_once('=').unwrap();
            settings.push((key.to_owned(), value.to_owned()));
        }
    }
    settings
}

#[test]
fn the_systemd_unit_is_hardened_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = unit_for_test(dir.path());
    let settings = service_settings(&std::fs::read_to_string(&path).unwrap());
    let has = |key: &str, value: &str| settings.iter().any(|(k, v)| k == key && v == value);
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "keymaster"),
        ("WorkingDirectory", "/var/lib/keymaster"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("SystemCallArchitectures", "native"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("RestrictNamespaces", "yes"),
        ("UMask", "0077"),
        ("EnvironmentFile", "-/etc/keymaster/env"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert!(has(key, value), "the unit lacks {key}={value}");
    }

    // systemd's own checks: no unknown key, no bad value (it warns and goes on, so its output
    // must be empty too), and the exposure score of its sandbox analysis.
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("this test needs `systemd-analyze`: apt-get install systemd ({e})")
        });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && !said.contains("keymaster.service"),
        "systemd-analyze verify: {said}"
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&path)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(
        security.status.success(),
        "systemd-analyze security rates the unit above 2.0: {report}{}",
        String::from_utf8_lossy(&security.stderr)
    );
}

const ADMIN_TOKEN: &str = "operations-admin-token-0123456789";

/// A tenant's app key and an enrolled service's key on the server at `url`.
async fn credentials(url: &str) -> (String, String) {
    let admin = keymaster_client::AdminClient::new(url, ADMIN_TOKEN).unwrap();
    let tenant = admin
        .create_tenant(&serde_json::from_value(serde_json::json!({"name": "acme"})).unwrap())
        .await
        .unwrap();
    let app_key = admin.create_app_key(&tenant.id).await.unwrap().token;
    let service = admin
        .create_service(
            &serde_json::from_value(
                serde_json::json!({"name": "restore-check", "domains": ["example.net"]}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    (app_key, service.token)
}

/// `keymaster ARGS` run off the async threads; its exit status, stdout and stderr.
async fn keymaster(args: Vec<std::ffi::OsString>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(bin())
            .args(args)
            .env_remove("KEYMASTER_DATABASE_URL")
            .env_remove("KEYMASTER_SECRET")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// One acknowledged deposit: when its answer arrived, its code and the secret deposited.
type Acked = (Instant, String, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_deposit_load_restores_every_key_acknowledged_before_it() {
    use base64::Engine;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keymaster.db");
    let server = Serve::start(&db, &[("KEYMASTER_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let (app_key, service_key) = credentials(&server.url).await;

    // Deposits one after another, from a task of their own, until told to stop.
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let device = keymaster_client::DeviceClient::new(&server.url, &app_key).unwrap();
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let secret =
                    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
                let request = serde_json::from_value(
                    serde_json::json!({"secret": secret, "label": "under load"}),
                )
                .unwrap();
                let deposit = device.deposit(&request).await.unwrap();
                acked
                    .lock()
                    .unwrap()
                    .push((Instant::now(), deposit.code, secret));
            }
        })
    };
    let count = |after: Instant| {
        acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _, _)| *at > after)
            .count()
    };
    let wait_for = |n: usize, after: Instant| {
        let deadline = Instant::now() + Duration::from_secs(120);
        async move {
            while count(after) < n {
                assert!(Instant::now() < deadline, "the deposits are too slow");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let start = Instant::now();
    wait_for(100, start).await;

    let backup = dir.path().join("backup.db");
    let began = Instant::now();
    let out = keymaster(vec![
        "backup".into(),
        "--database".into(),
        db.clone().into(),
        backup.clone().into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ended = Instant::now();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    // While the server runs on it, a restore is refused and leaves the database alone.
    let refused = keymaster(vec![
        "restore".into(),
        "--force".into(),
        "--database".into(),
        db.clone().into(),
        backup.clone().into(),
    ])
    .await;
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("in use"), "{message}");

    // The writer was never stopped: deposits go on being acknowledged after the backup.
    wait_for(50, ended).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let (_, _) = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();

    // A fresh directory: the backup restored, the secret file copied in apart.
    let fresh = tempfile::tempdir().unwrap();
    let restored = fresh.path().join("keymaster.db");
    std::fs::copy(
        dir.path().join("keymaster.db.secret"),
        fresh.path().join("keymaster.db.secret"),
    )
    .unwrap();
    let out = keymaster(vec![
        "restore".into(),
        "--database".into(),
        restored.clone().into(),
        backup.clone().into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Serve::start(&restored, &[("KEYMASTER_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let service = keymaster_client::ServiceClient::new(&server.url, &service_key).unwrap();
    let before: Vec<Acked> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _, _)| *at < began)
        .cloned()
        .collect();
    assert!(before.len() >= 100);
    for (_, code, secret) in &before {
        let request = serde_json::from_value(serde_json::json!({ "code": code })).unwrap();
        let got = service
            .retrieve(&request)
            .await
            .unwrap_or_else(|e| panic!("a key acknowledged before the backup is lost: {e:?}"));
        assert_eq!(got.secret.as_deref(), Some(secret.as_str()));
    }
}

/// Runs `program ARGS` in `dir`, asserted to succeed; its stdout.
fn tool(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("this test needs `{program}` (apt-get install {program}): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throw-away CA (`ca.pem`) and a server certificate `NAME.pem`/`NAME.key` for 127.0.0.1
/// signed by it.
fn certificate(dir: &Path, name: &str) {
    if !dir.join("ca.pem").exists() {
        tool(
            dir,
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=keymaster-test-ca",
            ],
        );
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
    }
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    tool(
        dir,
        "openssl",
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    tool(
        dir,
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// The subject of the certificate a new connection to `addr` is shown, checked against the CA.
fn served_subject(dir: &Path, addr: &str) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            addr,
            "-CAfile",
            "ca.pem",
            "-verify_return_error",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "openssl s_client: {text}");
    text.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| panic!("no subject: {text}"))
        .to_owned()
}

#[test]
fn https_with_a_certificate_reloaded_on_sighup_keeps_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificate(d, "keymaster-one");
    certificate(d, "keymaster-two");
    std::fs::copy(d.join("keymaster-one.pem"), d.join("cert.pem")).unwrap();
    std::fs::copy(d.join("keymaster-one.key"), d.join("key.pem")).unwrap();
    let cert = d.join("cert.pem");
    let key = d.join("key.pem");
    let server = Serve::start(
        &d.join("keymaster.db"),
        &[
            ("KEYMASTER_ADMIN_TOKEN", ADMIN_TOKEN),
            ("KEYMASTER_TLS_CERT", cert.to_str().unwrap()),
            ("KEYMASTER_TLS_KEY", key.to_str().unwrap()),
        ],
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let addr = server.url.trim_start_matches("https://").to_owned();

    let curl = |path: &str| {
        tool(
            d,
            "curl",
            &[
                "-sS",
                "--cacert",
                "ca.pem",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("{}{path}", server.url),
            ],
        )
    };
    assert_eq!(curl("/healthz"), "200");
    assert!(served_subject(d, &addr).contains("keymaster-one"));

    // A keep-alive connection, opened before the reload, with one request answered.
    let mut open = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &addr,
            "-CAfile",
            "ca.pem",
            "-verify_return_error",
        ])
        .current_dir(d)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut to_server = open.stdin.take().unwrap();
    let answers = Arc::new(Mutex::new(Vec::new()));
    drain(open.stdout.take().unwrap(), answers.clone(), None);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    // The status codes answered so far (a body has no line end, so the next status line may
    // follow it on the same line).
    let statuses = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = answers.lock().unwrap().join("\n");
            let got: Vec<String> = text
                .split("HTTP/1.1 ")
                .skip(1)
                .map(|s| s.chars().take(3).collect())
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "no answer on the open connection: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    to_server.write_all(request.as_bytes()).unwrap();
    to_server.flush().unwrap();
    assert_eq!(statuses(1), ["200"]);

    // The second certificate in place, then SIGHUP: new connections see it.
    std::fs::copy(d.join("keymaster-two.pem"), &cert).unwrap();
    std::fs::copy(d.join("keymaster-two.key"), &key).unwrap();
    let hup = |pid: u32| {
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    hup(server.child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !served_subject(d, &addr).contains("keymaster-two") {
        assert!(
            Instant::now() < deadline,
            "the certificate was not reloaded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(curl("/healthz"), "200");

    // The connection opened before the reload is still open and answers.
    to_server.write_all(request.as_bytes()).unwrap();
    to_server.flush().unwrap();
    assert_eq!(statuses(2), ["200", "200"]);

    // A reload that fails (a broken certificate) keeps the current one and the server.
    std::fs::write(&cert, "not a certificate").unwrap();
    hup(server.child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server
        .stderr
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("TLS reload failed"))
    {
        assert!(
            Instant::now() < deadline,
            "no log line about the failed reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served_subject(d, &addr).contains("keymaster-two"));
    assert_eq!(curl("/healthz"), "200");

    drop(to_server);
    let _ = open.kill();
    let _ = open.wait();
    let (stderr, _) = server.stop();
    assert!(
        !stderr.iter().any(|l| l.contains("BEGIN")),
        "key material in the log"
    );
}
