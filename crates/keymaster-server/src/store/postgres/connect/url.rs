//! `database_url` in libpq's multi-host form, `postgres://user@h1:5432,h2:5433/db?…`, split into
//! one sqlx [`PgConnectOptions`] per host, because sqlx 0.8 parses one host only ("invalid port
//! number" for the rest) and knows neither `target_session_attrs` nor `connect_timeout`.
//!
//! Each host becomes the URL it would be alone (same user, password, database and parameters,
//! less the two parameters read here), parsed by sqlx itself: everything sqlx understands
//! (`sslmode`, `options`, `application_name`, pgpass, `PG*` variables) keeps its meaning.
//!
//! Errors name the setting and the host's position, never the URL: its text may hold a
//! password, and a password with an unescaped `/`, `?` or `@` lands in odd places.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

/// How long a probe waits for one host to connect and answer, unless `connect_timeout` says.
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Which sessions may serve keymaster (libpq's `target_session_attrs`, the values that can
/// write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SessionAttrs {
    /// The first host that connects, whatever it is (libpq's default).
    Any,
    /// The first host whose session is not read-only (`SHOW transaction_read_only` is `off`).
    ReadWrite,
    /// The first host that is not in recovery (`pg_is_in_recovery()` is false).
    Primary,
}

impl SessionAttrs {
    fn parse(value: &str) -> Result<SessionAttrs, UrlError> {
        match value {
            "any" => Ok(SessionAttrs::Any),
            "read-write" => Ok(SessionAttrs::ReadWrite),
            "primary" => Ok(SessionAttrs::Primary),
            "read-only" | "standby" | "prefer-standby" => Err(UrlError(format!(
                "target_session_attrs={value} cannot serve keymaster, which writes: use \
                 read-write, primary or any"
            ))),
            _ => Err(UrlError(
                "target_session_attrs must be read-write, primary or any".into(),
            )),
        }
    }

    /// The value as written in the URL.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SessionAttrs::Any => "any",
            SessionAttrs::ReadWrite => "read-write",
            SessionAttrs::Primary => "primary",
        }
    }
}

/// One host of the URL.
pub(crate) struct Host {
    /// `host:port` as the operator wrote it (default port filled in): for logs and errors.
    pub label: String,
    /// Everything sqlx needs to connect to it.
    pub options: PgConnectOptions,
}

/// The parsed `database_url`.
pub(crate) struct Targets {
    /// In the URL's order, which is the order they are tried in.
    pub hosts: Vec<Host>,
    pub attrs: SessionAttrs,
    /// How long one host may take to connect and answer a probe (`connect_timeout`, seconds).
    pub probe_timeout: Duration,
}

impl std::fmt::Debug for Targets {
    // By hand: `PgConnectOptions`' own Debug shows the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<&str> = self.hosts.iter().map(|h| h.label.as_str()).collect();
        f.debug_struct("Targets")
            .field("hosts", &labels)
            .field("attrs", &self.attrs)
            .field("probe_timeout", &self.probe_timeout)
            .finish()
    }
}

/// A `database_url` that cannot be used; the text names the setting, never the URL.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("database_url: {0}")]
pub(crate) struct UrlError(String);

