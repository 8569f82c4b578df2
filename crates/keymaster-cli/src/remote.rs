//! Where the key master is (`--server` / `KEYMASTER_URL`) and the credentials the commands take
//! from the environment. Credentials are never flags: a flag's value shows in `ps` and in shell
//! history.

use anyhow::bail;
use clap::Args;

/// The `--server` flag shared by the `admin`, `device` and `service` groups.
#[derive(Debug, Clone, Args)]
pub struct ServerArg {
    /// Base URL of the key master.
    #[arg(
        long = "server",
        env = "KEYMASTER_URL",
        default_value = "http://127.0.0.1:8080",
        global = true,
        value_name = "URL"
    )]
    pub url: String,
}

/// The value of the environment variable `name`, which must be set and non-empty.
pub fn credential(name: &str, what: &str) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        Ok(_) | Err(std::env::VarError::NotPresent) => {
            bail!("{name} is not set: it must hold {what}")
        }
        Err(std::env::VarError::NotUnicode(_)) => bail!("{name} is not valid UTF-8"),
    }
}
