//! End-to-end tests of the built `keymaster` binary against a `keymaster serve` it spawns on
//! `127.0.0.1:0`, each test with its own database and keystore in a temporary directory. The
//! SSH test drives a real `sshd`, the QR test reads the PNG back with `zbarimg`, and the 2FA test
//! verifies with `openssl`: when one of those is missing the test fails and says which package
//! to install — it never skips.
//!
//! Modules beside this file (in `e2e/`, same test binary): `file_modes` (the modes of the files
//! `serve` creates, under permissive umasks) and `generated_keys` (server-generated private keys
//! loaded by OpenSSL, OpenSSH, Python `cryptography` and Node's `crypto`) and `handoff` (a
//! code URI through a proxy that swaps the key, and `service fetch --preview`) and `requests`
//! (an SSH login with a key that the host asked for and the laptop sent).

#[cfg(unix)]
#[path = "e2e/file_modes.rs"]
mod file_modes;
#[cfg(unix)]
#[path = "e2e/generated_keys.rs"]
mod generated_keys;
#[path = "e2e/handoff.rs"]
mod handoff;
#[path = "e2e/requests.rs"]
mod requests;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789abcdef";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_keymaster")
}

/// A running `keymaster serve` and the directory of its database and the device's keystore.
struct Server {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
    /// What the server printed on stderr before its `listening on` line.
    startup_log: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    /// `keymaster serve` with these flags besides its listen address and database.
    fn start_with(flags: &[&str]) -> Server {
        Server::start_configured(flags, |_| {})
    }

    /// [`Server::start_with`], the server's command then adjusted by `configure` (its
    /// environment).
    fn start_configured(flags: &[&str], configure: impl FnOnce(&mut Command)) -> Server {
        Server::spawn(
            Command::new(bin()),
            tempfile::tempdir().unwrap(),
            flags,
            configure,
        )
    }

    /// [`Server::start_configured`] in `dir`, run by `cmd`: the binary, or a command that ends
    /// by running it with the arguments added here.
    fn spawn(
        mut cmd: Command,
        dir: tempfile::TempDir,
        flags: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Server {
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--database"])
            .arg(dir.path().join("keymaster.db"))
            .args(flags)
            .current_dir(dir.path())
            .env("KEYMASTER_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("KEYMASTER_ALLOW_PRIVATE_WEBHOOKS", "true")
            .env_remove("KEYMASTER_DEMO")
            .env_remove("KEYMASTER_LISTEN")
            .env_remove("KEYMASTER_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        configure(&mut cmd);
        let mut child = cmd.spawn().expect("cannot start `keymaster serve`");
        // Read stderr on a thread (and keep draining it, so the server never blocks on a full
        // pipe) until the line with the address appears.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("listening on http://") {
                    if let Some(tx) = tx.take() {
                        let url = line[at + "listening on ".len()..]
                            .split_whitespace()
                            .next()
                            .unwrap()
                            .to_owned();
                        let _ = tx.send(Ok(url));
                    }
                } else if let Some(tx) = &tx {
                    let _ = tx.send(Err(line));
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut log = Vec::new();
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Ok(url)) => break url,
                Ok(Err(line)) => log.push(line),
                Err(_) => {
                    let status = child.try_wait().ok().flatten();
                    panic!(
                        "`keymaster serve` printed no `listening on http://…` line (exit: {status:?}); its stderr:\n{}",
                        log.join("\n")
                    );
                }
            }
        };
        Server {
            child,
            url,
            dir,
            startup_log: log,
        }
    }

