//! Start-up: settings → store, secret, admin token, metrics → an `App` bound to its listener.
//!
//! `App::build` does everything that can fail before serving; `run_until_stopped` takes the
//! shutdown signal as an argument so that tests and `serve` stop it the same way.
//!
//! The accept loop is written out (hyper's HTTP/1 connection builder rather than `axum::serve`)
//! because the defences against slow and greedy clients live at the connection level, where
//! `axum::serve` has no settings: a header read timeout (slow-loris; it also closes idle
//! keep-alive connections), a bound on the request head's size, and a cap on open connections.
//! HTTP/1 only: with the HTTP/2 prior-knowledge sniffing of an "auto" connection, a client that
//! sends nothing would sit before the header timeout starts.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use keymaster_core::policy::PolicyLimits;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::Service;
use zeroize::Zeroizing;

use crate::config::{Database, Settings};
use crate::crypto::{load_or_create_secret_file, new_token, token_hash, Keys};
use crate::routes;
use crate::state::{AppState, Shared};
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
    /// The TLS certificate or key could not be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
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
    /// Set to `true` when the server starts to stop: ends the sweeper and the event streams.
    stop_tx: watch::Sender<bool>,
    /// Where the generated admin token was announced (first start only), for tests.
    generated_admin_token: Option<Zeroizing<String>>,
    /// The SMTP relay, when `smtp_url` is set.
    mailer: Option<crate::dispatch::email::Mailer>,
    /// HTTPS, when `tls_cert` and `tls_key` are set.
    tls: Option<Arc<crate::tls::Tls>>,
}

/// Bucket bounds (seconds) of the SQLite writer's `COMMIT` and WAL `fdatasync` times: 100 µs to
/// 5 s. Exported as histograms rather than the default rolling summaries, so that the latency of
/// any interval (a benchmark phase, an alert window) is the difference of two scrapes; the
/// summaries' quantiles cover the last minute whatever the interval.
const WRITER_SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03,
    0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0,
];

/// Bucket bounds of the database pages a SQLite checkpoint pass writes: 1 to 256 Ki pages
/// (512 MiB with 2 KiB pages), by powers of 4.
const CHECKPOINT_PAGES_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0,
];

/// The Prometheus builder, with the SQLite writer's and checkpointer's latencies (and the
/// checkpointer's pages) as histograms.
fn prometheus_builder() -> PrometheusBuilder {
    let builder = PrometheusBuilder::new();
    [
        "keymaster_sqlite_commit_seconds",
        "keymaster_sqlite_sync_seconds",
        "keymaster_sqlite_sync_beside_checkpoint_seconds",
        "keymaster_sqlite_checkpoint_seconds",
        "keymaster_sqlite_checkpoint_writeback_seconds",
        "keymaster_sqlite_checkpoint_sync_seconds",
    ]
    .into_iter()
    .map(|name| (name, WRITER_SECONDS_BUCKETS))
    .chain([(
        "keymaster_sqlite_checkpoint_pages",
        CHECKPOINT_PAGES_BUCKETS,
    )])
    .try_fold(builder, |b, (name, buckets)| {
        b.set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
    })
    // Only an empty bucket list fails, which the constant is not.
    .unwrap_or_else(|_| PrometheusBuilder::new())
}

fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = prometheus_builder().build_recorder();
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
        if settings
            .previous_secrets
            .iter()
            .any(|p| p.0.as_bytes() == secret.as_bytes())
        {
            return Err(crate::config::ConfigError(
                "previous_secrets (KEYMASTER_PREVIOUS_SECRETS) must not contain the current \
                 secret"
                    .into(),
            )
            .into());
        }
        let previous: Vec<&[u8]> = settings
            .previous_secrets
            .iter()
            .map(|p| p.0.as_bytes())
            .collect();
        let keys = Keys::derive_rotating(secret.as_bytes(), &previous);
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

        let tls = match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(crate::tls::Tls::load(cert, key)?)),
            _ => None,
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
        let (stop_tx, stop_rx) = watch::channel(false);
        let capacity = crate::capacity::Capacity::new(&settings);
        let endpoints = Arc::new(crate::dispatch::endpoints::Endpoints::new(
            settings.webhook_concurrency,
            settings.webhook_breaker_failures,
            settings.webhook_breaker_pause,
        ));
        let state = AppState::new(Shared {
            store,
            keys: Arc::new(keys),
            settings: Arc::new(settings),
            admin_hash: Arc::new(admin_hash),
            limits: Arc::new(limits),
            auth_budget: Arc::new(auth_budget),
            capacity,
            metrics: metrics_handle(),
            shutdown: stop_rx,
            password_verifications: Default::default(),
            endpoints,
        });
        Ok(App {
            listener,
            state,
            stop_tx,
            generated_admin_token,
            mailer,
            tls,
        })
    }

    /// The listener's TLS configuration, for reloading it (`SIGHUP`); `None` for plain HTTP.
    pub fn tls(&self) -> Option<Arc<crate::tls::Tls>> {
        self.tls.clone()
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin token made at this first start, if one was made (shown once).
    pub fn take_generated_admin_token(&mut self) -> Option<Zeroizing<String>> {
        self.generated_admin_token.take()
    }

    /// Serves until `shutdown` completes, then drains requests in flight for at most
    /// `shutdown_grace`.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let App {
            listener,
            state,
            stop_tx,
            mailer,
            tls,
            ..
        } = self;
        let settings = state.settings.clone();
        let sweeper = tokio::spawn(crate::sweeper::run(
            state.store.clone(),
            settings.sweep_interval,
            settings.retention(),
            state.shutdown.clone(),
        ));
        let resealer = tokio::spawn(crate::reseal::run(
            state.store.clone(),
            state.keys.clone(),
            state.shutdown.clone(),
        ));
        let dispatcher = tokio::spawn(
            crate::dispatch::Dispatcher {
                store: state.store.clone(),
                keys: state.keys.clone(),
                settings: settings.clone(),
                mailer,
                endpoints: state.endpoints.clone(),
                clients: Default::default(),
            }
            .run(state.shutdown.clone()),
        );

        let mut make_service =
            routes::router(state).into_make_service_with_connect_info::<SocketAddr>();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            .max_buf_size(settings.max_header_bytes)
            .keep_alive(true);
        let connections = Arc::new(Semaphore::new(settings.max_connections));
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);

        loop {
            // A free connection slot first: at the cap, new clients wait in the backlog.
            let permit = tokio::select! {
                permit = connections.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    // The semaphore is never closed; treat it as a stop all the same.
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let (stream, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, then go on serving
                        // the connections that are open.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            // `Connected<SocketAddr>`: the same `ConnectInfo` as `axum::serve` would set.
            let service = match make_service.call(remote).await {
                Ok(s) => s,
                Err(never) => match never {},
            };
            let service = TowerToHyperService::new(service);
            let Some(tls) = &tls else {
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
                continue;
            };
            // The handshake runs in the connection's own task, under the header read timeout,
            // so that a slow client holds up nobody else.
            let acceptor = tls.acceptor();
            let (http, watcher) = (http.clone(), graceful.watcher());
            let handshake_timeout = settings.header_read_timeout;
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let conn =
                            watcher.watch(http.serve_connection(TokioIo::new(stream), service));
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
                drop(permit);
            });
        }

        drop(listener);
        let _ = stop_tx.send(true);
        if tokio::time::timeout(settings.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                grace = ?settings.shutdown_grace,
                "requests still in flight after shutdown_grace; stopping anyway"
            );
        }
        let _ = sweeper.await;
        let _ = resealer.await;
        let _ = dispatcher.await;
        Ok(())
    }
}

/// The generated secret lives beside the database: `keymaster.db` → `keymaster.db.secret`.
pub fn secret_path(db: &std::path::Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".secret");
    db.with_file_name(name)
}
