//! `keymaster service fetch`: an outside service retrieving a key by code with
//! `KEYMASTER_SERVICE_KEY`, printing it in the form its user needs (PEM, an `authorized_keys`
//! line, a JWK, or the whole retrieval body). The code is checked offline first, so a typo
//! never costs one of the service's failed-retrieval budget. Given a code URI (what the QR
//! code holds), the SDK checks that the key received is the one the URI commits to; a key that
//! is not is refused and disputed, and nothing is printed on stdout. `--preview` shows who
//! deposited the key and asks before claiming it.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use keymaster_client::wire::{PreviewResponse, RetrievalRequest, RetrievalResponse};
use keymaster_client::ServiceClient;

use crate::output::{line, Output};
use crate::remote::{credential, ServerArg};

/// Outside-service commands (KEYMASTER_SERVICE_KEY holds the service's kms_… key).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  export KEYMASTER_SERVICE_KEY=kms_…
  keymaster service fetch 4729-1047-5518-2035 --format openssh >> ~/.ssh/authorized_keys")]
pub struct ServiceArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(subcommand)]
    command: ServiceCommand,
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// Retrieve the key behind a code and print it.
    #[command(after_help = "Examples:
  keymaster service fetch 4729-1047-5518-2035 > device.pem
  keymaster service fetch 4729-1047-5518-2035 --format openssh >> ~/.ssh/authorized_keys
  keymaster service fetch 4729104755182036 --password 'correct horse' --format json --confirm
  keymaster service fetch 'keymaster:4729104755182036?fp=…' --preview

--json prints the retrieval body, like --format json. A symmetric secret is printed in base64
for --format pem.

Given the code URI of a QR code, the key received is checked against the URI's fingerprint; a
different key is refused (nothing on stdout, exit status non-zero) and reported to the key
master as disputed.")]
    Fetch(FetchArgs),
    /// Ask a device for a key: show a QR code it scans, and with --wait print its key.
    Request(crate::requests::RequestArgs),
}

#[derive(Debug, Args)]
struct FetchArgs {
    /// The code as the person typed it (spaces and dashes are fine), or the code URI
    /// `keymaster:<code>?fp=…` of a QR code.
    #[arg(value_name = "CODE_OR_URI")]
    code: String,
    /// The key's password, if its policy asks for one.
    #[arg(long, value_name = "P")]
    password: Option<String>,
    /// What to print.
    #[arg(long, value_enum, default_value_t = Format::Pem)]
    format: Format,
    /// Confirm receipt of a key held for confirmation, so that the key master removes it.
    #[arg(long)]
    confirm: bool,
    /// First show who deposited the key (label, tenant, when, from which network) on stderr
    /// and ask before claiming it.
    #[arg(long)]
    preview: bool,
    /// With --preview: claim the key without asking (needed without a terminal).
    #[arg(long, requires = "preview")]
    yes: bool,
    /// Run the SAS exchange with the device and print the six digits to compare with its
    /// (`compare: 123 456` on stderr); a device nonce that does not open its commitment, or no
    /// commitment at all, refuses the key and disputes the retrieval.
    #[arg(long)]
    verify: bool,
    /// With --verify: how long to wait for the device to reveal its nonce.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "120s", requires = "verify")]
    timeout: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    Pem,
    /// One OpenSSH public key line, for authorized_keys.
    Openssh,
    /// A public JWK.
    Jwk,
    /// The whole retrieval body.
    Json,
}

/// Runs one `service` command.
pub async fn run(args: ServiceArgs, out: &Output) -> anyhow::Result<()> {
    let service_key = credential("KEYMASTER_SERVICE_KEY", "the service's key (kms_…)")?;
    let client = ServiceClient::new(&args.server.url, &service_key)?;
    let fetch = match args.command {
        ServiceCommand::Fetch(fetch) => fetch,
        ServiceCommand::Request(request) => {
            return crate::requests::request(request, &client, out).await
        }
    };
    let request = RetrievalRequest {
        code: fetch.code,
        password: fetch.password,
        context: None,
    };
    if fetch.preview {
        let preview = client
            .preview(&request)
            .await
            .context("cannot preview the key")?;
        if !confirm_claim(&preview, fetch.yes)? {
            bail!("the key was not claimed");
        }
    }
    let retrieved = client
        .retrieve(&request)
        .await
        .context("cannot fetch the key")?;
    if fetch.confirm && retrieved.confirm_by.is_some() {
        client
            .confirm(&retrieved.retrieval_id)
            .await
            .context("the key was fetched but cannot be confirmed")?;
    }
    let format = if out.is_json() {
        Format::Json
    } else {
        fetch.format
    };
    if fetch.verify {
        let code = client
            .verify_sas(&retrieved, fetch.timeout)
            .await
            .map_err(|err| match err {
                // Its text already says key_mismatch and what was refused: one line.
                err @ keymaster_client::Error::SasMismatch { .. } => anyhow::anyhow!(err),
                err => anyhow::Error::new(err).context("the SAS exchange failed"),
            })?;
        eprintln!("compare: {code}");
        if format == Format::Json {
            let mut body = serde_json::to_value(&retrieved).context("cannot encode the key")?;
            body["sas"] = code.to_string().into();
            return out.json(&body);
        }
    }
    print_key(&retrieved, format, out)
}

/// Shows the preview on stderr and, unless `yes`, asks on the terminal whether to claim the
/// key; declining is the default. Without a terminal nobody can answer, so it refuses.
fn confirm_claim(preview: &PreviewResponse, yes: bool) -> anyhow::Result<bool> {
    let label = preview.label.as_deref().unwrap_or("(no label)");
    let network = preview
        .origin
        .network
        .as_deref()
        .unwrap_or("an unknown network");
    let proven = if preview.proven {
        ", its private key proven"
    } else {
        ""
    };
    let text = format!(
        "key {label:?} ({} {}{proven}) from {}, deposited {} from {network}\nfingerprint: {}\n",
        preview.kind,
        preview.algorithm,
        preview.tenant.name,
        preview.deposited_at,
        preview.fingerprint.as_deref().unwrap_or("none (a secret)"),
    );
    let mut stderr = std::io::stderr();
    write!(stderr, "{text}").context("cannot write to stderr")?;
    if yes {
        return Ok(true);
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() || !stderr.is_terminal() {
        bail!("--preview asks before claiming the key, but there is no terminal to answer on: add --yes");
    }
    write!(stderr, "Claim this key? [y/N] ").context("cannot write to stderr")?;
    stderr.flush().context("cannot write to stderr")?;
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES"))
}

pub(crate) fn print_key(
    key: &RetrievalResponse,
    format: Format,
    out: &Output,
) -> anyhow::Result<()> {
    let missing = |form: &str| {
        anyhow::anyhow!(
            "the retrieved {} key has no {form} form (key {}; retrieve it with --format json next time)",
            key.algorithm,
            key.key_id
        )
    };
    match format {
        Format::Json => out.json(key),
        Format::Pem => match (&key.public_key_pem, &key.secret) {
            (Some(pem), _) => line(pem.trim_end()),
            (None, Some(secret)) => line(secret),
            (None, None) => Err(missing("PEM")),
        },
        Format::Openssh => match &key.openssh {
            Some(openssh) => line(openssh.trim_end()),
            None => Err(missing("OpenSSH")),
        },
        Format::Jwk => match &key.jwk {
            Some(jwk) => out.json(jwk),
            None if key.secret.is_some() => {
                bail!("the retrieved key is a symmetric secret: use --format pem or json")
            }
            None => Err(missing("JWK")),
        },
    }
}
