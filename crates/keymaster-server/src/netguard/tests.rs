//! The rules, row by row, written out here independently of `registry` (as text), at the three
//! places an address is judged: the URL as given (a literal address), the URL's host name
//! resolved when it is given, and the host name resolved again at delivery ([`resolve`], what
//! the dispatcher calls before it connects).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv6Net};

use super::*;

/// Every refused IPv4 row, with addresses just outside it that are accepted (none where the
/// neighbours are themselves refused).
const V4: &[(&str, &[&str])] = &[
    ("0.0.0.0/8", &["1.0.0.0"]),
    ("0.0.0.0/32", &[]),
    ("10.0.0.0/8", &["9.255.255.255", "11.0.0.0"]),
    ("100.64.0.0/10", &["100.63.255.255", "100.128.0.0"]),
    ("127.0.0.0/8", &["126.255.255.255", "128.0.0.0"]),
    ("169.254.0.0/16", &["169.253.255.255", "169.255.0.0"]),
    ("172.16.0.0/12", &["172.15.255.255", "172.32.0.0"]),
    ("192.0.0.0/24", &["191.255.255.255", "192.0.1.0"]),
    ("192.0.0.0/29", &[]),
    ("192.0.0.8/32", &[]),
    ("192.0.0.9/32", &[]),
    ("192.0.0.10/32", &[]),
    ("192.0.0.170/32", &[]),
    ("192.0.0.171/32", &[]),
    ("192.0.2.0/24", &["192.0.1.255", "192.0.3.0"]),
    ("192.31.196.0/24", &["192.31.195.255", "192.31.197.0"]),
    ("192.52.193.0/24", &["192.52.192.255", "192.52.194.0"]),
    ("192.88.99.0/24", &["192.88.98.255", "192.88.100.0"]),
    ("192.88.99.2/32", &[]),
    ("192.168.0.0/16", &["192.167.255.255", "192.169.0.0"]),
    ("192.175.48.0/24", &["192.175.47.255", "192.175.49.0"]),
    ("198.18.0.0/15", &["198.17.255.255", "198.20.0.0"]),
    ("198.51.100.0/24", &["198.51.99.255", "198.51.101.0"]),
    ("203.0.113.0/24", &["203.0.112.255", "203.0.114.0"]),
    ("224.0.0.0/4", &["223.255.255.255"]),
    ("240.0.0.0/4", &[]),
    ("255.255.255.255/32", &[]),
];

