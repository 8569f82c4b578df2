//! Settings: one typed struct, read from defaults, then a TOML file, then `KEYMASTER_*`
//! environment variables, and validated once at start with messages that name the setting.
//!
//! Not responsible for acting on the settings (opening the database, binding the socket); that
//! is `startup`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Every setting of `keymaster serve`. Each field can be set in the TOML file under its own name
/// or as `KEYMASTER_<UPPER_NAME>`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address to listen on (`--listen`).
    pub listen: String,
    /// A SQLite file path, `sqlite://PATH`, or a `postgres://` URL (`--database`).
    pub database_url: String,
    /// The server secret (code HMAC, encryption at rest). Generated beside a SQLite file when
    /// absent; required with PostgreSQL.
    pub secret: Option<Redacted>,
    /// Secrets that `secret` replaced, newest first (`KEYMASTER_PREVIOUS_SECRETS`,
    /// comma-separated): codes and sealed data made under them keep working, nothing new uses
    /// them, and sealed rows are re-sealed under `secret` in the background.
    #[serde(deserialize_with = "secret_list")]
    pub previous_secrets: Vec<Redacted>,
    /// The operator's token; generated and printed once at first start when absent.
    pub admin_token: Option<Redacted>,
    /// Shortest lifetime a key may be given.
    #[serde(with = "duration")]
    pub min_ttl: Duration,
    /// Longest lifetime a key may be given.
    #[serde(with = "duration")]
    pub max_ttl: Duration,
    /// Lifetime of a key whose policy names none.
    #[serde(with = "duration")]
    pub default_ttl: Duration,
    /// How often expired keys are removed and reported.
    #[serde(with = "duration")]
    pub sweep_interval: Duration,
    /// How long the record of a finished key (and the tombstone of a dead code) is kept.
    #[serde(with = "duration")]
    pub retention: Duration,
    /// How long an audit row is kept after it was written; `0`: for ever.
    #[serde(with = "duration")]
    pub audit_retention: Duration,
    /// PEM certificate chain: with `tls_key`, `serve` speaks HTTPS; `SIGHUP` reads both again.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// `smtp://` or `smtps://` URL of the mail relay; e-mail notifications are off without it.
    pub smtp_url: Option<Redacted>,
    /// Sender address of notification e-mails.
    pub smtp_from: String,
    /// Allow webhooks to every address, private and special-purpose ones included (tests,
    /// intranets); see `netguard`. Deliveries never use a proxy either way.
    pub allow_private_webhooks: bool,
    /// First retry delay of a webhook delivery; doubles up to one hour.
    #[serde(with = "duration")]
    pub webhook_backoff_base: Duration,
    /// Attempts before a delivery is marked failed.
    pub webhook_max_attempts: u32,
    /// Time limit of one webhook request.
    #[serde(with = "duration")]
    pub webhook_timeout: Duration,
    /// Deliveries in flight at once to one endpoint (a webhook URL's scheme and authority, or
    /// the SMTP relay); each endpoint has its own.
    pub webhook_concurrency: usize,
    /// Failed attempts in a row after which an endpoint is paused (circuit breaker).
    pub webhook_breaker_failures: u32,
    /// First pause of an endpoint; doubles while the probe after it fails, up to one hour.
    #[serde(with = "duration")]
    pub webhook_breaker_pause: Duration,
    /// Failed retrievals a service may make per minute before it gets `429`.
    pub failed_retrievals_per_minute: u32,
    /// Failed authentications a source address may make per minute before it gets `429`.
    pub failed_auth_per_minute: u32,
    /// New codes one key may be given within an hour (`POST /v1/keys/{id}/code`); beyond it
    /// the holder gets `429` with `Retry-After`.
    pub recodes_per_hour: u32,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// SQLite only: `synchronous=FULL` (true, durable) or `NORMAL`.
    pub sqlite_synchronous_full: bool,
    /// Serve the browser demo under `/demo/` (also `keymaster serve --demo`). Off unless asked
    /// for, and refused with a `listen` address that is not loopback: the demo acts without
    /// credentials (within its own demo tenant), which is for a developer's own machine.
    pub demo: bool,
    /// Longest time one request may take, from its headers being read to its answer, body
    /// upload included; past it the answer is `503 unavailable`. The event stream is exempt.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Longest time a client may take to send a request's headers (and the longest an idle
    /// keep-alive connection is kept); past it the connection is closed (slow-loris). Longer
    /// than a load balancer's usual 60 s idle timeout, so that clients do not race a closing
    /// connection.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) in bytes, at least 8192; a larger one
    /// is answered `431` and the connection closed.
    pub max_header_bytes: usize,
    /// Open connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Requests handled at once over all connections; further requests wait (and time out
    /// after `request_timeout`).
    pub max_concurrent_requests: usize,
    /// Event streams (`GET /v1/keys/{id}/events`) open at once over the whole server, counted
    /// apart from `max_concurrent_requests`; beyond it a new stream is `429 rate_limited`. At
    /// most half of `max_connections`, so that streams cannot take the connections that
    /// `/healthz`, `/readyz` and retrievals need. (Each holder token has at most 4 besides.)
    pub max_event_streams: usize,
    /// Server-side key generations (`generate`) running at once; beyond it a deposit with
    /// `generate` is `429 rate_limited` at once. Default: the number of cores.
    pub max_concurrent_generations: usize,
    /// On SIGTERM, how long requests in flight may take to finish before the server exits.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// How lines on stderr are written: `text` for people, `json` (one object a line, with
    /// `timestamp`, `level`, `message` and the request's `request_id` at the top level) for a
    /// log collector.
    pub log_format: LogFormat,
}

