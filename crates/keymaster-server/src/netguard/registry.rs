//! The address blocks a webhook may not reach, as data: one row per entry of the IANA IPv4 and
//! IPv6 Special-Purpose Address Registries, plus the few blocks those registries leave to
//! others (multicast, the deprecated site-local and IPv4-embedding forms, the IPv6 space that is
//! not allocated for global unicast).
//!
//! Rows taken from (transcribed by hand, since the registries were not reachable from the build
//! machine; each row names its RFC so that it can be checked against the registry):
//! - IANA IPv4 Special-Purpose Address Registry, the edition that lists `192.88.99.2/32`
//!   (6a44, RFC 6751) and RFC 8880 for `192.0.0.170/32` and `192.0.0.171/32`;
//! - IANA IPv6 Special-Purpose Address Registry, the edition of 2025 that lists
//!   `100:0:0:1::/64` (RFC 9780), `2001:1::3/128` (RFC 9665), `5f00::/16` (RFC 9602) and
//!   `3fff::/20` (RFC 9637);
//! - IANA Internet Protocol Version 6 Address Space (the blocks "Reserved by IETF");
//! - IANA IPv4 Multicast Address Space (`224.0.0.0/4`), IPv6 multicast (`ff00::/8`, RFC 4291).
//!
//! Each row keeps the registry's "Globally Reachable" column as it is (`None` for a row that
//! is not in a special-purpose registry) next to the rule keymaster applies; `netguard`'s
//! module documentation says why the rule refuses more than the rows marked `False`.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// The registry's "Globally Reachable" column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// `True`: forwardable beyond an administrative domain.
    True,
    /// `False`.
    False,
    /// `N/A`: not a unicast destination of its own (6to4, Teredo, the deprecated blocks).
    NotApplicable,
}

/// What keymaster does with an address in a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Never a webhook target.
    Refuse,
    /// Judged by the IPv4 address in the last 32 bits: this form reaches exactly that IPv4
    /// address (IPv4-mapped through the kernel, the NAT64 well-known prefix through the
    /// translator, whose layout RFC 6052 fixes for this prefix).
    EmbeddedIpv4,
}

/// One row.
#[derive(Debug, Clone, Copy)]
pub struct Block<N> {
    /// The address block.
    pub net: N,
    /// The name the registry gives it.
    pub name: &'static str,
    /// The RFC that defines it, as the registry cites it.
    pub rfc: &'static str,
    /// The registry's "Globally Reachable"; `None` when the block is not in a special-purpose
    /// registry.
    pub reach: Option<Reach>,
    /// What keymaster does with an address in it.
    pub rule: Rule,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(s: [u16; 8], len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        len,
    )
}

const fn row4(net: Ipv4Net, name: &'static str, rfc: &'static str, reach: Reach) -> Block<Ipv4Net> {
    Block {
        net,
        name,
        rfc,
        reach: Some(reach),
        rule: Rule::Refuse,
    }
}

const fn row6(net: Ipv6Net, name: &'static str, rfc: &'static str, reach: Reach) -> Block<Ipv6Net> {
    Block {
        net,
        name,
        rfc,
        reach: Some(reach),
        rule: Rule::Refuse,
    }
}

use Reach::{False, NotApplicable as NA, True};

