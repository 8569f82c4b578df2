//! `keymaster service fetch`: an outside service retrieving a key by code with
//! `KEYMASTER_SERVICE_KEY`, printing it in the form its user needs (PEM, an `authorized_keys`
//! line, a JWK, or the whole retrieval body). The code is checked offline first, so a typo
//! never costs one of the service's failed-retrieval budget.

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use keymaster_client::wire::{RetrievalRequest, RetrievalResponse};
use keymaster_client::ServiceClient;

use crate::output::{line, Output};
use crate::remote::{credential, ServerArg};

/// Outside-service commands (KEYMASTER_SERVICE_KEY holds the service's kms_… key).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  export KEYMASTER_SERVICE_KEY=kms_…
  keymaster service fetch 4729-1047-5518-2036 --format openssh >> ~/.ssh/authorized_keys")]
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
  keymaster service fetch 4729-1047-5518-2036 > device.pem
  keymaster service fetch 4729-1047-5518-2036 --format openssh >> ~/.ssh/authorized_keys
  keymaster service fetch 4729104755182036 --password 'correct horse' --format json --confirm

--json prints the retrieval body, like --format json. A symmetric secret is printed in base64
for --format pem.")]
    Fetch(FetchArgs),
}

#[derive(Debug, Args)]
struct FetchArgs {
    /// The code as the person typed it (spaces and dashes are fine).
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
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
    let ServiceCommand::Fetch(fetch) = args.command;
    let service_key = credential("KEYMASTER_SERVICE_KEY", "the service's key (kms_…)")?;
    let client = ServiceClient::new(&args.server.url, &service_key)?;
    let retrieved = client
        .retrieve(&RetrievalRequest {
            code: fetch.code,
            password: fetch.password,
            context: None,
        })
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
    print_key(&retrieved, format, out)
}

fn print_key(key: &RetrievalResponse, format: Format, out: &Output) -> anyhow::Result<()> {
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
