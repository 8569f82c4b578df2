//! Where keymaster may send on a tenant's behalf: the webhook target rules (SSRF) and the
//! check of an e-mail target, in one place for the routes and the dispatcher.
//!
//! Responsible for:
//! - which IP addresses a webhook may reach ([`refusal`], from the table in [`registry`]);
//! - the checks of a webhook URL when it is given ([`check_url`], [`check_url_resolved`]),
//!   used at deposit and tenant creation;
//! - at every delivery, the addresses the host resolves to, all checked ([`resolve`]), and an
//!   HTTP client that connects to exactly those addresses, never through a proxy
//!   ([`Target::client`]), used by the dispatcher;
//! - the check of an e-mail address when it is given ([`check_email`]).
//!
//! Not responsible for what is sent, signatures or retries (`dispatch`), nor for the SMTP
//! relay.
//!
//! The rules. Unless `allow_private_webhooks` is set, an address is refused when it lies in a
//! block of the IANA IPv4 or IPv6 Special-Purpose Address Registry, in multicast, in the
//! deprecated site-local `fec0::/10`, or in IPv6 space that is not allocated for global
//! unicast. That is more than the registries' "Globally Reachable: False" rows: the rows
//! marked `True` are anycast services whose nearest instance is often a box in the operator's
//! own network (PCP, TURN, DNS-SD SRP, AMT, AS112) or identifiers that are not locators
//! (ORCHIDv2, DETs), and no webhook receiver lives in any of them. Two forms are judged by the
//! IPv4 address they carry, because they reach exactly that address: IPv4-mapped
//! (`::ffff:0:0/96`) and the NAT64 well-known prefix (`64:ff9b::/96`, how an IPv6-only host
//! behind DNS64 reaches IPv4 receivers). Every other form that carries an IPv4 address is
//! refused whatever it carries: 6to4 `2002::/16` and Teredo `2001::/32` leave through a relay
//! that keymaster does not choose, the local-use NAT64 prefix `64:ff9b:1::/48` embeds the
//! address at a place the operator chooses, and the IPv4-translated (`::ffff:0:0:0/96`) and
//! IPv4-compatible (`::/96`) forms are deprecated.

mod email;
pub mod registry;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

pub use email::check_email;
use registry::Rule;

/// Why an address may not be a webhook target: the block it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The registry row's block, e.g. `10.0.0.0/8`.
    pub block: IpNet,
    /// The row's name, e.g. `Private-Use`.
    pub name: &'static str,
    /// The row's RFC.
    pub rfc: &'static str,
    /// For an IPv4 address carried by an IPv6 form: that form's block and name.
    pub inside: Option<(IpNet, &'static str)>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {})", self.name, self.block, self.rfc)?;
        if let Some((block, name)) = self.inside {
            write!(f, " carried in {name} ({block})")?;
        }
        Ok(())
    }
}

/// Why `ip` may not be a webhook target, or `None` if it may.
pub fn refusal(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => refusal_v6(v6),
    }
}

fn refusal_v4(ip: Ipv4Addr) -> Option<Refusal> {
    registry::lookup_v4(ip).map(|b| Refusal {
        block: IpNet::V4(b.net),
        name: b.name,
        rfc: b.rfc,
        inside: None,
    })
}

fn refusal_v6(ip: Ipv6Addr) -> Option<Refusal> {
    let b = registry::lookup_v6(ip)?;
    match b.rule {
        Rule::Refuse => Some(Refusal {
            block: IpNet::V6(b.net),
            name: b.name,
            rfc: b.rfc,
            inside: None,
        }),
        Rule::EmbeddedIpv4 => {
            let [.., a, b2, c, d] = ip.octets();
            refusal_v4(Ipv4Addr::new(a, b2, c, d)).map(|r| Refusal {
                inside: Some((IpNet::V6(b.net), b.name)),
                ..r
            })
        }
    }
}

