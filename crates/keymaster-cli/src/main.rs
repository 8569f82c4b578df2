//! `keymaster`: the one binary of the key master. This file only parses the command line and
//! dispatches; each command group lives in its own module:
//!
//! - [`serve`]: runs the HTTP service (`keymaster_server::serve`).
//! - [`admin`]: the operator's commands over HTTP (tenants, app keys, services, audit).
//! - [`device`]: a device depositing and managing its keys, with the local [`keystore`].
//! - [`service`]: an outside service fetching a key by code.
//! - [`requests`]: enrolment requests: `service request` asks, `device answer` answers.
//! - [`qr`]: QR codes for the terminal, PNG and SVG; [`output`]: text and `--json` printing.
//! - [`docs`]: shell completion scripts and the man page, made from this file's definition.
//! - [`backup`]: `backup` and `restore` of a SQLite database.
//!
//! Every failure ends in one line on stderr and exit status 1 (see [`output::one_line`]).
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)
)]

mod admin;
mod backup;
mod device;
mod docs;
mod keystore;
mod output;
mod qr;
mod remote;
mod requests;
mod serve;
mod service;

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: per-thread free lists suit a server whose requests
/// allocate and free many small buffers on several threads (measured in docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{CommandFactory, Parser, Subcommand};

/// keymaster: move a public key from a device to an outside service with a short code.
#[derive(Debug, Parser)]
#[command(name = "keymaster", version, propagate_version = true)]
#[command(after_help = "Examples:
  keymaster serve --listen 127.0.0.1:8080
  keymaster admin tenant create acme --json
  keymaster device add --label laptop --ttl 1h
  keymaster service fetch 4729-1047-5518-2035 --format openssh >> ~/.ssh/authorized_keys")]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the key master HTTP service.
    Serve(serve::ServeArgs),
    /// Operator commands: tenants, app keys, services, audit log (needs KEYMASTER_ADMIN_TOKEN).
    Admin(admin::AdminArgs),
    /// Deposit keys from this device and manage them (needs KEYMASTER_APP_KEY to deposit).
    Device(device::DeviceArgs),
    /// Outside-service commands: fetch a key by its code (needs KEYMASTER_SERVICE_KEY).
    Service(service::ServiceArgs),
    /// Write a consistent copy of a SQLite database while the server runs.
    Backup(backup::BackupArgs),
    /// Put a SQLite backup back (refused while a server runs on the database).
    Restore(backup::RestoreArgs),
    /// Print a completion script for bash, zsh or fish.
    Completions(docs::CompletionsArgs),
    /// Print the man page (roff).
    Man,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    let out = output::Output::new(cli.json);
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Admin(args) => admin::run(args, &out).await,
        Command::Device(args) => device::run(args, &out).await,
        Command::Service(args) => service::run(args, &out).await,
        Command::Backup(args) => backup::run_backup(args, &out),
        Command::Restore(args) => backup::run_restore(args, &out),
        Command::Completions(args) => docs::completions(args, Cli::command()),
        Command::Man => docs::man(Cli::command()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keymaster: {}", output::one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// Help and version are printed as clap renders them; a usage error becomes one line.
fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        // Prints to stdout (stderr for the last kind) and exits with clap's status.
        err.exit();
    }
    // clap's message runs until the blank line before its usage and tips.
    let text = err.render().to_string();
    let message: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty() && !line.starts_with("Usage:"))
        .collect();
    eprintln!(
        "keymaster: {} (see --help)",
        message.join(" ").trim_start_matches("error: ")
    );
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