/// Every refused IPv6 row, likewise.
const V6: &[(&str, &[&str])] = &[
    ("::1/128", &[]),
    ("::/128", &[]),
    ("64:ff9b:1::/48", &[]),
    ("100::/64", &[]),
    ("100:0:0:1::/64", &[]),
    (
        "2001::/23",
        &["2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2001:200::"],
    ),
    ("2001::/32", &[]),
    ("2001:1::1/128", &[]),
    ("2001:1::2/128", &[]),
    ("2001:1::3/128", &[]),
    ("2001:2::/48", &[]),
    ("2001:3::/32", &[]),
    ("2001:4:112::/48", &[]),
    ("2001:10::/28", &[]),
    ("2001:20::/28", &[]),
    ("2001:30::/28", &[]),
    (
        "2001:db8::/32",
        &["2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db9::"],
    ),
    (
        "2002::/16",
        &["2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2003::"],
    ),
    (
        "2620:4f:8000::/48",
        &["2620:4f:7fff:ffff:ffff:ffff:ffff:ffff", "2620:4f:8001::"],
    ),
    (
        "3fff::/20",
        &["3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "3fff:1000::"],
    ),
    ("5f00::/16", &[]),
    ("fc00::/7", &[]),
    ("fe80::/10", &[]),
    // Beyond the special-purpose registry.
    ("::/96", &[]),
    ("::ffff:0:0:0/96", &[]),
    ("fec0::/10", &[]),
    ("ff00::/8", &[]),
    ("::/8", &[]),
    ("100::/8", &[]),
    ("200::/7", &[]),
    ("400::/6", &[]),
    ("800::/5", &[]),
    ("1000::/4", &["2000::"]),
    ("4000::/3", &["3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]),
    ("6000::/3", &[]),
    ("8000::/3", &[]),
    ("a000::/3", &[]),
    ("c000::/3", &[]),
    ("e000::/4", &[]),
    ("f000::/5", &[]),
    ("f800::/6", &[]),
    ("fe00::/9", &[]),
];

/// The IPv6 rows judged by the IPv4 address they carry.
const V6_EMBEDDING: &[&str] = &["::ffff:0:0/96", "64:ff9b::/96"];

/// Public addresses: accepted everywhere.
const PUBLIC: &[&str] = &[
    "1.1.1.1",
    "8.8.8.8",
    "93.184.215.14",
    "2606:4700::1111",
    "2a00:1450:4001:80b::200e",
];

/// The first, a middle and the last address of `block`.
fn first_middle_last(block: &str) -> [IpAddr; 3] {
    match block.parse::<IpNet>().unwrap() {
        IpNet::V4(n) => {
            let (lo, hi) = (u32::from(n.network()), u32::from(n.broadcast()));
            [lo, lo + (hi - lo) / 2, hi].map(|a| IpAddr::V4(Ipv4Addr::from(a)))
        }
        IpNet::V6(n) => {
            let (lo, hi) = (u128::from(n.network()), u128::from(n.broadcast()));
            [lo, lo + (hi - lo) / 2, hi].map(|a| IpAddr::V6(Ipv6Addr::from(a)))
        }
    }
}

fn url_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("http://{v4}:8080/hook"),
        IpAddr::V6(v6) => format!("http://[{v6}]:8080/hook"),
    }
}

/// A resolver that answers every name with the same addresses.
struct Fixed(Vec<IpAddr>);

impl Resolve for Fixed {
    async fn lookup(&self, _host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(self.0.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
    }
}

const NAME: &str = "http://hook.example.net/keymaster";

/// Asserts that `ip` is refused at every check, and taken when private targets are allowed.
async fn assert_refused(ip: IpAddr, why: &str) {
    assert!(refusal(ip).is_some(), "{ip} ({why}) is accepted");
    let literal = url_of(ip);
    let err = check_url(&literal, false).expect_err(&literal);
    assert!(err.starts_with("points at"), "{literal}: {err}");
    assert!(check_url(&literal, true).is_ok(), "{literal}");
    let named = url::Url::parse(NAME).unwrap();
    let dns = Fixed(vec![ip]);
    let err = check_url_resolved_with(NAME, false, &dns)
        .await
        .unwrap_err();
    assert!(err.contains("resolves to"), "{ip}: {err}");
    // At delivery: the dispatcher's check, after a DNS answer that changed since.
    let err = resolve(&named, false, &dns).await.unwrap_err();
    assert!(err.contains("resolves to"), "{ip}: {err}");
    // One refused address among public ones refuses the host.
    let mixed = Fixed(vec!["8.8.8.8".parse().unwrap(), ip]);
    assert!(resolve(&named, false, &mixed).await.is_err(), "{ip} mixed");
    let allowed = resolve(&named, true, &dns).await.unwrap();
    assert_eq!(allowed.addrs(), [SocketAddr::new(ip, 80)]);
}

async fn assert_accepted(ip: IpAddr, why: &str) {
    assert_eq!(refusal(ip), None, "{ip} ({why})");
    let literal = url_of(ip);
    assert!(check_url(&literal, false).is_ok(), "{literal}");
    let named = url::Url::parse(NAME).unwrap();
    let dns = Fixed(vec![ip]);
    assert!(
        check_url_resolved_with(NAME, false, &dns).await.is_ok(),
        "{ip}"
    );
    let target = resolve(&named, false, &dns).await.unwrap();
    assert_eq!(target.addrs(), [SocketAddr::new(ip, 80)]);
}

#[tokio::test]
async fn every_ipv4_row_is_refused_and_its_neighbours_are_not() {
    for (block, outside) in V4 {
        for ip in first_middle_last(block) {
            assert_refused(ip, block).await;
        }
        for ip in *outside {
            assert_accepted(ip.parse().unwrap(), block).await;
        }
    }
}

#[tokio::test]
async fn every_ipv6_row_is_refused_and_its_neighbours_are_not() {
    for (block, outside) in V6 {
        for ip in first_middle_last(block) {
            assert_refused(ip, block).await;
        }
        for ip in *outside {
            assert_accepted(ip.parse().unwrap(), block).await;
        }
    }
}

#[tokio::test]
async fn public_addresses_are_accepted() {
    for ip in PUBLIC {
        assert_accepted(ip.parse().unwrap(), "public").await;
    }
}

/// The IPv6 forms of an IPv4 address: (form, address).
fn carriers(v4: Ipv4Addr) -> Vec<(&'static str, Ipv6Addr)> {
    let [a, b, c, d] = v4.octets();
    let hi = u16::from_be_bytes([a, b]);
    let lo = u16::from_be_bytes([c, d]);
    vec![
        ("IPv4-mapped", v4.to_ipv6_mapped()),
        ("NAT64", Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo)),
        (
            "local NAT64",
            Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, hi, lo),
        ),
        ("6to4", Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1)),
        // Teredo: server address in bits 32-63, the client's inverted in the last 32.
        ("Teredo", Ipv6Addr::new(0x2001, 0, hi, lo, 0, 0, !hi, !lo)),
        (
            "IPv4-translated",
            Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, hi, lo),
        ),
        ("IPv4-compatible", v4.to_ipv6_compatible()),
    ]
}

