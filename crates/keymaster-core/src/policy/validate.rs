//! Validation at deposit: [`Policy::from_input`] and [`resolve_expiry`].
//!
//! Every rule is parsed into the type [`super::decide`] works with, so that a stored
//! [`Policy`] is valid by construction; each error names the JSON path of the value it is
//! about. This module does not hash the password (the server does, with argon2id) and does
//! not look at the service's enrolment.

use std::net::IpAddr;

use ipnet::IpNet;
use jiff::{SignedDuration, Timestamp};

use super::{
    domain, Geo, Policy, PolicyError, PolicyLimits, TimeWindow, DEFAULT_CONFIRM_GRACE_SECONDS,
};
use crate::wire::PolicyInput;

/// Allowed range of `max_retrievals`.
const MAX_RETRIEVALS: std::ops::RangeInclusive<u32> = 1..=100;
/// Allowed range of `confirm_grace_seconds`: at least a second, at most a day.
const CONFIRM_GRACE_SECONDS: std::ops::RangeInclusive<u32> = 1..=86_400;
/// Longest password accepted, in bytes (argon2 hashes any length; this bounds the work).
const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest service id accepted in `services`, in bytes.
const MAX_SERVICE_ID_BYTES: usize = 200;

impl Policy {
    /// Validates a deposit's policy; returns the policy and the key's absolute expiry.
    ///
    /// - `ttl_seconds` / `expires_at`: see [`resolve_expiry`].
    /// - `max_retrievals`: 1 to 100, default 1.
    /// - `password`: non-empty, at most 1024 bytes; only its presence is kept.
    /// - `services`, `domains`, `fetcher_cidrs`: non-empty lists when given. Domains are
    ///   normalised (lower case, no trailing dot, valid host name labels). A CIDR may be IPv4 or
    ///   IPv6; a bare address is a /32 or /128; host bits are cleared (`10.1.2.3/8` is
    ///   `10.0.0.0/8`).
    /// - `time_window`: see [`TimeWindow::parse`]; `geo`: see [`Geo::parse`].
    /// - `proximity`: `same_network` (the wire type admits nothing else).
    /// - `confirm_grace_seconds`: 1 to 86400, default 300.
    ///
    /// Errors name the field as a JSON path below `policy`, e.g. `policy.fetcher_cidrs[1]`.
    pub fn from_input(
        input: &PolicyInput,
        now: Timestamp,
        limits: &PolicyLimits,
    ) -> Result<(Policy, Timestamp), PolicyError> {
        let expires_at = resolve_expiry(input.ttl_seconds, input.expires_at, now, limits)
            .map_err(|e| e.prefixed("policy"))?;
        let policy = Policy {
            max_retrievals: max_retrievals(input.max_retrievals)?,
            has_password: has_password(input.password.as_deref())?,
            services: optional_list("services", input.services.as_deref(), service_id)?,
            domains: optional_list("domains", input.domains.as_deref(), domain::normalise)?,
            fetcher_cidrs: optional_list("fetcher_cidrs", input.fetcher_cidrs.as_deref(), cidr)?,
            time_window: input
                .time_window
                .as_ref()
                .map(|w| TimeWindow::parse(w).map_err(|e| e.prefixed("policy.time_window")))
                .transpose()?,
            geo: input
                .geo
                .as_ref()
                .map(|g| Geo::parse(g).map_err(|e| e.prefixed("policy.geo")))
                .transpose()?,
            proximity: input.proximity,
            require_confirmation: input.require_confirmation.unwrap_or(false),
            confirm_grace_seconds: confirm_grace(input.confirm_grace_seconds)?,
        };
        Ok((policy, expires_at))
    }
}

/// Resolves a key's absolute expiry from `ttl_seconds` or `expires_at` (at most one; neither
/// means `limits.default_ttl_seconds`). The resulting lifetime, `expiry - now`, must lie within
/// `[min_ttl_seconds, max_ttl_seconds]`.
///
/// Used at deposit and by `PATCH /v1/keys/{id}`. Error fields are the bare body fields
/// (`ttl_seconds`, `expires_at`); [`Policy::from_input`] prefixes them with `policy.`.
pub fn resolve_expiry(
    ttl_seconds: Option<i64>,
    expires_at: Option<Timestamp>,
    now: Timestamp,
    limits: &PolicyLimits,
) -> Result<Timestamp, PolicyError> {
    let bounds = || {
        format!(
            "the key's lifetime must be between {} and {} seconds from now",
            limits.min_ttl_seconds, limits.max_ttl_seconds
        )
    };
    let in_bounds =
        |seconds: i64| (limits.min_ttl_seconds..=limits.max_ttl_seconds).contains(&seconds);
    let from_ttl = |field: &str, seconds: i64| {
        if !in_bounds(seconds) {
            return Err(PolicyError::new(field, bounds()));
        }
        now.checked_add(SignedDuration::from_secs(seconds))
            .map_err(|_| PolicyError::new(field, "lies beyond the supported range of time"))
    };
    match (ttl_seconds, expires_at) {
        (Some(_), Some(_)) => Err(PolicyError::new(
            "expires_at",
            "give either ttl_seconds or expires_at, not both",
        )),
        (Some(ttl), None) => from_ttl("ttl_seconds", ttl),
        (None, None) => from_ttl("ttl_seconds", limits.default_ttl_seconds),
        (None, Some(at)) => {
            let life = at.duration_since(now);
            let min = SignedDuration::from_secs(limits.min_ttl_seconds);
            let max = SignedDuration::from_secs(limits.max_ttl_seconds);
            if life < min || life > max {
                return Err(PolicyError::new("expires_at", bounds()));
            }
            Ok(at)
        }
    }
}