/// The IPv4 Special-Purpose Address Registry, row by row, then multicast.
pub const IPV4: &[Block<Ipv4Net>] = &[
    row4(v4(0, 0, 0, 0, 8), "This network", "RFC 791", False),
    row4(
        v4(0, 0, 0, 0, 32),
        "This host on this network",
        "RFC 1122",
        False,
    ),
    row4(v4(10, 0, 0, 0, 8), "Private-Use", "RFC 1918", False),
    row4(
        v4(100, 64, 0, 0, 10),
        "Shared Address Space",
        "RFC 6598",
        False,
    ),
    row4(v4(127, 0, 0, 0, 8), "Loopback", "RFC 1122", False),
    row4(v4(169, 254, 0, 0, 16), "Link Local", "RFC 3927", False),
    row4(v4(172, 16, 0, 0, 12), "Private-Use", "RFC 1918", False),
    row4(
        v4(192, 0, 0, 0, 24),
        "IETF Protocol Assignments",
        "RFC 6890",
        False,
    ),
    row4(
        v4(192, 0, 0, 0, 29),
        "IPv4 Service Continuity Prefix",
        "RFC 7335",
        False,
    ),
    row4(
        v4(192, 0, 0, 8, 32),
        "IPv4 dummy address",
        "RFC 7600",
        False,
    ),
    row4(
        v4(192, 0, 0, 9, 32),
        "Port Control Protocol Anycast",
        "RFC 7723",
        True,
    ),
    row4(
        v4(192, 0, 0, 10, 32),
        "Traversal Using Relays around NAT Anycast",
        "RFC 8155",
        True,
    ),
    row4(
        v4(192, 0, 0, 170, 32),
        "NAT64/DNS64 Discovery",
        "RFC 8880",
        False,
    ),
    row4(
        v4(192, 0, 0, 171, 32),
        "NAT64/DNS64 Discovery",
        "RFC 8880",
        False,
    ),
    row4(
        v4(192, 0, 2, 0, 24),
        "Documentation (TEST-NET-1)",
        "RFC 5737",
        False,
    ),
    row4(v4(192, 31, 196, 0, 24), "AS112-v4", "RFC 7535", True),
    row4(v4(192, 52, 193, 0, 24), "AMT", "RFC 7450", True),
    row4(
        v4(192, 88, 99, 0, 24),
        "Deprecated (6to4 Relay Anycast)",
        "RFC 7526",
        NA,
    ),
    row4(
        v4(192, 88, 99, 2, 32),
        "6a44-relay anycast address",
        "RFC 6751",
        False,
    ),
    row4(v4(192, 168, 0, 0, 16), "Private-Use", "RFC 1918", False),
    row4(
        v4(192, 175, 48, 0, 24),
        "Direct Delegation AS112 Service",
        "RFC 7534",
        True,
    ),
    row4(v4(198, 18, 0, 0, 15), "Benchmarking", "RFC 2544", False),
    row4(
        v4(198, 51, 100, 0, 24),
        "Documentation (TEST-NET-2)",
        "RFC 5737",
        False,
    ),
    row4(
        v4(203, 0, 113, 0, 24),
        "Documentation (TEST-NET-3)",
        "RFC 5737",
        False,
    ),
    row4(v4(240, 0, 0, 0, 4), "Reserved", "RFC 1112", False),
    row4(
        v4(255, 255, 255, 255, 32),
        "Limited Broadcast",
        "RFC 919",
        False,
    ),
    // Not in the special-purpose registry: the IPv4 Multicast Address Space.
    Block {
        net: v4(224, 0, 0, 0, 4),
        name: "Multicast",
        rfc: "RFC 5771",
        reach: None,
        rule: Rule::Refuse,
    },
];

