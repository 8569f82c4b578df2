//! `keymaster serve`: hands the flags to `keymaster_server::serve`, which owns configuration,
//! logging and shutdown. Nothing about the server's behaviour is decided here.

use std::path::PathBuf;

use clap::Args;
use keymaster_server::ServeOptions;

/// Run the key master HTTP service.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  keymaster serve
  keymaster serve --demo   (then open http://127.0.0.1:8080/demo/)
  KEYMASTER_ADMIN_TOKEN=… keymaster serve --listen 0.0.0.0:8080 --database /var/lib/keymaster/keymaster.db
  keymaster serve --database postgres://keymaster@db/keymaster --config /etc/keymaster.toml

Every setting of the config file can also be given as KEYMASTER_<UPPER_NAME> (KEYMASTER_MIN_TTL=1s).")]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "KEYMASTER_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// SQLite file or postgres:// URL [default: keymaster.db in the working directory].
    #[arg(long, env = "KEYMASTER_DATABASE_URL", value_name = "URL")]
    database: Option<String>,
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve the browser demo under /demo/ (also demo = true, KEYMASTER_DEMO=true); only on a
    /// loopback --listen address.
    #[arg(long)]
    demo: bool,
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    keymaster_server::serve(ServeOptions {
        listen: args.listen,
        database: args.database,
        config: args.config,
        demo: args.demo,
    })
    .await
    .map_err(|err| anyhow::anyhow!("{err}"))
}
