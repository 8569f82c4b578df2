//! Start-up: settings → store, secret, admin token, metrics → an `App` bound to its listener.
//!
//! `App::build` does everything that can fail before serving; `run_until_stopped` takes the
//! shutdown signal as an argument so that tests and `serve` stop it the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use keymaster_core::policy::PolicyLimits;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::config::{Database, Settings};
use crate::crypto::{load_or_create_secret_file, new_token, token_hash, Keys};
use crate::routes;
use crate::state::AppState;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

/// Why the server could not start; the message names the setting or file.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is missing or wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The server secret could not be had.
    #[error(transparent)]
    Secret(#[from] crate::crypto::SecretError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// A built server, bound to its port, not yet serving.
pub struct App {
    listener: TcpListener,
    state: AppState,
    /// Where the generated admin token was announced (first start only), for tests.
    generated_admin_token: Option<Zeroizing<String>>,
    /// The SMTP relay, when `smtp_url` is set.
    mailer: Option<crate::dispatch::email::Mailer>,
}

fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Several apps in one process (tests) share the first recorder.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

impl App {
    /// Opens the store, derives the keys, settles the admin token and binds the listener.
    pub async fn build(settings: Settings) -> Result<App, StartError> {
        settings.validate()?;
        let (store, secret): (Arc<dyn Store>, Zeroizing<String>) = match settings.database() {
            Database::Sqlite(path) => {
                let secret = match &settings.secret {
                    Some(s) => Zeroizing::new(s.0.clone()),
                    None => load_or_create_secret_file(&secret_path(&path))?,
                };
                let store = SqliteStore::open(&path, settings.sqlite_synchronous_full)?;
                (Arc::new(store), secret)
            }
            Database::Postgres(url) => {
                let Some(secret) = &settings.secret else {
                    return Err(crate::config::ConfigError(
                        "KEYMASTER_SECRET is required with PostgreSQL (every replica must share it)"
                            .into(),
                    )
                    .into());
                };
                let secret = Zeroizing::new(secret.0.clone());
                let store = crate::store::postgres::PostgresStore::open(&url).await?;
                (Arc::new(store), secret)
            }
        };
        let keys = Keys::derive(secret.as_bytes());
        let mailer = match &settings.smtp_url {
            Some(url) => Some(
                crate::dispatch::email::Mailer::new(&url.0, &settings.smtp_from)
                    .map_err(crate::config::ConfigError)?,
            ),
            None => None,
        };

        let mut generated_admin_token = None;
        let admin_hash = match &settings.admin_token {
            Some(t) => token_hash(&t.0),
            None => match store.admin_token_hash().await? {
                Some(h) => h,
                None => {
                    let token = new_token("kmadmin_");
                    let hash = token_hash(&token);
                    if store.init_admin_token_hash(hash.clone()).await? {
                        generated_admin_token = Some(token);
                        hash
                    } else {
                        // Another process initialised it first; use theirs.
                        store.admin_token_hash().await?.unwrap_or(hash)
                    }
                }
            },
        };

        let addr = settings.listen_addr()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: settings.listen.clone(),
                source,
            })?;
        let limits = PolicyLimits {
            min_ttl_seconds: settings.min_ttl.as_secs() as i64,
            max_ttl_seconds: settings.max_ttl.as_secs() as i64,
            default_ttl_seconds: settings.default_ttl.as_secs() as i64,
        };
        let auth_budget = crate::auth_budget::AuthBudget::new(settings.failed_auth_per_minute);
        let state = AppState {
            store,
            keys: Arc::new(keys),
            settings: Arc::new(settings),
            admin_hash: Arc::new(admin_hash),
            limits: Arc::new(limits),
            auth_budget: Arc::new(auth_budget),
            metrics: metrics_handle(),
        };
        Ok(App {
            listener,
            state,
            generated_admin_token,
            mailer,
        })
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin token made at this first start, if one was made (shown once).
    pub fn take_generated_admin_token(&mut self) -> Option<Zeroizing<String>> {
        self.generated_admin_token.take()
    }

    /// Serves until `shutdown` completes, then drains requests in flight.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let settings = self.state.settings.clone();
        let sweeper = tokio::spawn(crate::sweeper::run(
            self.state.store.clone(),
            settings.sweep_interval,
            settings.retention,
            stop_rx.clone(),
        ));
        let stop_rx_dispatch = stop_rx;
        let dispatcher = tokio::spawn(
            crate::dispatch::Dispatcher {
                store: self.state.store.clone(),
                keys: self.state.keys.clone(),
                settings: settings.clone(),
                mailer: self.mailer,
            }
            .run(stop_rx_dispatch),
        );
        let app = routes::router(self.state).into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        let _ = stop_tx.send(true);
        let _ = sweeper.await;
        let _ = dispatcher.await;
        result
    }
}

/// The generated secret lives beside the database: `keymaster.db` → `keymaster.db.secret`.
pub fn secret_path(db: &std::path::Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".secret");
    db.with_file_name(name)
}