/// The IPv6 Special-Purpose Address Registry, row by row, then the blocks beyond it.
pub const IPV6: &[Block<Ipv6Net>] = &[
    row6(
        v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
        "Loopback Address",
        "RFC 4291",
        False,
    ),
    row6(v6([0; 8], 128), "Unspecified Address", "RFC 4291", False),
    Block {
        rule: Rule::EmbeddedIpv4,
        ..row6(
            v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96),
            "IPv4-mapped Address",
            "RFC 4291",
            False,
        )
    },
    Block {
        rule: Rule::EmbeddedIpv4,
        ..row6(
            v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
            "IPv4-IPv6 Translat.",
            "RFC 6052",
            True,
        )
    },
    row6(
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        "IPv4-IPv6 Translat.",
        "RFC 8215",
        False,
    ),
    row6(
        v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        "Discard-Only Address Block",
        "RFC 6666",
        False,
    ),
    row6(
        v6([0x100, 0, 0, 1, 0, 0, 0, 0], 64),
        "Dummy IPv6 Prefix",
        "RFC 9780",
        False,
    ),
    row6(
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        "IETF Protocol Assignments",
        "RFC 2928",
        False,
    ),
    row6(
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),
        "TEREDO",
        "RFC 4380",
        NA,
    ),
    row6(
        v6([0x2001, 1, 0, 0, 0, 0, 0, 1], 128),
        "Port Control Protocol Anycast",
        "RFC 7723",
        True,
    ),
    row6(
        v6([0x2001, 1, 0, 0, 0, 0, 0, 2], 128),
        "Traversal Using Relays around NAT Anycast",
        "RFC 8155",
        True,
    ),
    row6(
        v6([0x2001, 1, 0, 0, 0, 0, 0, 3], 128),
        "DNS-SD Service Registration Protocol Anycast",
        "RFC 9665",
        True,
    ),
    row6(
        v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48),
        "Benchmarking",
        "RFC 5180",
        False,
    ),
    row6(
        v6([0x2001, 3, 0, 0, 0, 0, 0, 0], 32),
        "AMT",
        "RFC 7450",
        True,
    ),
    row6(
        v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48),
        "AS112-v6",
        "RFC 7535",
        True,
    ),
    row6(
        v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28),
        "Deprecated (previously ORCHID)",
        "RFC 4843",
        NA,
    ),
    row6(
        v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28),
        "ORCHIDv2",
        "RFC 7343",
        True,
    ),
    row6(
        v6([0x2001, 0x30, 0, 0, 0, 0, 0, 0], 28),
        "Drone Remote ID Protocol Entity Tags (DETs) Prefix",
        "RFC 9374",
        True,
    ),
    row6(
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        "Documentation",
        "RFC 3849",
        False,
    ),
    row6(
        v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
        "6to4",
        "RFC 3056",
        NA,
    ),
    row6(
        v6([0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48),
        "Direct Delegation AS112 Service",
        "RFC 7534",
        True,
    ),
    row6(
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        "Documentation",
        "RFC 9637",
        False,
    ),
    row6(
        v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),
        "Segment Routing (SRv6) SIDs",
        "RFC 9602",
        False,
    ),
    row6(
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "Unique-Local",
        "RFC 4193",
        False,
    ),
    row6(
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        "Link-Local Unicast",
        "RFC 4291",
        False,
    ),
    // Beyond the special-purpose registry. Forms that carry an IPv4 address but are not how
    // anything reaches IPv4 today: refused whatever they carry.
    beyond(
        v6([0, 0, 0, 0, 0, 0, 0, 0], 96),
        "IPv4-compatible Address (deprecated)",
        "RFC 4291",
    ),
    beyond(
        v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96),
        "IPv4-translated Address",
        "RFC 2765",
    ),
    beyond(
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "Site-Local (deprecated)",
        "RFC 3879",
    ),
    beyond(
        v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
        "Multicast",
        "RFC 4291",
    ),
    // The IPv6 Address Space registry's "Reserved by IETF" blocks: everything outside
    // 2000::/3 (global unicast), fc00::/7, fe80::/10 and ff00::/8.
    beyond(
        v6([0, 0, 0, 0, 0, 0, 0, 0], 8),
        "Reserved by IETF",
        "RFC 4291",
    ),
    beyond(
        v6([0x100, 0, 0, 0, 0, 0, 0, 0], 8),
        "Reserved by IETF",
        "RFC 4291",
    ),
    beyond(
        v6([0x200, 0, 0, 0, 0, 0, 0, 0], 7),
        "Reserved by IETF",
        "RFC 4048",
    ),
    beyond(
        v6([0x400, 0, 0, 0, 0, 0, 0, 0], 6),
        "Reserved by IETF",
        "RFC 4291",
    ),
    beyond(
        v6([0x800, 0, 0, 0, 0, 0, 0, 0], 5),
        "Reserved by IETF",
        "RFC 4291",
    ),
    beyond(
        v6([0x1000, 0, 0, 0, 0, 0, 0, 0], 4),
        "Reserved by IETF",
        "RFC 4291",
    ),
    beyond(
        v6([0x4000, 0, 0, 0, 0, 0, 0, 0], 3),
        "Reserved by IETF",
        "RFC 4291",
    ),
    beyond(
        v6([0x6000, 0, 0, 0, 0, 0, 0, 0], 3),
        "Reserved by IETF",
        "RFC 4291",
    ),
    beyond(
        v6([0x8000, 0, 0, 0, 0, 0, 0, 0], 3),
        "Reserved by IETF",
        "RFC 4291",
    ),
    beyond(
        v6([0xa000, 0, 0, 0, 0, 0, 0, 0], 3),
        "Reserved by IETF",
        "RFC 4291",
    ),
    beyond(
        v6([0xc000, 0, 0, 0, 0, 0, 0, 0], 3),
        "Reserved by IETF",
        "RFC 4291",
    ),
    beyond(
        v6([0xe000, 0, 0, 0, 0, 0, 0, 0], 4),
        "Reserved by IETF",
        "RFC 4291",
    ),
    beyond(
        v6([0xf000, 0, 0, 0, 0, 0, 0, 0], 5),
        "Reserved by IETF",
        "RFC 4291",
    ),
    beyond(
        v6([0xf800, 0, 0, 0, 0, 0, 0, 0], 6),
        "Reserved by IETF",
        "RFC 4291",
    ),
    beyond(
        v6([0xfe00, 0, 0, 0, 0, 0, 0, 0], 9),
        "Reserved by IETF",
        "RFC 4291",
    ),
];