/// The format of the log lines on stderr (`log_format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (tracing-subscriber's default format).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:8080".to_owned(),
            database_url: "keymaster.db".to_owned(),
            secret: None,
            previous_secrets: Vec::new(),
            admin_token: None,
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(30 * 86_400),
            default_ttl: Duration::from_secs(86_400),
            sweep_interval: Duration::from_secs(5),
            retention: Duration::from_secs(7 * 86_400),
            audit_retention: Duration::from_secs(365 * 86_400),
            tls_cert: None,
            tls_key: None,
            smtp_url: None,
            smtp_from: "keymaster@localhost".to_owned(),
            allow_private_webhooks: false,
            webhook_backoff_base: Duration::from_secs(2),
            webhook_max_attempts: 15,
            webhook_timeout: Duration::from_secs(10),
            webhook_concurrency: 16,
            webhook_breaker_failures: 5,
            webhook_breaker_pause: Duration::from_secs(30),
            failed_retrievals_per_minute: 20,
            failed_auth_per_minute: 20,
            recodes_per_hour: 10,
            trusted_proxies: Vec::new(),
            sqlite_synchronous_full: true,
            demo: false,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(65),
            max_header_bytes: 32 * 1024,
            max_connections: 1024,
            max_concurrent_requests: 256,
            max_event_streams: 512,
            max_concurrent_generations: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            shutdown_grace: Duration::from_secs(10),
            log_format: LogFormat::Text,
        }
    }
}

/// The names that may come from the environment as `KEYMASTER_<NAME>`. Other `KEYMASTER_*`
/// variables belong to the command line tools (`KEYMASTER_URL`, `KEYMASTER_APP_KEY`, …).
const ENV_KEYS: &[&str] = &[
    "listen",
    "database_url",
    "secret",
    "previous_secrets",
    "admin_token",
    "min_ttl",
    "max_ttl",
    "default_ttl",
    "sweep_interval",
    "retention",
    "audit_retention",
    "tls_cert",
    "tls_key",
    "smtp_url",
    "smtp_from",
    "allow_private_webhooks",
    "webhook_backoff_base",
    "webhook_max_attempts",
    "webhook_timeout",
    "webhook_concurrency",
    "webhook_breaker_failures",
    "webhook_breaker_pause",
    "failed_retrievals_per_minute",
    "failed_auth_per_minute",
    "recodes_per_hour",
    "trusted_proxies",
    "sqlite_synchronous_full",
    "demo",
    "request_timeout",
    "header_read_timeout",
    "max_header_bytes",
    "max_connections",
    "max_concurrent_requests",
    "max_event_streams",
    "max_concurrent_generations",
    "shutdown_grace",
    "log_format",
];

/// The smallest `max_header_bytes` the HTTP/1 parser accepts (hyper's minimum buffer).
pub const MIN_HEADER_BYTES: usize = 8192;

