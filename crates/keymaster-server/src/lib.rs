//! keymaster-server: the HTTP service of keymaster.
//!
//! Layout:
//! - [`config`]: the typed settings (TOML file, then `KEYMASTER_*`).
//! - [`startup`]: `App::build(settings)` and `run_until_stopped(shutdown)`.
//! - [`routes`]: one module per resource, thin: extract, call, respond; [`auth`] and
//!   [`extract`] turn requests into principals and domain values; [`error`] is the one place
//!   that picks status codes.
//! - [`usecase`]: what the handlers and the demo both call (deposit, retrieve, preview,
//!   confirm), typed inputs and results, with their audit and metrics.
//! - [`store`]: the `Store` trait and its backends; every change writes its event and audit
//!   row in the same transaction.
//! - [`capacity`]: bounds on event streams and key generation, outside the request slots.
//! - [`sweeper`]: reports expiries and purges what is past retention.
//! - [`netguard`]: where keymaster may send on a tenant's behalf (webhook targets, SSRF, and
//!   e-mail addresses), used by the routes when a target is given and by [`dispatch`] at every
//!   delivery.
//! - [`demo`]: the browser demo under `/demo/` (pages embedded in the binary).
//! - [`crypto`]: keys derived from the server secret, code HMACs, token hashes, sealing.
//! - [`private_files`]: the server's files on disk are `0600` whatever the umask.
//! - [`logs`]: the log stream on stderr, text or JSON (`log_format`).
//! - [`tls`]: HTTPS with `tls_cert` and `tls_key`, reloaded on `SIGHUP`.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)
)]

pub mod auth;
pub mod auth_budget;
pub mod capacity;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod dispatch;
pub mod error;
pub mod extract;
pub mod logs;
pub mod netguard;
pub mod private_files;
pub mod reseal;
pub mod routes;
pub mod startup;
pub mod state;
pub mod store;
pub mod sweeper;
pub mod tls;
pub mod usecase;

use std::path::PathBuf;

pub use config::Settings;
pub use startup::{App, StartError};

/// What `keymaster serve` passes in from its flags; each falls back to the config file and the
/// `KEYMASTER_*` environment.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// `--listen`, e.g. `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// `--database`: a SQLite path or `postgres://…` URL.
    pub database: Option<String>,
    /// `--config FILE` (TOML).
    pub config: Option<PathBuf>,
    /// `--demo`: serve the browser demo (the `demo` setting); refused off loopback.
    pub demo: bool,
}

/// Runs the server until SIGTERM or Ctrl-C; logs go to stderr.
pub async fn serve(opts: ServeOptions) -> Result<(), StartError> {
    // Validated by `App::build`, once the flags are in.
    let mut settings = Settings::read(opts.config.as_deref())?;
    let log_format = settings.log_format;
    logs::init(log_format);
    if let Some(listen) = opts.listen {
        settings.listen = listen;
    }
    if let Some(db) = opts.database {
        settings.database_url = db;
    }
    if opts.demo {
        settings.demo = true;
    }
    let mut app = App::build(settings).await?;
    let addr = app.local_addr().map_err(|source| StartError::Bind {
        addr: "listener".into(),
        source,
    })?;
    if let Some(token) = app.take_generated_admin_token() {
        // Printed once, on purpose, on stdout: stderr is the log stream, which a collector
        // keeps and ships, and the token must never be in it.
        println!(
            "keymaster: generated admin token (shown once, store it now): {}",
            token.as_str()
        );
    }
    let tls = app.tls();
    let scheme = if tls.is_some() { "https" } else { "http" };
    match log_format {
        config::LogFormat::Text => {
            eprintln!("keymaster listening on {scheme}://{addr}");
            tracing::info!(%addr, "listening");
        }
        // Every line of a JSON log stream is a JSON object, this one too.
        config::LogFormat::Json => {
            tracing::info!(%addr, "keymaster listening on {scheme}://{addr}");
        }
    }
    tokio::spawn(reload_on_sighup(tls));
    app.run_until_stopped(shutdown_signal())
        .await
        .map_err(|source| StartError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    tracing::info!("stopped");
    Ok(())
}

/// Reads the TLS certificate and key again at each SIGHUP. Without TLS there is nothing to
/// reload, but SIGHUP is still caught: its default action would end the server.
async fn reload_on_sighup(tls: Option<std::sync::Arc<tls::Tls>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot catch SIGHUP; TLS certificates will not be reloaded");
            return;
        };
        while hangup.recv().await.is_some() {
            match &tls {
                None => tracing::info!("SIGHUP: no TLS certificate to reload"),
                Some(tls) => match tls.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                    Err(e) => tracing::error!(
                        error = %e,
                        "SIGHUP: TLS reload failed; the current certificate stays in use"
                    ),
                },
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tls;
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