#[tokio::test]
async fn refused_ipv4_addresses_are_refused_in_every_ipv6_form() {
    for (block, _) in V4 {
        for ip in first_middle_last(block) {
            let IpAddr::V4(v4) = ip else { unreachable!() };
            for (form, v6) in carriers(v4) {
                assert_refused(IpAddr::V6(v6), &format!("{form} of {block}")).await;
            }
        }
    }
    let r = refusal("::ffff:198.18.0.1".parse().unwrap()).unwrap();
    assert_eq!(r.name, "Benchmarking");
    assert_eq!(r.inside.unwrap().1, "IPv4-mapped Address");
    assert_eq!(
        r.to_string(),
        "Benchmarking (198.18.0.0/15, RFC 2544) carried in IPv4-mapped Address (::ffff:0.0.0.0/96)"
    );
}

#[tokio::test]
async fn a_public_ipv4_address_is_reached_through_mapped_and_nat64_only() {
    for ip in PUBLIC.iter().filter_map(|p| p.parse::<Ipv4Addr>().ok()) {
        for (form, v6) in carriers(ip) {
            let v6 = IpAddr::V6(v6);
            if matches!(form, "IPv4-mapped" | "NAT64") {
                assert_accepted(v6, form).await;
            } else {
                assert_refused(v6, form).await;
            }
        }
    }
}

/// The table under test and the implementation's table are the same set of rows, so that a
/// row added to one without the other fails here.
#[test]
fn the_tests_cover_every_row() {
    let tested: BTreeSet<String> = V4
        .iter()
        .chain(V6)
        .map(|(b, _)| b.parse::<IpNet>().unwrap().to_string())
        .chain(
            V6_EMBEDDING
                .iter()
                .map(|b| b.parse::<IpNet>().unwrap().to_string()),
        )
        .collect();
    let table: BTreeSet<String> = registry::IPV4
        .iter()
        .map(|b| IpNet::V4(b.net).to_string())
        .chain(registry::IPV6.iter().map(|b| IpNet::V6(b.net).to_string()))
        .collect();
    assert_eq!(tested, table);
    for b in V6_EMBEDDING {
        let net: Ipv6Net = b.parse().unwrap();
        let row = registry::IPV6.iter().find(|r| r.net == net).unwrap();
        assert_eq!(row.rule, Rule::EmbeddedIpv4, "{b}");
    }
    for b in registry::IPV6
        .iter()
        .filter(|r| r.rule == Rule::EmbeddedIpv4)
    {
        let listed = V6_EMBEDDING
            .iter()
            .any(|e| e.parse::<Ipv6Net>().unwrap() == b.net);
        assert!(listed, "{}", b.net);
    }
}

#[test]
fn url_syntax() {
    assert!(check_url("https://example.net/hook", false).is_ok());
    assert!(check_url("ftp://example.net/hook", false).is_err());
    assert!(check_url("https://u:p@example.net/hook", false).is_err());
    assert!(check_url("not a url", false).is_err());
    assert!(check_url(&format!("https://example.net/{}", "a".repeat(2048)), true).is_err());
    for host in ["localhost", "LOCALHOST.", "api.localhost"] {
        let url = format!("http://{host}:8080/h");
        assert!(check_url(&url, false).is_err(), "{url}");
        assert!(check_url(&url, true).is_ok(), "{url}");
    }
    // WHATWG parsing turns these into IPv4 addresses before the check.
    for url in ["http://2130706433/", "http://0x7f.1/", "http://0177.0.0.1/"] {
        assert!(check_url(url, false).is_err(), "{url}");
    }
}

#[tokio::test]
async fn a_name_without_addresses_is_refused_at_delivery() {
    let named = url::Url::parse(NAME).unwrap();
    let err = resolve(&named, true, &Fixed(vec![])).await.unwrap_err();
    assert!(err.contains("no address"), "{err}");
}

#[tokio::test]
async fn the_target_keeps_every_checked_address_in_order() {
    let named = url::Url::parse(NAME).unwrap();
    let ips: Vec<IpAddr> = vec![
        "8.8.8.8".parse().unwrap(),
        "2606:4700::1111".parse().unwrap(),
    ];
    let target = resolve(&named, false, &Fixed(ips.clone())).await.unwrap();
    let got: Vec<IpAddr> = target.addrs().iter().map(|a| a.ip()).collect();
    assert_eq!(got, ips);
    assert_eq!(target.url(), &named);
}

/// The delivery client connects to the checked addresses, in order, and makes no DNS lookup
/// of its own: the name below exists nowhere (RFC 6761 `.invalid`), and the first address
/// refuses the connection, so only the second, pinned address can answer.
#[tokio::test]
async fn the_client_connects_to_the_checked_addresses_only() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = sink.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = sink.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    let url = url::Url::parse(&format!("http://hook.invalid:{port}/h")).unwrap();
    let dns = Fixed(vec![
        "127.0.0.2".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
    ]);
    let target = resolve(&url, true, &dns).await.unwrap();
    let client = target.client(Duration::from_secs(10)).unwrap();
    let resp = client.post(url).send().await.unwrap();
    assert_eq!(resp.status(), 204);
}
