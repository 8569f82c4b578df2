//! The `proximity` rule: the person who types the code must be on the network the key was
//! deposited from, which defeats a phished code typed in by someone far away.
//!
//! The depositor's network is its address cut to a /24 (IPv4) or a /48 (IPv6)
//! ([`origin_network`]); the server stores only that network, never the full address. The
//! rule compares it with the retrieval's `context.ip` (the end user's address as the service
//! saw it), not with the service's own address, which says nothing about where the person is.
//!
//! Refuse-only: it can deny a retrieval that every other rule allows, never allow one that
//! another rule denies. Not responsible for recording the network at deposit (the server) or
//! for the order in which rules are tried (`decide`).

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::Denial;
use crate::wire::RetrievalContext;

/// Prefix length the depositor's IPv4 address is cut to.
pub const ORIGIN_PREFIX_V4: u8 = 24;
/// Prefix length the depositor's IPv6 address is cut to.
pub const ORIGIN_PREFIX_V6: u8 = 48;

/// The network an address is counted in: its /24 (IPv4) or /48 (IPv6), host bits cleared. An
/// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a dual-stack socket reports an IPv4 peer) is
/// the IPv4 address it stands for.
pub fn origin_network(ip: IpAddr) -> IpNet {
    match ip.to_canonical() {
        // The prefix lengths are constants within range, so `new` cannot fail; the fallback
        // (the host itself) is never taken.
        IpAddr::V4(v4) => Ipv4Net::new(v4, ORIGIN_PREFIX_V4)
            .map(|n| IpNet::V4(n.trunc()))
            .unwrap_or_else(|_| IpNet::from(IpAddr::V4(v4))),
        IpAddr::V6(v6) => Ipv6Net::new(v6, ORIGIN_PREFIX_V6)
            .map(|n| IpNet::V6(n.trunc()))
            .unwrap_or_else(|_| IpNet::from(IpAddr::V6(v6))),
    }
}

/// The check of `"proximity": "same_network"`: `context.ip` must lie in `origin` (the
/// depositor's network). No `context.ip` is [`Denial::ProximityContextRequired`]; an address
/// outside `origin`, an `ip` that is not an address, or a key whose network is unknown (none
/// was recorded) is [`Denial::ProximityDenied`].
pub(crate) fn check(
    origin: Option<&IpNet>,
    context: Option<&RetrievalContext>,
) -> Result<(), Denial> {
    let Some(ip) = context.and_then(|c| c.ip.as_deref()) else {
        return Err(Denial::ProximityContextRequired);
    };
    let Ok(ip) = ip.trim().parse::<IpAddr>() else {
        return Err(Denial::ProximityDenied);
    };
    match origin {
        Some(net) if net.contains(&ip.to_canonical()) => Ok(()),
        _ => Err(Denial::ProximityDenied),
    }
}