/// A setting that failed to load or validate; the message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// What the sweeper keeps: `retention` and `audit_retention` (`0`: the audit log for ever).
    pub fn retention(&self) -> crate::store::retention::Retention {
        crate::store::retention::Retention {
            records: self.retention,
            audit: (!self.audit_retention.is_zero()).then_some(self.audit_retention),
        }
    }

    /// Reads defaults, then `file` (TOML) if given, then the environment; validates.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let settings = Settings::read(file)?;
        settings.validate()?;
        Ok(settings)
    }

    /// [`Settings::load`] without [`Settings::validate`], for a caller that changes settings
    /// (command-line flags) before validating them together: the relations between settings
    /// are checked on the values that will be used.
    pub fn read(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(Env::prefixed("KEYMASTER_").only(ENV_KEYS));
        fig.extract().map_err(|e| ConfigError(e.to_string()))
    }

    /// Checks relations between settings that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.min_ttl.is_zero() {
            return Err(ConfigError("min_ttl must be positive".into()));
        }
        if self.min_ttl > self.max_ttl {
            return Err(ConfigError("min_ttl must not exceed max_ttl".into()));
        }
        if self.default_ttl < self.min_ttl || self.default_ttl > self.max_ttl {
            return Err(ConfigError(
                "default_ttl must lie between min_ttl and max_ttl".into(),
            ));
        }
        if self.sweep_interval.is_zero() {
            return Err(ConfigError("sweep_interval must be positive".into()));
        }
        if self.failed_retrievals_per_minute == 0 || self.failed_auth_per_minute == 0 {
            return Err(ConfigError(
                "failed_retrievals_per_minute and failed_auth_per_minute must be at least 1".into(),
            ));
        }
        if self.recodes_per_hour == 0 {
            return Err(ConfigError("recodes_per_hour must be at least 1".into()));
        }
        if self.webhook_max_attempts == 0 {
            return Err(ConfigError(
                "webhook_max_attempts must be at least 1".into(),
            ));
        }
        if self.webhook_concurrency == 0 || self.webhook_breaker_failures == 0 {
            return Err(ConfigError(
                "webhook_concurrency and webhook_breaker_failures must be at least 1".into(),
            ));
        }
        if self.request_timeout.is_zero() || self.header_read_timeout.is_zero() {
            return Err(ConfigError(
                "request_timeout and header_read_timeout must be positive".into(),
            ));
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(ConfigError(format!(
                "max_header_bytes must be at least {MIN_HEADER_BYTES}"
            )));
        }
        if self.max_connections == 0 || self.max_concurrent_requests == 0 {
            return Err(ConfigError(
                "max_connections and max_concurrent_requests must be at least 1".into(),
            ));
        }
        if self.max_event_streams == 0 || self.max_concurrent_generations == 0 {
            return Err(ConfigError(
                "max_event_streams and max_concurrent_generations must be at least 1".into(),
            ));
        }
        if self.max_event_streams > self.max_connections / 2 {
            return Err(ConfigError(format!(
                "max_event_streams ({}) must be at most half of max_connections ({}): each stream \
                 holds a connection, and the rest are for other requests",
                self.max_event_streams, self.max_connections
            )));
        }
        if let Some(secret) = &self.secret {
            if secret.0.len() < 32 {
                return Err(ConfigError(
                    "secret (KEYMASTER_SECRET) must be at least 32 characters".into(),
                ));
            }
        }
        if let Some(short) = self.previous_secrets.iter().position(|s| s.0.len() < 32) {
            return Err(ConfigError(format!(
                "previous_secrets (KEYMASTER_PREVIOUS_SECRETS): entry {} is shorter than 32 \
                 characters",
                short + 1
            )));
        }
        if let Some(token) = &self.admin_token {
            if token.0.len() < 16 {
                return Err(ConfigError(
                    "admin_token (KEYMASTER_ADMIN_TOKEN) must be at least 16 characters".into(),
                ));
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError(
                "tls_cert and tls_key (KEYMASTER_TLS_CERT, KEYMASTER_TLS_KEY) go together: \
                 give both for HTTPS, or neither"
                    .into(),
            ));
        }
        if let Database::Postgres(url) = self.database() {
            // Several hosts, `target_session_attrs`: checked here so that a bad URL is a
            // setting's error at start, not a database error.
            crate::store::postgres::connect::parse(&url).map_err(|e| ConfigError(e.to_string()))?;
        }
        let listen = self.listen_addr()?;
        if self.demo && !listen.ip().is_loopback() {
            return Err(ConfigError(format!(
                "demo (KEYMASTER_DEMO, serve --demo) is only for a loopback listen address, \
                 and listen is {}: listen on 127.0.0.1 or ::1, or turn the demo off",
                self.listen
            )));
        }
        Ok(())
    }

    /// The parsed `listen` address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .parse()
            .map_err(|_| ConfigError(format!("listen: {:?} is not an address:port", self.listen)))
    }

    /// Which backend `database_url` selects.
    pub fn database(&self) -> Database {
        let url = self.database_url.as_str();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Database::Postgres(url.to_owned())
        } else {
            let path = url.strip_prefix("sqlite://").unwrap_or(url);
            Database::Sqlite(PathBuf::from(path))
        }
    }
}