/// Splits a `postgres://` or `postgresql://` URL into its hosts.
pub(crate) fn parse(url: &str) -> Result<Targets, UrlError> {
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(s, _)| *s == "postgres" || *s == "postgresql")
        .ok_or_else(|| UrlError("must start with postgres:// or postgresql://".into()))?;
    // libpq's URI: the authority ends at the first `/` or `?`; the user information at the
    // last `@` in it (so an unescaped `@` in a password still works, as in libpq).
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hostlist) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, q),
        None => (tail, ""),
    };
    let query = query.split_once('#').map_or(query, |(q, _)| q);

    let specs: Vec<&str> = hostlist.split(',').collect();
    let several = specs.len() > 1;
    let mut attrs = SessionAttrs::Any;
    let mut probe_timeout = DEFAULT_PROBE_TIMEOUT;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((key, value)) = url::form_urlencoded::parse(pair.as_bytes()).next() else {
            continue;
        };
        match &*key {
            "target_session_attrs" => attrs = SessionAttrs::parse(&value)?,
            "connect_timeout" => probe_timeout = connect_timeout(&value)?,
            "host" | "hostaddr" | "port" if value.contains(',') => {
                return Err(UrlError(format!(
                    "a list in the {key} parameter is not supported: write the hosts in the \
                     URL itself, postgres://user@host1:5432,host2:5432/db"
                )))
            }
            "host" | "hostaddr" | "port" if several => {
                return Err(UrlError(format!(
                    "the {key} parameter would apply to every one of the URL's hosts: write \
                     each host and port in the URL itself"
                )))
            }
            _ => kept.push(pair),
        }
    }
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };

    let mut hosts = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let at = |why: &str| {
            if several {
                UrlError(format!("host {} of {}: {why}", i + 1, specs.len()))
            } else {
                UrlError(why.to_owned())
            }
        };
        let (host, port) = split_host_port(spec).map_err(at)?;
        if host.is_empty() && several {
            return Err(at("the host is empty"));
        }
        let port_part = port.map(|p| format!(":{p}")).unwrap_or_default();
        let single = format!("{scheme}://{userinfo}{host}{port_part}{path}{query}");
        // sqlx's messages ("invalid IPv6 address", "unknown value … for `ssl_mode`") quote
        // no part of the URL's authority.
        let options = PgConnectOptions::from_str(&single).map_err(|e| at(&e.to_string()))?;
        let label = if options.get_socket().is_some() {
            format!("{} (socket)", options.get_host())
        } else {
            format!("{}:{}", options.get_host(), options.get_port())
        };
        hosts.push(Host { label, options });
    }
    Ok(Targets {
        hosts,
        attrs,
        probe_timeout,
    })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; an empty port is the default one, as in libpq.
/// The error never quotes the text: a misplaced password could be in it.
fn split_host_port(spec: &str) -> Result<(&str, Option<u16>), &'static str> {
    let (host, port) = if spec.starts_with('[') {
        let close = spec
            .find(']')
            .ok_or("an IPv6 address lacks its closing ]")?;
        let (host, after) = spec.split_at(close + 1);
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err("an IPv6 address in [ ] must be followed by :port or nothing"),
            },
        }
    } else {
        match spec.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (spec, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err("the port is not a number from 1 to 65535"),
        },
    };
    Ok((host, port))
}

