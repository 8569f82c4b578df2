//! `keymaster device …`: a device depositing keys and managing them afterwards. `add` makes or
//! reads the key, deposits it with `KEYMASTER_APP_KEY`, keeps what it must in the [`Keystore`]
//! and shows the code; the other commands use the holder token kept there. Private keys and
//! holder tokens are never printed.

use std::io::Read;
use std::path::PathBuf;
use std::pin::pin;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use keymaster_client::wire::{CodeFormat, DepositRequest, Event, KeyStatus, PolicyInput};
use keymaster_client::{DeviceClient, HolderClient};
use keymaster_core::handoff::{decode_32, sas, sas_commitment, Bytes32};
use keymaster_core::key::PublicKey;
use serde_json::json;

use crate::keystore::{Entry, Keystore};
use crate::output::Output;
use crate::qr::{self, QrFile};
use crate::remote::{credential, ServerArg};

/// Deposit keys from this device and manage them.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  export KEYMASTER_APP_KEY=kma_…
  keymaster device add --label github.com --ttl 1h --wait
  keymaster device add --label laptop --public-key ~/.ssh/id_ed25519.pub --qr code.png
  keymaster device list
  echo -n challenge | keymaster device sign github.com

The keystore is KEYMASTER_KEYSTORE, or keymaster/ under the user's data directory.")]
pub struct DeviceArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(subcommand)]
    command: DeviceCommand,
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Deposit a key and print its code, a QR code and the fingerprint.
    Add(AddArgs),
    /// List the keys in the keystore with their status at the key master.
    #[command(after_help = "Examples:
  keymaster device list
  keymaster device list --json

A key the key master no longer knows (gone for more than 7 days) is listed as `purged`.")]
    List,
    /// Show a key's status and history.
    #[command(after_help = "Examples:
  keymaster device status github.com
  keymaster device status github.com --json")]
    Status {
        /// The key's label.
        label: String,
    },
    /// Remove a key from the key master at once (the keystore keeps its private key).
    #[command(after_help = "Examples:
  keymaster device revoke github.com")]
    Revoke {
        /// The key's label.
        label: String,
    },
    /// Get a fresh code for a key; the old code stops working at once.
    #[command(after_help = "Examples:
  keymaster device recode github.com
  keymaster device recode github.com --json")]
    Recode {
        /// The key's label.
        label: String,
    },
    /// Answer a service's enrolment request: show who asks, then send it a key.
    Answer(crate::requests::AnswerArgs),
    /// Sign the bytes read from stdin with a key's private key; prints the base64 signature.
    #[command(after_help = "Examples:
  printf '%s' \"$CHALLENGE\" | keymaster device sign github.com
  keymaster device sign github.com < challenge.bin --json")]
    Sign {
        /// The key's label.
        label: String,
    },
}

/// `device add`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  keymaster device add --label github.com
  keymaster device add --label bastion --public-key ~/.ssh/id_ed25519.pub --ttl 15m --wait
  keymaster device add --label phone --generate-on-server --code-format base32 --qr code.svg
  keymaster device add --label vault --password 'correct horse' --json