const fn beyond(net: Ipv6Net, name: &'static str, rfc: &'static str) -> Block<Ipv6Net> {
    Block {
        net,
        name,
        rfc,
        reach: None,
        rule: Rule::Refuse,
    }
}

/// The most specific IPv4 row that holds `ip`.
pub fn lookup_v4(ip: Ipv4Addr) -> Option<&'static Block<Ipv4Net>> {
    IPV4.iter()
        .filter(|b| b.net.contains(&ip))
        .max_by_key(|b| b.net.prefix_len())
}

/// The most specific IPv6 row that holds `ip`.
pub fn lookup_v6(ip: Ipv6Addr) -> Option<&'static Block<Ipv6Net>> {
    IPV6.iter()
        .filter(|b| b.net.contains(&ip))
        .max_by_key(|b| b.net.prefix_len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_network_addresses_and_unique() {
        for b in IPV4 {
            assert_eq!(b.net, b.net.trunc(), "{} has host bits", b.net);
            assert_eq!(
                IPV4.iter().filter(|o| o.net == b.net).count(),
                1,
                "{}",
                b.net
            );
        }
        for b in IPV6 {
            assert_eq!(b.net, b.net.trunc(), "{} has host bits", b.net);
            assert_eq!(
                IPV6.iter().filter(|o| o.net == b.net).count(),
                1,
                "{}",
                b.net
            );
        }
    }

    #[test]
    fn the_most_specific_row_names_the_address() {
        let pcp = lookup_v4(Ipv4Addr::new(192, 0, 0, 9)).unwrap();
        assert_eq!(pcp.name, "Port Control Protocol Anycast");
        assert_eq!(pcp.reach, Some(Reach::True));
        let teredo = lookup_v6("2001:0:4136:e378::1".parse().unwrap()).unwrap();
        assert_eq!(teredo.name, "TEREDO");
        let mapped = lookup_v6("::ffff:10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(mapped.rule, Rule::EmbeddedIpv4);
        assert!(lookup_v4(Ipv4Addr::new(8, 8, 8, 8)).is_none());
        assert!(lookup_v6("2606:4700::1111".parse().unwrap()).is_none());
    }
}
