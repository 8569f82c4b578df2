//! `keymaster admin …`: the operator's commands, over HTTP with `KEYMASTER_ADMIN_TOKEN`. With
//! `--json` each prints the API's response body; as text, the same facts one per line. The
//! secrets these commands create (app keys, service keys, webhook secrets) are shown once, here.

use anyhow::Context;
use clap::{Args, Subcommand};
use keymaster_client::wire::{CreateServiceRequest, CreateTenantRequest};
use keymaster_client::AdminClient;

use crate::output::Output;
use crate::remote::{credential, ServerArg};

/// Operator commands (KEYMASTER_ADMIN_TOKEN holds the admin token).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  export KEYMASTER_ADMIN_TOKEN=…
  keymaster admin tenant create acme --webhook-url https://acme.example/hook
  keymaster admin app-key create 0b4c…
  keymaster admin service create ssh-bastion --domain bastion.example.net --cidr 192.0.2.0/24
  keymaster admin audit --limit 20 --json")]
pub struct AdminArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Tenants (application developers).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// App keys (`kma_…`) with which a tenant's devices deposit keys.
    #[command(subcommand, name = "app-key")]
    AppKey(AppKeyCommand),
    /// Outside services (`kms_…` keys) that retrieve keys by code.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Show the audit log, newest first.
    #[command(after_help = "Examples:
  keymaster admin audit
  keymaster admin audit --limit 1000 --json")]
    Audit {
        /// How many entries (1 to 1000) [server default: 100].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant; prints its id and its webhook secret (shown once).
    #[command(after_help = "Examples:
  keymaster admin tenant create acme
  keymaster admin tenant create acme --webhook-url https://acme.example/keymaster-hook --json")]
    Create {
        /// The tenant's name.
        name: String,
        /// Receives signed webhooks for all of the tenant's keys.
        #[arg(long, value_name = "URL")]
        webhook_url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AppKeyCommand {
    /// Create an app key for a tenant; prints the `kma_…` token (shown once).
    #[command(after_help = "Examples:
  keymaster admin app-key create 0b4c6f1e-…
  export KEYMASTER_APP_KEY=$(keymaster admin app-key create 0b4c6f1e-… --json | jq -r .token)")]
    Create {
        /// The tenant's id, as `admin tenant create` printed it.
        tenant_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// Enrol an outside service; prints its `kms_…` key (shown once).
    #[command(after_help = "Examples:
  keymaster admin service create github --domain github.com
  keymaster admin service create bastion --domain bastion.example.net --cidr 192.0.2.0/24 --cidr 2001:db8::/32")]
    Create {
        /// The service's name, shown to key holders ("retrieved by NAME").
        name: String,
        /// A domain the service is enrolled with (repeatable); matched by keys' `domains` policy.
        #[arg(long = "domain", value_name = "D")]
        domains: Vec<String>,
        /// Source addresses the service may call from (repeatable), e.g. 192.0.2.0/24.
        #[arg(long = "cidr", value_name = "C")]
        cidrs: Vec<String>,
    },
}

/// Runs one `admin` command.
pub async fn run(args: AdminArgs, out: &Output) -> anyhow::Result<()> {
    let token = credential("KEYMASTER_ADMIN_TOKEN", "the operator's admin token")?;
    let client = AdminClient::new(&args.server.url, &token)?;
    match args.command {
        AdminCommand::Tenant(TenantCommand::Create { name, webhook_url }) => {
            let created = client
                .create_tenant(&CreateTenantRequest { name, webhook_url })
                .await
                .context("cannot create the tenant")?;
            if out.is_json() {
                return out.json(&created);
            }
            out.text(&format!(
                "tenant: {}\nname: {}\nwebhook secret: {} (shown once)",
                created.id, created.name, created.webhook_secret
            ))
        }
        AdminCommand::AppKey(AppKeyCommand::Create { tenant_id }) => {
            let created = client
                .create_app_key(&tenant_id)
                .await
                .context("cannot create the app key")?;
            if out.is_json() {
                return out.json(&created);
            }
            out.text(&format!(
                "app key: {}\ntoken: {} (shown once; devices use it as KEYMASTER_APP_KEY)",
                created.id, created.token
            ))
        }
        AdminCommand::Service(ServiceCommand::Create {
            name,
            domains,
            cidrs,
        }) => {
            let created = client
                .create_service(&CreateServiceRequest {
                    name,
                    domains,
                    allowed_cidrs: cidrs,
                })
                .await
                .context("cannot enrol the service")?;
            if out.is_json() {
                return out.json(&created);
            }
            out.text(&format!(
                "service: {}\nname: {}\ntoken: {} (shown once; the service uses it as KEYMASTER_SERVICE_KEY)",
                created.id, created.name, created.token
            ))
        }
        AdminCommand::Audit { limit } => {
            let page = client
                .audit(limit, None)
                .await
                .context("cannot read the audit log")?;
            if out.is_json() {
                return out.json(&page);
            }
            for entry in &page.entries {
                let mut row = format!(
                    "{}  {}  {}  {}  {}",
                    entry.id, entry.at, entry.actor, entry.action, entry.outcome
                );
                for (name, value) in [
                    ("key", &entry.key_id),
                    ("ip", &entry.ip),
                    ("detail", &entry.detail),
                ] {
                    if let Some(value) = value {
                        row.push_str(&format!("  {name}={value}"));
                    }
                }
                out.text(&row)?;
            }
            Ok(())
        }
    }
}