Without --public-key or --generate-on-server an Ed25519 pair is made here and its private key
kept in the keystore; the deposit carries a proof of possession.")]
struct AddArgs {
    /// A name for the key; the keystore file and the other device commands use it.
    #[arg(long, value_parser = parse_label)]
    label: String,
    /// Deposit this public key file (PEM or an OpenSSH .pub line); its private key stays where it is.
    #[arg(long, value_name = "FILE", conflicts_with = "generate_on_server")]
    public_key: Option<PathBuf>,
    /// Let the key master make an Ed25519 pair; its private key is kept in the keystore.
    #[arg(long)]
    generate_on_server: bool,
    /// The code's format [server default: digits].
    #[arg(long, value_enum)]
    code_format: Option<CodeFormatArg>,
    /// How long the key may wait for retrieval, e.g. 10m, 1h, 30d [server default: 1 day].
    #[arg(long, value_parser = parse_ttl, value_name = "DURATION")]
    ttl: Option<i64>,
    /// A password the retrieving service must present.
    #[arg(long, value_name = "P")]
    password: Option<String>,
    /// Also write the QR code to FILE.png or FILE.svg.
    #[arg(long, value_name = "FILE.png|FILE.svg")]
    qr: Option<QrFile>,
    /// Follow the key's events until it is retrieved, and say by whom.
    #[arg(long)]
    wait: bool,
    /// Commit to a SAS nonce at deposit, wait for the retrieving service to ask, reveal it and
    /// print the six digits to compare with the service's (`compare: 123 456`). Not with
    /// --generate-on-server: a key the key master made is not one it could be caught swapping.
    #[arg(long, conflicts_with = "generate_on_server")]
    verify: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CodeFormatArg {
    Digits,
    Base32,
}

impl From<CodeFormatArg> for CodeFormat {
    fn from(arg: CodeFormatArg) -> Self {
        match arg {
            CodeFormatArg::Digits => CodeFormat::Digits,
            CodeFormatArg::Base32 => CodeFormat::Base32,
        }
    }
}

/// A lifetime such as `250ms`, `5s`, `1h`, `30d`, in whole seconds.
pub(crate) fn parse_ttl(text: &str) -> Result<i64, String> {
    let duration = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    if duration.subsec_nanos() != 0 || duration.as_secs() == 0 {
        return Err("the lifetime must be a whole number of seconds, at least 1s".to_owned());
    }
    i64::try_from(duration.as_secs()).map_err(|_| "the lifetime is too long".to_owned())
}

/// A label the key master would accept (no control, bidi control or invisible characters),
/// checked before a key is made or anything is sent.
pub(crate) fn parse_label(text: &str) -> Result<String, String> {
    keymaster_core::label::Label::parse(text)
        .map(keymaster_core::label::Label::into_string)
        .map_err(|err| err.to_string())
}

/// Runs one `device` command.
pub async fn run(args: DeviceArgs, out: &Output) -> anyhow::Result<()> {
    let store = Keystore::locate()?;
    let server = args.server.url.as_str();
    match args.command {
        DeviceCommand::Add(add_args) => add(add_args, server, &store, out).await,
        DeviceCommand::List => list(server, &store, out).await,
        DeviceCommand::Answer(answer_args) => {
            crate::requests::answer(answer_args, server, &store, out).await
        }
        DeviceCommand::Status { label } => {
            let entry = store.load(&label)?;
            let status = holder(server, &entry)?
                .status()
                .await
                .with_context(|| format!("cannot get the status of {label:?}"))?;
            if out.is_json() {
                return out.json(&status);
            }
            out.text(&status_text(&entry, &status))
        }
        DeviceCommand::Revoke { label } => {
            let mut entry = store.load(&label)?;
            holder(server, &entry)?
                .revoke()
                .await
                .with_context(|| format!("cannot revoke {label:?}"))?;
            entry.code = None;
            entry.code_display = None;
            store.save(&entry)?;
            if out.is_json() {
                return out.json(&json!({"label": label, "id": entry.key_id, "status": "revoked"}));
            }
            out.text(&format!("revoked {label}"))
        }
        DeviceCommand::Recode { label } => {
            let mut entry = store.load(&label)?;
            let recoded = holder(server, &entry)?
                .recode()
                .await
                .with_context(|| format!("cannot get a new code for {label:?}"))?;
            entry.code = Some(recoded.code.clone());
            entry.code_display = Some(recoded.code_display.clone());
            entry.expires_at = recoded.expires_at;
            store.save(&entry)?;
            if out.is_json() {
                return out.json(&recoded);
            }
            // The QR code commits to the key (code URI) when the key has an SPKI.
            let qr_text = recoded.code_uri.as_deref().unwrap_or(&recoded.code);
            let uri = recoded
                .code_uri
                .as_deref()
                .map(|uri| format!("\nuri: {uri}"))
                .unwrap_or_default();
            out.text(&format!(
                "code: {}{uri}\n{}\nexpires: {}",
                recoded.code_display,
                qr::terminal(qr_text)?,
                recoded.expires_at
            ))
        }
        DeviceCommand::Sign { label } => {
            let entry = store.load(&label)?;
            let private_key = entry.private_key.as_deref().ok_or_else(|| {
                anyhow!("the keystore holds no private key for {label:?}: its public key was deposited from a file, so sign with the tool that holds that file's private key")
            })?;
            let mut message = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut message)
                .context("cannot read the message from stdin")?;
            let signature = base64::engine::general_purpose::STANDARD
                .encode(crypto::sign(private_key, &message)?);
            if out.is_json() {
                return out.json(
                    &json!({"label": label, "algorithm": entry.algorithm, "signature": signature}),
                );
            }
            out.text(&signature)
        }
    }
}

