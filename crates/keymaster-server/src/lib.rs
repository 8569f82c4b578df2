//! keymaster-server: the HTTP service (being written).

use std::path::PathBuf;

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
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn serve(_opts: ServeOptions) -> Result<(), String> {
    Err("the server is not built yet".to_owned())
}
