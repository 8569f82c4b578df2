//! Request extractors whose refusals are problem+json with the API's error codes: JSON bodies
//! (malformed, unknown fields, too large), the client's address (behind trusted proxies).

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body; every failure to read it is `400 invalid_request` (or `413`).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

fn json_error(r: JsonRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge;
    }
    let detail = match &r {
        JsonRejection::MissingJsonContentType(_) => {
            "the body must be JSON with Content-Type: application/json".to_owned()
        }
        // serde's message names the field and the position, never echoes secret values
        // beyond the offending token; keep it short.
        JsonRejection::JsonDataError(e) => trim(e.body_text()),
        JsonRejection::JsonSyntaxError(e) => trim(e.body_text()),
        other => trim(other.body_text()),
    };
    ApiError::InvalidRequest(detail)
}

/// At most 300 bytes of an error message, cut at a character boundary (a field name may be
/// any Unicode; `String::truncate` inside a character would panic).
fn trim(mut s: String) -> String {
    const MAX: usize = 300;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The address of the client: the peer, or — when the peer is a trusted proxy — the
/// right-most address of `X-Forwarded-For` that is not itself a trusted proxy.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or_else(|| ApiError::Internal("no peer address".into()))?;
        Ok(ClientIp(client_ip(
            canonical(peer),
            parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok()),
            &state.settings.trusted_proxies,
        )))
    }
}

/// IPv4-mapped IPv6 addresses as plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Pure core of [`ClientIp`].
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded: impl Iterator<Item = &'a str>,
    trusted: &[ipnet::IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = forwarded
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(canonical)
        .collect();
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        // Found by schemathesis: an unknown field named with 4-byte characters made the
        // message's 300th byte fall inside a character, and the cut panicked.
        for pad in 0..4 {
            let msg = format!("{}{}", "x".repeat(pad), "\u{1D54B}".repeat(200));
            let cut = trim(msg.clone());
            assert!(cut.len() <= 300 && cut.len() > 290, "{}", cut.len());
            assert!(msg.starts_with(&cut));
        }
        assert_eq!(trim("short".into()), "short");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        let xff = ["198.51.100.7, 10.2.2.2"];
        assert_eq!(
            client_ip(peer, xff.iter().copied(), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(stranger, xff.iter().copied(), &trusted), stranger);
        assert_eq!(client_ip(peer, std::iter::empty(), &trusted), peer);
        // A client cannot spoof by prepending: the right-most untrusted hop wins.
        let spoof = ["1.2.3.4, 198.51.100.7"];
        assert_eq!(
            client_ip(peer, spoof.iter().copied(), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn mapped_ipv6_is_ipv4() {
        let ip: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(canonical(ip), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