/// The backend chosen by `database_url`.
#[derive(Clone, Debug, PartialEq)]
pub enum Database {
    /// An embedded SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

/// A secret setting: usable, but never printed by `Debug`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Redacted(pub String);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// A list of secrets: a TOML array, or one string of comma-separated secrets (the form an
/// environment variable takes); blanks around each are dropped, and so are empty entries.
fn secret_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Redacted>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Text(String),
    }
    let items = match Raw::deserialize(d)? {
        Raw::List(l) => l,
        Raw::Text(t) => t.split(',').map(str::to_owned).collect(),
    };
    Ok(items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| Redacted(s.to_owned()))
        .collect())
}

/// Durations written `250ms`, `5s`, `1h`, `30d` (humantime), or a bare number of seconds.
mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{t:?} is not a duration like 250ms, 5s, 1h or 30d ({e})"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_the_spec_forms() {
        let fig = Figment::from(Serialized::defaults(Settings::default())).merge(
            figment::providers::Toml::string(
                "min_ttl = \"1s\"\nsweep_interval = \"250ms\"\nmax_ttl = \"30d\"",
            ),
        );
        let s: Settings = fig.extract().unwrap();
        assert_eq!(s.min_ttl, Duration::from_secs(1));
        assert_eq!(s.sweep_interval, Duration::from_millis(250));
        assert_eq!(s.max_ttl, Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn the_audit_log_is_kept_a_year_unless_told_otherwise() {
        let audit = |toml: &str| {
            let fig = Figment::from(Serialized::defaults(Settings::default()))
                .merge(figment::providers::Toml::string(toml));
            fig.extract::<Settings>().unwrap().retention().audit
        };
        assert_eq!(audit(""), Some(Duration::from_secs(365 * 86_400)));
        assert_eq!(
            audit("audit_retention = \"90d\""),
            Some(Duration::from_secs(90 * 86_400))
        );
        assert_eq!(audit("audit_retention = 0"), None);
        assert_eq!(audit("audit_retention = \"0s\""), None);
    }

    #[test]
    fn previous_secrets_are_a_list_or_comma_separated() {
        let (a, b) = ("a".repeat(32), "b".repeat(40));
        // The environment's form: one string (a variable of this test's own prefix, so that
        // no other test sees it).
        std::env::set_var("KMTEST_ROTATION_PREVIOUS_SECRETS", format!(" {a} ,{b},"));
        let from_env: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Env::prefixed("KMTEST_ROTATION_").only(&["previous_secrets"]))
            .extract()
            .unwrap();
        std::env::remove_var("KMTEST_ROTATION_PREVIOUS_SECRETS");
        assert_eq!(
            from_env.previous_secrets,
            vec![Redacted(a.clone()), Redacted(b.clone())]
        );
        assert!(from_env.validate().is_ok());
        let from_toml: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string(&format!("previous_secrets = [\"{b}\"]")))
            .extract()
            .unwrap();
        assert_eq!(from_toml.previous_secrets, vec![Redacted(b)]);
        assert!(Settings::default().previous_secrets.is_empty());
        let short = Settings {
            previous_secrets: vec![Redacted(a), Redacted("short".into())],
            ..Settings::default()
        };
        let err = short.validate().unwrap_err().0;
        assert!(
            err.contains("previous_secrets") && err.contains("entry 2"),
            "{err}"
        );
        assert!(!format!("{short:?}").contains("aaaa"));
    }

    #[test]
    fn unknown_setting_is_refused_with_its_name() {
        let fig = Figment::from(Serialized::defaults(Settings::default()))
            .merge(figment::providers::Toml::string("min_tll = \"1s\""));
        let err = fig.extract::<Settings>().unwrap_err().to_string();
        assert!(err.contains("min_tll"), "{err}");
    }

    #[test]
    fn log_format_is_text_unless_json_is_asked_for() {
        assert_eq!(Settings::default().log_format, LogFormat::Text);
        let read = |toml: &str| {
            Figment::from(Serialized::defaults(Settings::default()))
                .merge(figment::providers::Toml::string(toml))
                .extract::<Settings>()
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            read("log_format = \"json\"").unwrap().log_format,
            LogFormat::Json
        );
        let err = read("log_format = \"xml\"").unwrap_err();
        assert!(err.contains("log_format") || err.contains("xml"), "{err}");
    }

    #[test]
    fn tls_cert_and_key_go_together() {
        let cert_only = Settings {
            tls_cert: Some("cert.pem".into()),
            ..Settings::default()
        };
        assert!(cert_only.validate().unwrap_err().0.contains("tls_key"));
        let both = Settings {
            tls_key: Some("key.pem".into()),
            ..cert_only
        };
        assert!(both.validate().is_ok());
    }

    #[test]
    fn bad_relations_are_refused() {
        let s = Settings {
            min_ttl: Duration::from_secs(100),
            max_ttl: Duration::from_secs(10),
            ..Settings::default()
        };
        assert!(s.validate().unwrap_err().0.contains("min_ttl"));
        let s = Settings {
            secret: Some(Redacted("short".into())),
            ..Settings::default()
        };
        assert!(s.validate().unwrap_err().0.contains("KEYMASTER_SECRET"));
        let s = Settings {
            max_connections: 100,
            max_event_streams: 51,
            ..Settings::default()
        };
        let err = s.validate().unwrap_err().0;
        assert!(
            err.contains("max_event_streams") && err.contains("max_connections"),
            "{err}"
        );
        let s = Settings {
            max_concurrent_generations: 0,
            ..Settings::default()
        };
        assert!(s
            .validate()
            .unwrap_err()
            .0
            .contains("max_concurrent_generations"));
    }

    #[test]
    fn stream_and_generation_limits_have_consistent_defaults() {
        let d = Settings::default();
        assert_eq!(d.max_event_streams, 512);
        assert!(d.max_concurrent_generations >= 1);
        assert!(d.validate().is_ok());
        for name in ["max_event_streams", "max_concurrent_generations"] {
            assert!(
                ENV_KEYS.contains(&name),
                "{name} is not read from KEYMASTER_*"
            );
        }
    }

    #[test]
    fn the_demo_is_off_by_default_and_refused_off_loopback() {
        assert!(!Settings::default().demo);
        for listen in ["127.0.0.1:8080", "[::1]:8080"] {
            let s = Settings {
                demo: true,
                listen: listen.into(),
                ..Settings::default()
            };
            assert!(s.validate().is_ok(), "{listen}");
        }
        for listen in ["0.0.0.0:8080", "[::]:8080", "10.0.0.1:8080"] {
            let s = Settings {
                demo: true,
                listen: listen.into(),
                ..Settings::default()
            };
            let err = s.validate().unwrap_err().0;
            assert!(err.contains("demo") && err.contains(listen), "{err}");
            let s = Settings { demo: false, ..s };
            assert!(s.validate().is_ok(), "{listen}");
        }
    }

    #[test]
    fn database_url_selects_backend() {
        let mut s = Settings::default();
        assert_eq!(s.database(), Database::Sqlite("keymaster.db".into()));
        s.database_url = "postgres://u@h/db".into();
        assert!(matches!(s.database(), Database::Postgres(_)));
    }

    #[test]
    fn a_postgres_url_is_checked_with_the_settings() {
        let s = Settings {
            database_url: "postgres://u:pw@h1:5432,h2:5433/db?target_session_attrs=read-write"
                .into(),
            ..Settings::default()
        };
        assert!(s.validate().is_ok());
        let s = Settings {
            database_url: "postgres://u:hunter2@h1,h2/db?target_session_attrs=standby".into(),
            ..s
        };
        let err = s.validate().unwrap_err().0;
        assert!(
            err.starts_with("database_url: target_session_attrs"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn redacted_debug_hides_value() {
        let s = format!("{:?}", Redacted("topsecret".into()));
        assert!(!s.contains("topsecret"));
    }
}
