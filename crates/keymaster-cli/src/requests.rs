//! Enrolment requests from the command line (the service asks, the device answers):
//! `keymaster service request` makes a request, shows its code and a QR code of its URI on
//! stderr and, with `--wait`, prints the key on stdout when a device answers, so that
//! `keymaster service request --wait --format openssh >> ~/.ssh/authorized_keys` works;
//! `keymaster device answer CODE` shows which service asks (name and domains), asks the person
//! (or takes `--yes`), and deposits a new key of this device or FILE's public key in answer.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use keymaster_client::wire::{CodeFormat, DepositRequest, NewEnrolmentRequest, RequestPreview};
use keymaster_client::{DeviceClient, ServiceClient};

use crate::device::{crypto, parse_label, parse_ttl};
use crate::keystore::{Entry, Keystore};
use crate::output::Output;
use crate::qr::{self, QrFile};
use crate::remote::credential;
use crate::service::{print_key, Format};

/// `service request`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  keymaster service request --label bastion --wait --format openssh >> ~/.ssh/authorized_keys
  keymaster service request --label web --ttl 5m --qr request.png --json

The code, its URI and a QR code of the URI go to stderr; with --wait the key goes to stdout
when a device answers (or the command fails when the request expires first). Without --wait,
stdout gets the request's id (--json: the whole request body).")]
pub struct RequestArgs {
    /// What the key is for, shown to the device.
    #[arg(long, value_parser = parse_label)]
    label: Option<String>,
    /// How long the request waits for an answer, e.g. 10m [server default: 10m, at most 1h].
    #[arg(long, value_parser = parse_ttl, value_name = "DURATION")]
    ttl: Option<i64>,
    /// Also write the QR code to FILE.png or FILE.svg.
    #[arg(long, value_name = "FILE.png|FILE.svg")]
    qr: Option<QrFile>,
    /// Wait for the device's answer and print its key.
    #[arg(long)]
    wait: bool,
    /// With --wait: what to print.
    #[arg(long, value_enum, default_value_t = Format::Pem)]
    format: Format,
}

/// Runs `service request`.
pub async fn request(
    args: RequestArgs,
    client: &ServiceClient,
    out: &Output,
) -> anyhow::Result<()> {
    let created = client
        .request(&NewEnrolmentRequest {
            label: args.label.clone(),
            ttl_seconds: args.ttl,
            code_format: None,
        })
        .await
        .context("cannot make the request")?;
    if let Some(file) = &args.qr {
        qr::write(&created.code_uri, file)?;
    }
    eprintln!(
        "code: {}\nuri: {}\n{}\nexpires: {}",
        created.code_display,
        created.code_uri,
        qr::terminal(&created.code_uri)?,
        created.expires_at
    );
    if !args.wait {
        if out.is_json() {
            return out.json(&created);
        }
        return crate::output::line(&created.id);
    }
    eprintln!("waiting for a device to answer…");
    let until = created.expires_at.duration_since(jiff::Timestamp::now());
    let timeout = Duration::try_from(until).unwrap_or(Duration::ZERO) + Duration::from_secs(1);
    let status = client
        .wait(&created.id, timeout)
        .await
        .context("cannot wait for the answer")?;
    match (status.status.as_str(), status.retrieval) {
        ("fulfilled", Some(key)) => {
            eprintln!(
                "answered: {} {}",
                key.algorithm,
                key.fingerprint.as_deref().unwrap_or("")
            );
            let format = if out.is_json() {
                Format::Json
            } else {
                args.format
            };
            print_key(&key, format, out)
        }
        ("fulfilled", None) => bail!(
            "the request {} was answered, but its key is gone (read already, revoked or expired)",
            created.id
        ),
        ("expired", _) => bail!("the request expired before a device answered"),
        _ => bail!("no device answered the request {} in time", created.id),
    }
}

/// `device answer`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  keymaster device answer 'keymaster:request:4729104755182036'
  keymaster device answer 4729-1047-5518-2036 --public-key ~/.ssh/id_ed25519.pub --yes