/// Checks a webhook URL as it is given: `http` or `https`, a host, no credentials, at most
/// 2048 characters; unless `allow_private`, a literal address must be allowed and the name
/// `localhost` (and its subdomains) is refused. The message says what is wrong.
pub fn check_url(raw: &str, allow_private: bool) -> Result<url::Url, String> {
    if raw.len() > 2048 {
        return Err("longer than 2048 characters".into());
    }
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err("must be http or https".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    let host = url.host().ok_or("has no host")?;
    if allow_private {
        return Ok(url);
    }
    let ip = match host {
        url::Host::Ipv4(v4) => IpAddr::V4(v4),
        url::Host::Ipv6(v6) => IpAddr::V6(v6),
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if d == "localhost" || d.ends_with(".localhost") {
                return Err("points at a loopback host".into());
            }
            return Ok(url);
        }
    };
    match refusal(ip) {
        Some(r) => Err(format!("points at {ip}, in {r}")),
        None => Ok(url),
    }
}

/// [`check_url`], and also refuses a host name that resolves to a refused address now. A name
/// that does not resolve yet is accepted: [`resolve`] checks it again at every delivery.
pub async fn check_url_resolved(raw: &str, allow_private: bool) -> Result<url::Url, String> {
    check_url_resolved_with(raw, allow_private, &SystemResolver).await
}

/// [`check_url_resolved`] with the given resolver.
pub async fn check_url_resolved_with(
    raw: &str,
    allow_private: bool,
    resolver: &impl Resolve,
) -> Result<url::Url, String> {
    let url = check_url(raw, allow_private)?;
    if allow_private {
        return Ok(url);
    }
    if let (Some(url::Host::Domain(host)), Some(port)) = (url.host(), url.port_or_known_default()) {
        let lookup =
            tokio::time::timeout(Duration::from_secs(2), resolver.lookup(host, port)).await;
        if let Ok(Ok(addrs)) = lookup {
            if let Some(r) = addrs.iter().find_map(|a| refusal(a.ip())) {
                return Err(format!("{host} resolves to an address in {r}"));
            }
        }
    }
    Ok(url)
}

/// Turns a host name into addresses.
pub trait Resolve: Send + Sync {
    /// The addresses of `host`, with `port`.
    fn lookup(
        &self,
        host: &str,
        port: u16,
    ) -> impl std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send;
}

/// The operating system's resolver (`getaddrinfo`, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// A webhook URL with the addresses that were checked for it; a delivery connects to these
/// and to nothing else.
#[derive(Debug, Clone)]
pub struct Target {
    url: url::Url,
    addrs: Vec<SocketAddr>,
}

impl Target {
    /// The URL.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// The checked addresses, in the resolver's order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// An HTTP client for this target: it connects to the checked addresses only (a host name
    /// is pinned to them, so a second DNS answer changes nothing), ignores the proxy
    /// environment variables (a proxy would make its own DNS lookup and connect wherever that
    /// says), and follows no redirect (a redirect would lead to an unchecked address).
    pub fn client(&self, timeout: Duration) -> reqwest::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .user_agent("keymaster-webhooks");
        if let Some(url::Host::Domain(host)) = self.url.host() {
            builder = builder.resolve_to_addrs(host, &self.addrs);
        }
        builder.build()
    }
}

/// Resolves `url`'s host with `resolver` and checks every address (a DNS answer can mix
/// public and private ones, so one refused address refuses the host); the error says why.
/// With `allow_private` the addresses are taken as they are.
pub async fn resolve(
    url: &url::Url,
    allow_private: bool,
    resolver: &impl Resolve,
) -> Result<Target, String> {
    let host = url.host_str().ok_or("no host")?;
    let port = url.port_or_known_default().ok_or("no port")?;
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(v4)) => vec![SocketAddr::new(IpAddr::V4(v4), port)],
        Some(url::Host::Ipv6(v6)) => vec![SocketAddr::new(IpAddr::V6(v6), port)],
        _ => resolver
            .lookup(host, port)
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?,
    };
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    if !allow_private {
        if let Some(r) = addrs.iter().find_map(|a| refusal(a.ip())) {
            return Err(format!("{host} resolves to an address in {r}"));
        }
    }
    Ok(Target {
        url: url.clone(),
        addrs,
    })
}

#[cfg(test)]
mod tests;