/// `max_retrievals`: 1 to 100, default 1.
fn max_retrievals(given: Option<u32>) -> Result<u32, PolicyError> {
    let value = given.unwrap_or(1);
    if MAX_RETRIEVALS.contains(&value) {
        Ok(value)
    } else {
        Err(PolicyError::new(
            "policy.max_retrievals",
            format!(
                "must be between {} and {}",
                MAX_RETRIEVALS.start(),
                MAX_RETRIEVALS.end()
            ),
        ))
    }
}

/// `password`: whether one is required. The message never repeats it.
fn has_password(given: Option<&str>) -> Result<bool, PolicyError> {
    match given {
        None => Ok(false),
        Some("") => Err(PolicyError::new(
            "policy.password",
            "must not be empty (omit it for no password)",
        )),
        Some(p) if p.len() > MAX_PASSWORD_BYTES => Err(PolicyError::new(
            "policy.password",
            format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
        )),
        Some(_) => Ok(true),
    }
}

/// `confirm_grace_seconds`: 1 to 86400, default 300.
fn confirm_grace(given: Option<u32>) -> Result<u32, PolicyError> {
    let value = given.unwrap_or(DEFAULT_CONFIRM_GRACE_SECONDS);
    if CONFIRM_GRACE_SECONDS.contains(&value) {
        Ok(value)
    } else {
        Err(PolicyError::new(
            "policy.confirm_grace_seconds",
            format!(
                "must be between {} and {} seconds",
                CONFIRM_GRACE_SECONDS.start(),
                CONFIRM_GRACE_SECONDS.end()
            ),
        ))
    }
}

/// Parses an optional list: `None` stays `None`; a given list must not be empty and each
/// element is parsed by `parse`, whose message is reported under `policy.<name>[i]`.
fn optional_list<T>(
    name: &str,
    list: Option<&[String]>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<Vec<T>>, PolicyError> {
    let Some(list) = list else {
        return Ok(None);
    };
    if list.is_empty() {
        return Err(PolicyError::new(
            format!("policy.{name}"),
            "must not be empty (omit it to allow any)",
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            parse(item).map_err(|m| PolicyError::new(format!("policy.{name}[{i}]"), m))
        })
        .collect::<Result<Vec<T>, _>>()
        .map(Some)
}

/// A service id: non-empty, printable, at most 200 bytes. (Whether such a service exists is
/// not checked: a policy may name a service enrolled later.)
fn service_id(id: &str) -> Result<String, String> {
    if id.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if id.len() > MAX_SERVICE_ID_BYTES {
        return Err(format!("must be at most {MAX_SERVICE_ID_BYTES} bytes"));
    }
    if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters".to_owned());
    }
    Ok(id.to_owned())
}

/// An IPv4 or IPv6 network, or a bare address (a /32 or /128). Host bits are cleared; nothing
/// is trimmed.
pub fn cidr(text: &str) -> Result<IpNet, String> {
    let net = if text.contains('/') {
        text.parse::<IpNet>().ok()
    } else {
        text.parse::<IpAddr>().ok().map(IpNet::from)
    };
    net.map(|n| n.trunc()).ok_or_else(|| {
        format!("`{text}` is not an IP address or CIDR, e.g. 203.0.113.0/24 or 2001:db8::/32")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        for (text, want) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("198.51.100.7", "198.51.100.7/32"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("2001:db8::1", "2001:db8::1/128"),
            ("::ffff:10.0.0.0/104", "::ffff:10.0.0.0/104"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("::/0", "::/0"),
        ] {
            assert_eq!(cidr(text).unwrap().to_string(), want, "{text}");
        }
        for text in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "2001:db8::/129",
            "example.com",
            "10.0.0.0/",
            "/8",
            " 10.0.0.0/8",
            "10.0.0.0/8/8",
            "256.0.0.1",
        ] {
            assert!(cidr(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn service_ids() {
        assert!(service_id("svc_01HZX").is_ok());
        for id in ["", "a b", "tab\t", "x".repeat(201).as_str()] {
            assert!(service_id(id).is_err(), "{id:?}");
        }
    }
}