Shows which service asks (its name and domains) and asks before sending; without a terminal
it refuses unless --yes is given. Without --public-key an Ed25519 pair is made here and its
private key kept in the keystore.")]
pub struct AnswerArgs {
    /// The request's code as shown by the service, or its URI `keymaster:request:<code>`.
    #[arg(value_name = "CODE_OR_URI")]
    code: String,
    /// Send this public key file (PEM or an OpenSSH .pub line); its private key stays where it is.
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
    /// A name for the key in the keystore [default: the request's label, else the service's name].
    #[arg(long, value_parser = parse_label)]
    label: Option<String>,
    /// Send without asking (needed without a terminal).
    #[arg(long)]
    yes: bool,
}

/// Runs `device answer`.
pub async fn answer(
    args: AnswerArgs,
    server: &str,
    store: &Keystore,
    out: &Output,
) -> anyhow::Result<()> {
    let app_key = credential("KEYMASTER_APP_KEY", "the tenant's app key (kma_…)")?;
    let device = DeviceClient::new(server, &app_key)?;
    let preview = device
        .preview_request(&args.code)
        .await
        .context("cannot look at the request")?;
    let label = match &args.label {
        Some(l) => l.clone(),
        None => {
            parse_label(preview.label.as_deref().unwrap_or(&preview.service.name)).map_err(|e| {
                anyhow!("the request's label cannot name a key here ({e}): give --label")
            })?
        }
    };
    store.ensure_dir()?;
    if store.contains(&label)? {
        bail!("the keystore already has a key labelled {label:?}: give another --label");
    }
    let public_file = match &args.public_key {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the public key {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    if !confirm_send(&preview, &label, args.yes)? {
        bail!("nothing was sent");
    }
    let mut request = DepositRequest {
        label: Some(label.clone()),
        code_format: None::<CodeFormat>,
        ..Default::default()
    };
    let pair = match &public_file {
        Some(text) => {
            request.public_key = Some(text.clone());
            None
        }
        None => {
            let pair = crypto::LocalPair::generate()?;
            request.public_key = Some(pair.public_pem.clone());
            request.proof = Some(pair.proof.clone());
            Some(pair)
        }
    };
    let deposit = device
        .answer(&args.code, &request)
        .await
        .context("cannot send the key")?;
    let (private_key, public_key) = match pair {
        Some(pair) => (Some(pair.private_pem), Some(pair.public_pem)),
        None => (None, public_file),
    };
    let entry = Entry {
        label: label.clone(),
        key_id: deposit.id.clone(),
        holder_token: deposit.holder_token.clone(),
        code: None,
        code_display: None,
        private_key,
        public_key,
        algorithm: deposit.algorithm.clone(),
        fingerprint: deposit.fingerprint.clone(),
        expires_at: deposit.expires_at,
    };
    store
        .save(&entry)
        .context("the key was sent, but the keystore cannot keep its holder token")?;
    if out.is_json() {
        let mut body = serde_json::to_value(&deposit).context("cannot encode the deposit")?;
        if let Some(map) = body.as_object_mut() {
            map.remove("holder_token");
        }
        return out.json(&body);
    }
    out.text(&format!(
        "sent {label} to {}\nfingerprint: {}",
        preview.service.name,
        deposit.fingerprint.as_deref().unwrap_or("none")
    ))
}

/// Shows who asks on stderr and, unless `yes`, asks on the terminal; declining is the
/// default. Without a terminal nobody can answer, so it refuses.
fn confirm_send(preview: &RequestPreview, label: &str, yes: bool) -> anyhow::Result<bool> {
    let domains = if preview.service.domains.is_empty() {
        "no domain".to_owned()
    } else {
        preview.service.domains.join(", ")
    };
    let mut stderr = std::io::stderr();
    writeln!(
        stderr,
        "{} ({domains}) asks for a key{}; it expires {}",
        preview.service.name,
        preview
            .label
            .as_deref()
            .map(|l| format!(" for {l:?}"))
            .unwrap_or_default(),
        preview.expires_at
    )
    .context("cannot write to stderr")?;
    if yes {
        return Ok(true);
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() || !stderr.is_terminal() {
        bail!("device answer asks before sending a key, but there is no terminal to answer on: add --yes");
    }
    write!(
        stderr,
        "Send your key {label:?} to {} ({domains})? [y/N] ",
        preview.service.name
    )
    .context("cannot write to stderr")?;
    stderr.flush().context("cannot write to stderr")?;
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES"))
}