    /// Kills the server (as `kill -9` would) and keeps its directory for another start.
    fn into_dir(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // `Drop` needs a directory to remove: an empty one stands in.
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `keymaster ARGS` with this server, its keystore, the admin token and `envs`.
    fn command(&self, args: &[&str], envs: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env("KEYMASTER_URL", &self.url)
            .env("KEYMASTER_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("KEYMASTER_KEYSTORE", self.path("keystore"))
            .env_remove("KEYMASTER_APP_KEY")
            .env_remove("KEYMASTER_SERVICE_KEY");
        for (name, value) in envs {
            cmd.env(name, value);
        }
        cmd
    }

    fn run(&self, args: &[&str], envs: &[(&str, &str)], stdin: &[u8]) -> Output {
        let mut child = self
            .command(args, envs)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs `keymaster ARGS`, asserts success, returns stdout.
    fn ok(&self, args: &[&str], envs: &[(&str, &str)]) -> String {
        self.ok_with_stdin(args, envs, b"")
    }

    fn ok_with_stdin(&self, args: &[&str], envs: &[(&str, &str)], stdin: &[u8]) -> String {
        let out = self.run(args, envs, stdin);
        assert!(
            out.status.success(),
            "`keymaster {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str], envs: &[(&str, &str)]) -> Value {
        let stdout = self.ok(args, envs);
        serde_json::from_str(&stdout).unwrap_or_else(|err| {
            panic!("`keymaster {}`: not JSON ({err}): {stdout}", args.join(" "))
        })
    }
}

/// A server with one tenant, its app key and one enrolled service.
struct Setup {
    server: Server,
    app_key: String,
    service_key: String,
}

impl Setup {
    fn new() -> Setup {
        Setup::on(Server::start())
    }

    /// The tenant, app key and service on a server already started.
    fn on(server: Server) -> Setup {
        let tenant = server.json(&["admin", "tenant", "create", "acme", "--json"], &[]);
        assert_eq!(tenant["name"], "acme");
        assert!(tenant["webhook_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_"));
        let app = server.json(
            &[
                "admin",
                "app-key",
                "create",
                tenant["id"].as_str().unwrap(),
                "--json",
            ],
            &[],
        );
        let service = server.json(
            &[
                "admin",
                "service",
                "create",
                "ssh-host",
                "--domain",
                "example.net",
                "--cidr",
                "127.0.0.0/8",
                "--json",
            ],
            &[],
        );
        assert_eq!(service["name"], "ssh-host");
        Setup {
            app_key: app["token"].as_str().unwrap().to_owned(),
            service_key: service["token"].as_str().unwrap().to_owned(),
            server,
        }
    }

    fn device(&self, args: &[&str]) -> Value {
        self.server
            .json(args, &[("KEYMASTER_APP_KEY", self.app_key.as_str())])
    }

    fn fetch(&self, args: &[&str]) -> String {
        self.server.ok(
            args,
            &[("KEYMASTER_SERVICE_KEY", self.service_key.as_str())],
        )
    }
}

/// Fails with a clear message when a peer program of a test is missing.
fn require(program: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false);
    assert!(
        found || Path::new(program).exists(),
        "this test needs `{program}`: install the Debian package `{package}` (apt-get install {package})"
    );
}

fn run_tool(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn admin_device_and_service_happy_path_with_json() {
    let s = Setup::new();
    let deposit = s.device(&[
        "device", "add", "--label", "laptop", "--ttl", "1h", "--json",
    ]);
    assert!(deposit.get("holder_token").is_none() && deposit.get("private_key").is_none());
    assert_eq!(deposit["algorithm"], "ed25519");
    let code = deposit["code"].as_str().unwrap().to_owned();
    assert_eq!(
        deposit["code_display"].as_str().unwrap().replace('-', ""),
        code
    );

    let list = s.device(&["device", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let row = &list[0];
    for field in [
        "label",
        "id",
        "code",
        "code_display",
        "status",
        "fingerprint",
        "expires_at",
    ] {
        assert!(row.get(field).is_some(), "device list lacks {field}: {row}");
    }
    assert_eq!(row["status"], "active");
    assert_eq!(row["code"], code.as_str());

    let status = s.device(&["device", "status", "laptop", "--json"]);
    assert_eq!(status["status"], "active");
    assert_eq!(status["fingerprint"], deposit["fingerprint"]);

    // A service fetches it with the code as a person would type it.
    let display = deposit["code_display"].as_str().unwrap().replace('-', " ");
    let fetched: Value =
        serde_json::from_str(&s.fetch(&["service", "fetch", &display, "--format", "json"]))
            .unwrap();
    assert_eq!(fetched["label"], "laptop");
    assert_eq!(
        fetched["proven"], true,
        "a locally made key is deposited with a proof"
    );
    assert_eq!(fetched["fingerprint"], deposit["fingerprint"]);

    let list = s.device(&["device", "list", "--json"]);
    assert_eq!(list[0]["status"], "retrieved");
    assert!(list[0]["code"].is_null(), "a dead key's code is not listed");

    // Recode and revoke a second key.
    let second = s.device(&[
        "device",
        "add",
        "--label",
        "second",
        "--code-format",
        "base32",
        "--json",
    ]);
    assert_eq!(second["code"].as_str().unwrap().len(), 24);
    let recoded = s.device(&["device", "recode", "second", "--json"]);
    assert_ne!(recoded["code"], second["code"]);
    let old = s.server.run(
        &["service", "fetch", second["code"].as_str().unwrap()],
        &[("KEYMASTER_SERVICE_KEY", s.service_key.as_str())],
        b"",
    );
    assert!(!old.status.success(), "the replaced code still works");
    s.device(&["device", "revoke", "second", "--json"]);
    let status = s.device(&["device", "status", "second", "--json"]);
    assert_eq!(status["status"], "revoked");

    let audit = s
        .server
        .json(&["admin", "audit", "--limit", "50", "--json"], &[]);
    assert!(audit["entries"].as_array().unwrap().len() >= 5);

    // The keystore is private and the secrets never reached stdout.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = s.server.path("keystore");
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("laptop.json");
        assert_eq!(mode(&file), 0o600);
        let stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert!(stored["holder_token"].as_str().unwrap().starts_with("kmh_"));
        assert!(stored["private_key"]
            .as_str()
            .unwrap()
            .contains("PRIVATE KEY"));
    }
}

#[test]
fn a_mistyped_code_is_refused_offline() {
    // A port nobody listens on: a request would fail with "cannot reach", not "mistyped".
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(bin())
        .args(["service", "fetch", "4729-1047-5518-2036"])
        .env("KEYMASTER_URL", format!("http://127.0.0.1:{port}"))
        .env("KEYMASTER_SERVICE_KEY", "kms_anything")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.contains("mistyped"), "{stderr}");
}

#[test]
fn failures_are_one_line_and_non_zero() {
    let s = Setup::new();
    for (args, envs) in [
        (vec!["device", "status", "nothing"], vec![]),
        (vec!["device", "add", "--label", "x"], vec![]), // no KEYMASTER_APP_KEY
        (
            vec!["admin", "tenant", "create", "t"],
            vec![("KEYMASTER_ADMIN_TOKEN", "wrong-but-long-enough-token")],
        ),
        (
            vec!["service", "fetch", "4729-1047-5518-2035"],
            vec![("KEYMASTER_SERVICE_KEY", s.service_key.as_str())],
        ),
        (
            vec!["device", "add", "--label", "x", "--qr", "code.gif"],
            vec![],
        ),
    ] {
        let out = s.server.run(&args, &envs, b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: not one line: {stderr}"
        );
        assert!(stderr.starts_with("keymaster: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn qr_png_reads_back_as_the_code_uri() {
    require("zbarimg", "zbar-tools");
    let s = Setup::new();
    let png = s.server.path("code.png");
    let svg = s.server.path("code.svg");
    let deposit = s.device(&[
        "device",
        "add",
        "--label",
        "qr",
        "--qr",
        png.to_str().unwrap(),
        "--json",
    ]);
    let out = run_tool(Command::new("zbarimg").args(["--quiet", "--raw"]).arg(&png));
    // The QR code commits to the key: the code URI, not the bare code.
    let uri = deposit["code_uri"].as_str().unwrap();
    assert!(uri.starts_with(&format!(
        "keymaster:{}?fp=",
        deposit["code"].as_str().unwrap()
    )));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), uri);
    // Base32 codes and SVG too (zbarimg cannot read SVG; check the file is one).
    let b32 = s.device(&[
        "device",
        "add",
        "--label",
        "qr2",
        "--code-format",
        "base32",
        "--qr",
        svg.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(b32["code"].as_str().unwrap().len(), 24);
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
}

#[test]
fn wait_reports_the_retrieving_service() {
    let s = Setup::new();
    let mut child = s
        .server
        .command(
            &["device", "add", "--label", "waiting", "--wait"],
            &[("KEYMASTER_APP_KEY", s.app_key.as_str())],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut code = None;
    let mut line = String::new();
    while code.is_none() {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no code printed");
        code = line.strip_prefix("code: ").map(|c| c.trim().to_owned());
    }
    std::thread::sleep(Duration::from_millis(300));
    s.fetch(&["service", "fetch", &code.unwrap(), "--format", "openssh"]);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "--wait failed: {stderr}");
    assert_eq!(rest.lines().last(), Some("retrieved by ssh-host"), "{rest}");
}

#[test]
fn ssh_login_with_a_key_fetched_into_authorized_keys() {
    require("ssh-keygen", "openssh-client");
    require("ssh", "openssh-client");
    require("/usr/sbin/sshd", "openssh-server");
    let s = Setup::new();
    let key = s.server.path("id_ed25519");
    run_tool(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "e2e", "-f"])
            .arg(&key),
    );
    let pubkey = key.with_extension("pub");
    let deposit = s.device(&[
        "device",
        "add",
        "--label",
        "ssh",
        "--public-key",
        pubkey.to_str().unwrap(),
        "--json",
    ]);
    let stored: Value =
        serde_json::from_slice(&std::fs::read(s.server.path("keystore/ssh.json")).unwrap())
            .unwrap();
    assert!(
        stored["private_key"].is_null(),
        "the keystore must not hold a key it did not make"
    );

    let line = s.fetch(&[
        "service",
        "fetch",
        deposit["code_display"].as_str().unwrap(),
        "--format",
        "openssh",
    ]);
    assert!(line.starts_with("ssh-ed25519 "), "{line}");
    let authorized_keys = s.server.path("authorized_keys");
    std::fs::write(&authorized_keys, &line).unwrap();

    // The fetched key is the deposited one: same ssh-keygen fingerprint.
    let fp = run_tool(Command::new("ssh-keygen").arg("-lf").arg(&authorized_keys));
    let fp = String::from_utf8_lossy(&fp.stdout).to_string();
    assert!(
        fp.contains(deposit["ssh_fingerprint"].as_str().unwrap()),
        "{fp}"
    );

    ssh_login(&s.server, &key, &authorized_keys);
}

/// Logs in with `ssh -i key` to a real `sshd` on a free loopback port that takes the keys of
/// `authorized_keys` (run as the user of the test), and asserts that the login worked.
fn ssh_login(server: &Server, key: &Path, authorized_keys: &Path) {
    let host_key = server.path("ssh_host_ed25519_key");
    run_tool(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key),
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = server.path("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {}\nAuthorizedKeysFile {}\nStrictModes no\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nPermitRootLogin prohibit-password\nPidFile none\n",
            host_key.display(),
            authorized_keys.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all("/run/sshd").ok(); // privilege separation directory sshd insists on
    let mut sshd = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = sshd.try_wait() {
            let mut err = String::new();
            sshd.stderr.take().unwrap().read_to_string(&mut err).ok();
            panic!("sshd exited ({status}): {err}");
        }
        assert!(
            Instant::now() < deadline,
            "sshd does not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sshd = Kill(sshd);
    let user = std::env::var("USER").unwrap_or_else(|_| "root".to_owned());
    let out = Command::new("ssh")
        .arg("-i")
        .arg(key)
        .args(["-p", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("{user}@127.0.0.1"))
        .arg("true")
        .output()
        .unwrap();
    drop(sshd);
    assert!(
        out.status.success(),
        "ssh login failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn two_factor_challenge_signed_on_the_device_verifies_at_the_service() {
    require("openssl", "openssl");
    let s = Setup::new();
    let deposit = s.device(&["device", "add", "--label", "2fa", "--json"]);
    let pem = s.fetch(&[
        "service",
        "fetch",
        deposit["code"].as_str().unwrap(),
        "--format",
        "pem",
    ]);
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let pem_file = s.server.path("device.pem");
    std::fs::write(&pem_file, &pem).unwrap();

    let mut challenge = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut challenge)
        .unwrap();
    let challenge_file = s.server.path("challenge");
    std::fs::write(&challenge_file, challenge).unwrap();
    let signature = s
        .server
        .ok_with_stdin(&["device", "sign", "2fa"], &[], &challenge);
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .unwrap();
    let sig_file = s.server.path("signature");
    std::fs::write(&sig_file, &signature).unwrap();

    let verify = |message: &Path| {
        Command::new("openssl")
            .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
            .arg(&pem_file)
            .arg("-in")
            .arg(message)
            .arg("-sigfile")
            .arg(&sig_file)
            .output()
            .unwrap()
    };
    let out = verify(&challenge_file);
    assert!(
        out.status.success(),
        "openssl does not accept the signature: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And it is the signature of this challenge only.
    let other = s.server.path("other");
    std::fs::write(&other, b"another challenge").unwrap();
    assert!(!verify(&other).status.success());

    // The SDK's verify_signature agrees.
    let retrieved: keymaster_client::wire::RetrievalResponse =
        serde_json::from_value(serde_json::json!({
            "retrieval_id": "r", "key_id": deposit["id"], "kind": "public", "algorithm": "ed25519",
            "public_key_pem": pem, "proven": true,
        }))
        .unwrap();
    keymaster_client::verify_signature(&retrieved, &challenge, &signature).unwrap();
    assert!(keymaster_client::verify_signature(&retrieved, b"x", &signature).is_err());
}

/// The status code of `GET path` from the server at `url` (`http://host:port`).
fn http_status(url: &str, path: &str) -> u16 {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap_or_default();
    status
        .parse()
        .unwrap_or_else(|_| panic!("no status line: {response}"))
}

#[test]
fn serve_demo_turns_the_demo_on_and_it_is_off_without() {
    assert_eq!(http_status(&Server::start().url, "/demo/"), 404);
    assert_eq!(
        http_status(&Server::start_with(&["--demo"]).url, "/demo/"),
        200
    );
}

#[test]
fn serve_refuses_the_demo_on_a_non_loopback_listen_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, demo_env) in [
        (&["--demo", "--listen", "0.0.0.0:0"][..], None),
        (&["--listen", "[::]:0"][..], Some("true")),
    ] {
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .args(flags)
            .arg("--database")
            .arg(dir.path().join("keymaster.db"))
            .current_dir(dir.path())
            .env("KEYMASTER_ADMIN_TOKEN", ADMIN_TOKEN)
            .env_remove("KEYMASTER_LISTEN")
            .env_remove("KEYMASTER_DATABASE_URL")
            .env_remove("KEYMASTER_DEMO")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(value) = demo_env {
            cmd.env("KEYMASTER_DEMO", value);
        }
        let mut child = cmd.spawn().unwrap();
        // A server that starts does not exit: give it a while, then call that a failure.
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{flags:?}: `keymaster serve` started with the demo on a public listen");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(!status.success(), "{flags:?}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{flags:?}: not one line: {stderr}"
        );
        assert!(
            stderr.starts_with("keymaster: ")
                && stderr.contains("demo")
                && stderr.contains("listen"),
            "{flags:?}: {stderr}"
        );
    }
}

/// Reads one HTTP/1.1 request (head and `content-length` body) from `stream`.
fn read_request(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut request = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        request.push_str(&line);
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    request.push_str(&String::from_utf8_lossy(&body));
    request
}

/// With the proxy variables pointing at a listener that counts its connections, a webhook
/// delivery still reaches the receiver directly, at the address the server resolved and
/// checked, and the "proxy" sees nothing. The variables are set for the server process only,
/// so they cannot leak into the other tests of this binary.
#[test]
fn webhook_delivery_ignores_proxy_variables() {
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let proxied = Arc::new(AtomicUsize::new(0));
    let count = proxied.clone();
    std::thread::spawn(move || {
        for stream in proxy.incoming() {
            count.fetch_add(1, Ordering::SeqCst);
            let Ok(mut stream) = stream else { continue };
            let _ = stream.write_all(
                b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in sink.incoming() {
            let Ok(mut stream) = stream else { continue };
            let request = read_request(&mut stream);
            let _ = stream.write_all(
                b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            let _ = tx.send(request);
        }
    });

    let server = Server::start_configured(&[], |cmd| {
        for var in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            cmd.env(var, &proxy_url);
        }
        cmd.env_remove("NO_PROXY").env_remove("no_proxy");
    });
    // A host name, so that a proxy would have to make its own DNS lookup.
    let hook = format!("http://localhost:{sink_port}/hook");
    let tenant = server.json(
        &[
            "admin",
            "tenant",
            "create",
            "acme",
            "--webhook-url",
            &hook,
            "--json",
        ],
        &[],
    );
    let app = server.json(
        &[
            "admin",
            "app-key",
            "create",
            tenant["id"].as_str().unwrap(),
            "--json",
        ],
        &[],
    );
    server.json(
        &["device", "add", "--label", "proxied", "--json"],
        &[("KEYMASTER_APP_KEY", app["token"].as_str().unwrap())],
    );

    let request = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!(
                "the webhook receiver got nothing; the proxy got {} connection(s)",
                proxied.load(Ordering::SeqCst)
            )
        });
    assert!(request.starts_with("POST /hook HTTP/1.1\r\n"), "{request}");
    assert!(request.contains("key.deposited"), "{request}");
    assert_eq!(
        proxied.load(Ordering::SeqCst),
        0,
        "a delivery went to the proxy"
    );
}