/// libpq's `connect_timeout`: whole seconds; libpq reads 0 as "wait forever", which would let
/// one silent host stall the search for the primary, so it is refused.
fn connect_timeout(value: &str) -> Result<Duration, UrlError> {
    match value.trim().parse::<u64>() {
        Ok(s) if (1..=3600).contains(&s) => Ok(Duration::from_secs(s)),
        _ => Err(UrlError(
            "connect_timeout must be a whole number of seconds from 1 to 3600".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(url: &str) -> Vec<(String, u16)> {
        parse(url)
            .unwrap()
            .hosts
            .iter()
            .map(|h| (h.options.get_host().to_owned(), h.options.get_port()))
            .collect()
    }

    #[test]
    fn several_hosts_each_with_its_port_or_the_default() {
        assert_eq!(
            hosts("postgres://km@db1:5433,db2,db3:6000/keymaster"),
            vec![
                ("db1".into(), 5433),
                ("db2".into(), 5432),
                ("db3".into(), 6000)
            ]
        );
        // libpq's empty port is the default one.
        assert_eq!(hosts("postgres://km@db1:/k"), vec![("db1".into(), 5432)]);
    }

    #[test]
    fn ipv6_addresses_in_brackets() {
        assert_eq!(
            hosts("postgresql://km@[::1]:5433,[2001:db8::7],10.0.0.2:5432/k"),
            vec![
                ("[::1]".into(), 5433),
                ("[2001:db8::7]".into(), 5432),
                ("10.0.0.2".into(), 5432)
            ]
        );
        let t = parse("postgres://km@[::1]:5433,h/k").unwrap();
        assert_eq!(t.hosts[0].label, "[::1]:5433");
        assert_eq!(t.hosts[1].label, "h:5432");
    }

    #[test]
    fn user_password_database_and_parameters_go_to_every_host() {
        let t = parse(
            "postgres://km:s%40cret@h1:5432,h2:5433/keymaster?sslmode=require\
             &application_name=km&target_session_attrs=read-write&options=-c%20statement_timeout%3D5s",
        )
        .unwrap();
        assert_eq!(t.attrs, SessionAttrs::ReadWrite);
        for h in &t.hosts {
            assert_eq!(h.options.get_username(), "km");
            assert_eq!(h.options.get_database(), Some("keymaster"));
            assert!(matches!(
                h.options.get_ssl_mode(),
                sqlx::postgres::PgSslMode::Require
            ));
            assert_eq!(h.options.get_application_name(), Some("km"));
            assert_eq!(h.options.get_options(), Some("-c statement_timeout=5s"));
            // The password survives (percent-decoded by sqlx) but is never shown.
            let shown = format!("{t:?}");
            assert!(!shown.contains("cret"), "{shown}");
        }
    }

    #[test]
    fn an_unescaped_at_sign_in_the_password_is_taken_as_libpq_does() {
        assert_eq!(
            hosts("postgres://km:p@ss@h1,h2:5433/k"),
            vec![("h1".into(), 5432), ("h2".into(), 5433)]
        );
    }

    #[test]
    fn target_session_attrs_values() {
        let attrs = |q: &str| parse(&format!("postgres://h/k?{q}")).map(|t| t.attrs);
        assert_eq!(attrs(""), Ok(SessionAttrs::Any));
        assert_eq!(attrs("target_session_attrs=any"), Ok(SessionAttrs::Any));
        assert_eq!(
            attrs("target_session_attrs=read-write"),
            Ok(SessionAttrs::ReadWrite)
        );
        assert_eq!(
            attrs("target_session_attrs=primary"),
            Ok(SessionAttrs::Primary)
        );
        let e = attrs("target_session_attrs=standby")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("database_url: target_session_attrs=standby"),
            "{e}"
        );
        let e = attrs("target_session_attrs=READWRITE")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "database_url: target_session_attrs must be read-write, primary or any"
        );
    }

    #[test]
    fn connect_timeout_is_read_here_and_bounded() {
        let t = parse("postgres://h/k?connect_timeout=7").unwrap();
        assert_eq!(t.probe_timeout, Duration::from_secs(7));
        assert_eq!(
            parse("postgres://h/k").unwrap().probe_timeout,
            DEFAULT_PROBE_TIMEOUT
        );
        for bad in ["0", "-1", "x", "1.5"] {
            let e = parse(&format!("postgres://h/k?connect_timeout={bad}")).unwrap_err();
            assert!(e.to_string().contains("connect_timeout"), "{e}");
        }
    }

    #[test]
    fn bad_urls_are_refused_without_showing_the_password() {
        let cases = [
            // A `/` in a password that should have been escaped: the "port" is the password.
            ("postgres://km:hunter2/x@h/k", "the port is not a number"),
            (
                "postgres://km:hunter2@h1:99999,h2/k",
                "host 1 of 2: the port",
            ),
            ("postgres://km:hunter2@h1,h2:0/k", "host 2 of 2: the port"),
            (
                "postgres://km:hunter2@h1,,h2/k",
                "host 2 of 3: the host is empty",
            ),
            ("postgres://km:hunter2@[::1/k", "closing ]"),
            (
                "postgres://km:hunter2@[::1]x,h/k",
                "must be followed by :port",
            ),
            ("mysql://km:hunter2@h/k", "must start with postgres://"),
            (
                "postgres://km:hunter2@h1/k?host=a,b",
                "a list in the host parameter",
            ),
            (
                "postgres://km:hunter2@h1,h2/k?port=5",
                "the port parameter would apply",
            ),
            (
                "postgres://km:hunter2@h1,h2/k?sslmode=sometimes",
                "host 1 of 2:",
            ),
        ];
        for (url, want) in cases {
            let e = match parse(url) {
                Ok(t) => panic!("{url} parsed: {t:?}"),
                Err(e) => e.to_string(),
            };
            assert!(e.starts_with("database_url: "), "{url}: {e}");
            assert!(e.contains(want), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{url}: {e}");
        }
    }

    #[test]
    fn one_host_parses_as_sqlx_alone_would() {
        let url = "postgres://km:pw@db.example:6543/keymaster?sslmode=disable";
        let ours = parse(url).unwrap();
        let theirs = PgConnectOptions::from_str(url).unwrap();
        assert_eq!(ours.hosts.len(), 1);
        let o = &ours.hosts[0].options;
        assert_eq!(o.get_host(), theirs.get_host());
        assert_eq!(o.get_port(), theirs.get_port());
        assert_eq!(o.get_username(), theirs.get_username());
        assert_eq!(o.get_database(), theirs.get_database());
        // The parameters read here are not passed on to sqlx, which would warn about them.
        let t = parse("postgres://h/k?target_session_attrs=primary&connect_timeout=3").unwrap();
        assert_eq!(t.hosts[0].options.get_options(), None);
    }
}