fn holder(server: &str, entry: &Entry) -> anyhow::Result<HolderClient> {
    Ok(HolderClient::new(
        server,
        &entry.key_id,
        &entry.holder_token,
    )?)
}

/// What `add` deposits.
enum Material {
    /// A pair made here: the private key goes to the keystore.
    Local(crypto::LocalPair),
    /// A public key read from a file; its private key is not ours.
    File(String),
    /// The key master makes the pair and hands the private key over once.
    Server,
}

async fn add(args: AddArgs, server: &str, store: &Keystore, out: &Output) -> anyhow::Result<()> {
    let app_key = credential("KEYMASTER_APP_KEY", "the tenant's app key (kma_…)")?;
    // Everything that can fail locally fails before the key exists at the key master.
    store.ensure_dir()?;
    if store.contains(&args.label)? {
        bail!(
            "the keystore already has a key labelled {:?}: choose another label",
            args.label
        );
    }
    let material = match (&args.public_key, args.generate_on_server) {
        (Some(path), _) => Material::File(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the public key {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        (None, true) => Material::Server,
        (None, false) => Material::Local(crypto::LocalPair::generate()?),
    };
    let mut request = DepositRequest {
        label: Some(args.label.clone()),
        code_format: args.code_format.map(CodeFormat::from),
        ..Default::default()
    };
    if args.ttl.is_some() || args.password.is_some() {
        request.policy = Some(PolicyInput {
            ttl_seconds: args.ttl,
            password: args.password.clone(),
            ..Default::default()
        });
    }
    match &material {
        Material::Local(pair) => {
            request.public_key = Some(pair.public_pem.clone());
            request.proof = Some(pair.proof.clone());
        }
        Material::File(text) => request.public_key = Some(text.clone()),
        Material::Server => request.generate = Some("ed25519".to_owned()),
    }

    // The device's SAS nonce: only its commitment goes with the deposit.
    let nd: Bytes32 = rand::random();
    if args.verify {
        request.sas_commitment = Some(sas_commitment(&nd));
    }
    let device = DeviceClient::new(server, &app_key)?;
    let mut deposit = device
        .deposit(&request)
        .await
        .context("cannot deposit the key")?;
    // Neither private key form stays in `deposit`, which the output below prints: the keystore
    // keeps the PKCS#8 form of a server-made pair, and the OpenSSH form is dropped (zeroized).
    let server_private_key = deposit.private_key.take();
    deposit.private_key_openssh = None;
    let (private_key, public_key) = match material {
        Material::Local(pair) => (Some(pair.private_pem), Some(pair.public_pem)),
        Material::File(text) => (None, Some(text)),
        Material::Server => (server_private_key, None),
    };
    let entry = Entry {
        label: args.label.clone(),
        key_id: deposit.id.clone(),
        holder_token: deposit.holder_token.clone(),
        code: Some(deposit.code.clone()),
        code_display: Some(deposit.code_display.clone()),
        private_key,
        public_key,
        algorithm: deposit.algorithm.clone(),
        fingerprint: deposit.fingerprint.clone(),
        expires_at: deposit.expires_at,
    };
    if let Err(err) = store.save(&entry) {
        // Without the holder token nobody could manage the key: take it back.
        let revoked = holder(server, &entry)?.revoke().await;
        return Err(err.context(match revoked {
            Ok(()) => "the deposit was revoked again",
            Err(_) => "the deposit could not be revoked; it expires by itself",
        }));
    }

    // The QR code commits to the key (code URI) when the key has an SPKI, so that a service
    // that scans it can tell a swapped key; a secret's QR code holds the code alone.
    let qr_text = deposit.code_uri.as_deref().unwrap_or(&deposit.code);
    if out.is_json() {
        let mut body = serde_json::to_value(&deposit).context("cannot encode the deposit")?;
        if let Some(map) = body.as_object_mut() {
            map.remove("holder_token");
        }
        out.json(&body)?;
    } else {
        let uri = deposit
            .code_uri
            .as_deref()
            .map(|uri| format!("\nuri: {uri}"))
            .unwrap_or_default();
        let mut text = format!(
            "label: {}\ncode: {}{uri}\n{}",
            entry.label,
            deposit.code_display,
            qr::terminal(qr_text)?
        );
        for (name, value) in [
            ("fingerprint", &deposit.fingerprint),
            ("ssh fingerprint", &deposit.ssh_fingerprint),
        ] {
            if let Some(value) = value {
                text.push_str(&format!("\n{name}: {value}"));
            }
        }
        text.push_str(&format!("\nexpires: {}", deposit.expires_at));
        out.text(&text)?;
    }
    if let Some(file) = &args.qr {
        qr::write(qr_text, file)?;
    }
    if args.wait {
        wait_for_retrieval(&holder(server, &entry)?, out).await?;
    }
    if args.verify {
        let key = entry
            .public_key
            .as_deref()
            .map(PublicKey::parse)
            .transpose()
            .context("cannot read the deposited key")?
            .ok_or_else(|| anyhow!("the keystore holds no public key for {:?}", entry.label))?;
        let (retrieval_id, ns) = wait_for_sas_request(&holder(server, &entry)?).await?;
        holder(server, &entry)?
            .reveal_sas(&retrieval_id, &nd)
            .await
            .context("cannot reveal the SAS nonce")?;
        let code = sas(key.spki_der(), &nd, &ns);
        if out.is_json() {
            out.json(&json!({ "retrieval_id": retrieval_id, "sas": code.to_string() }))?;
        } else {
            out.text(&format!("compare: {code}"))?;
        }
    }
    Ok(())
}

/// Follows the key's events until a service asks for the SAS (`sas.requested`), and returns
/// the retrieval and the service's nonce. A dropped stream is resumed.
async fn wait_for_sas_request(holder: &HolderClient) -> anyhow::Result<(String, Bytes32)> {
    let mut last_id: Option<String> = None;
    for _ in 0..8 {
        let mut events = pin!(holder.events(last_id.as_deref()));
        while let Some(item) = events.next().await {
            match item {
                Ok(event) => {
                    last_id = Some(event.id.clone());
                    if event.event_type != "sas.requested" {
                        continue;
                    }
                    let nonce = event.data.nonce.as_deref().and_then(decode_32);
                    match (event.data.retrieval_id, nonce) {
                        (Some(retrieval_id), Some(ns)) => return Ok((retrieval_id, ns)),
                        _ => bail!("the key master sent a malformed SAS request"),
                    }
                }
                Err(err @ keymaster_client::Error::Api { .. }) => {
                    return Err(anyhow!(err).context("cannot follow the key's events"))
                }
                Err(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("the key's event stream ended before a service asked for the SAS")
}

/// How a followed key ended, as far as `--wait` is concerned.
enum Outcome {
    Retrieved(Box<Event>),
    Gone(&'static str),
}

/// The outcome an event means, if it ends the wait.
fn outcome(event: &Event) -> Option<Outcome> {
    match event.event_type.as_str() {
        "key.retrieved" => Some(Outcome::Retrieved(Box::new(event.clone()))),
        "key.expired" => Some(Outcome::Gone("the key expired before it was retrieved")),
        "key.revoked" => Some(Outcome::Gone("the key was revoked before it was retrieved")),
        "key.locked" => Some(Outcome::Gone(
            "the key is locked after too many wrong passwords",
        )),
        _ => None,
    }
}

/// Statuses of a key that no longer lives (or can no longer be retrieved).
fn is_final(status: &str) -> bool {
    matches!(status, "retrieved" | "expired" | "revoked" | "locked")
}

/// Follows the key's events until it is retrieved (success) or gone (failure). A dropped
/// stream is resumed from the last event seen; a stream that ends while the key still lives
/// (a server restart, a proxy timeout) is reopened.
async fn wait_for_retrieval(holder: &HolderClient, out: &Output) -> anyhow::Result<()> {
    let mut last_id: Option<String> = None;
    let mut retries = 0u32;
    let ended = loop {
        let mut events = pin!(holder.events(last_id.as_deref()));
        let mut found = None;
        while let Some(item) = events.next().await {
            match item {
                Ok(event) => {
                    retries = 0;
                    last_id = Some(event.id.clone());
                    if event.event_type == "key.denied" {
                        report_denied(&event);
                    }
                    if let Some(done) = outcome(&event) {
                        found = Some(done);
                        break;
                    }
                }
                Err(err @ keymaster_client::Error::Api { .. }) => {
                    return Err(anyhow!(err).context("cannot follow the key's events"))
                }
                // A broken connection or an unreadable event: reconnect and resume.
                Err(_) => break,
            }
        }
        if let Some(done) = found {
            break done;
        }
        let status = holder
            .status()
            .await
            .context("cannot follow the key's events")?;
        if is_final(&status.status) {
            let from_history = status.history.iter().rev().find_map(outcome);
            break from_history.unwrap_or(Outcome::Gone("the key is gone"));
        }
        retries += 1;
        if retries > 8 {
            bail!("the key master keeps closing the event stream; giving up");
        }
        tokio::time::sleep(Duration::from_millis(250) * 2u32.pow(retries.min(4))).await;
    };
    match ended {
        Outcome::Retrieved(event) => {
            if out.is_json() {
                return out.json(&event);
            }
            let by = event
                .data
                .service
                .as_ref()
                .map_or("an unnamed service", |s| s.name.as_str());
            out.text(&format!("retrieved by {by}"))
        }
        Outcome::Gone(why) => bail!("{why}"),
    }
}

fn report_denied(event: &Event) {
    let by = event
        .data
        .service
        .as_ref()
        .map_or("a service", |s| s.name.as_str());
    let reason = event.data.reason.as_deref().unwrap_or("refused");
    eprintln!("keymaster: a retrieval by {by} was refused ({reason})");
}

/// `device list`: the keystore joined with each key's status at the key master.
async fn list(server: &str, store: &Keystore, out: &Output) -> anyhow::Result<()> {
    let entries = store.list()?;
    let mut rows = Vec::with_capacity(entries.len());
    for entry in &entries {
        let (status, expires_at) = match holder(server, entry)?.status().await {
            Ok(status) => (status.status, status.expires_at),
            Err(err) if matches!(err.status(), Some(401 | 404)) => {
                ("purged".to_owned(), entry.expires_at)
            }
            Err(err) => {
                return Err(
                    anyhow!(err).context(format!("cannot get the status of {:?}", entry.label))
                )
            }
        };
        let live = matches!(
            status.as_str(),
            "active" | "awaiting_confirmation" | "locked"
        );
        rows.push(json!({
            "label": entry.label,
            "id": entry.key_id,
            "code": if live { entry.code.clone() } else { None },
            "code_display": if live { entry.code_display.clone() } else { None },
            "status": status,
            "fingerprint": entry.fingerprint,
            "expires_at": expires_at,
        }));
    }
    if out.is_json() {
        return out.json(&rows);
    }
    if rows.is_empty() {
        return out.text("no keys in the keystore");
    }
    for row in &rows {
        let field = |name: &str| row[name].as_str().unwrap_or("-").to_owned();
        out.text(&format!(
            "{}  {}  {}  expires {}  {}",
            field("label"),
            field("status"),
            field("code_display"),
            field("expires_at"),
            field("fingerprint"),
        ))?;
    }
    Ok(())
}

fn status_text(entry: &Entry, status: &KeyStatus) -> String {
    let mut text = format!(
        "label: {}\nid: {}\nstatus: {}\nalgorithm: {}\nfingerprint: {}\nexpires: {}\nretrievals: {} of {}\nhistory:",
        status.label.as_deref().unwrap_or(&entry.label),
        status.id,
        status.status,
        status.algorithm,
        status.fingerprint.as_deref().unwrap_or("-"),
        status.expires_at,
        status.retrievals,
        status.max_retrievals,
    );
    for event in &status.history {
        text.push_str(&format!("\n  {}  {}", event.timestamp, event.event_type));
        if let Some(service) = &event.data.service {
            text.push_str(&format!("  by {}", service.name));
        }
        if let Some(reason) = &event.data.reason {
            text.push_str(&format!("  ({reason})"));
        }
    }
    text
}

/// The key operations `device` needs, all done by `keymaster_core::key`.
pub(crate) mod crypto {
    use anyhow::Context;
    use base64::Engine;
    use keymaster_core::key::{self, GenerateAlgorithm};
    use zeroize::Zeroizing;

    /// An Ed25519 pair made on this device, with its proof of possession.
    pub struct LocalPair {
        /// PKCS#8 PEM; goes to the keystore only.
        pub private_pem: Zeroizing<String>,
        /// SPKI PEM; deposited.
        pub public_pem: String,
        /// Base64 signature over `keymaster-proof-of-possession:` + fingerprint.
        pub proof: String,
    }

    impl LocalPair {
        pub fn generate() -> anyhow::Result<Self> {
            let (public, private_pem) =
                key::generate(GenerateAlgorithm::Ed25519, &mut rand::rngs::OsRng)
                    .context("cannot make a key pair")?;
            let signature = key::sign(&private_pem, &key::proof_message(&public.fingerprint()))
                .context("cannot sign the proof of possession")?;
            Ok(LocalPair {
                private_pem,
                public_pem: public.to_pem(),
                proof: base64::engine::general_purpose::STANDARD.encode(signature),
            })
        }
    }

    /// Signs `message` with a private key from the keystore.
    pub fn sign(private_pem: &str, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        key::sign(private_pem, message).context("cannot sign with the keystore's private key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_accepts_whole_seconds_only() {
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("30d"), Ok(30 * 86400));
        assert_eq!(parse_ttl("5s"), Ok(5));
        assert!(parse_ttl("250ms").is_err());
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn labels_are_checked_before_anything_is_made() {
        assert_eq!(parse_label("github.com"), Ok("github.com".to_owned()));
        assert_eq!(
            parse_label("laptop \u{1F469}\u{200D}\u{1F4BB}"),
            Ok("laptop \u{1F469}\u{200D}\u{1F4BB}".to_owned())
        );
        let err = parse_label("\u{202E}moc.buhtig").unwrap_err();
        assert!(err.contains("U+202E") && !err.contains("buhtig"), "{err}");
        assert!(parse_label("git\u{200B}hub").is_err());
    }
}
