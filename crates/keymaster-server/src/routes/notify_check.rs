//! Checks of notification targets given at deposit and tenant creation.
//!
//! A webhook URL must be `http` or `https` with a host; unless the server allows private
//! webhooks, a host that is (or names) a loopback, private, link-local, carrier-grade NAT,
//! unique-local, multicast or unspecified address is refused, so that keymaster cannot be used
//! to reach the operator's internal network (SSRF).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Checks a webhook URL; the message says what is wrong.
pub fn webhook_url(raw: &str, allow_private: bool) -> Result<url::Url, String> {
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
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if d == "localhost" || d.ends_with(".localhost") {
                return Err("points at a loopback host".into());
            }
            None
        }
    };
    if let Some(ip) = ip {
        if let Some(class) = forbidden_class(ip) {
            return Err(format!("points at a {class} address"));
        }
    }
    Ok(url)
}

/// [`webhook_url`], and also refuses a host name that resolves to a forbidden address now.
/// A name that does not resolve yet is accepted: it is checked again at every delivery.
pub async fn webhook_url_resolved(raw: &str, allow_private: bool) -> Result<url::Url, String> {
    let url = webhook_url(raw, allow_private)?;
    if allow_private {
        return Ok(url);
    }
    if let (Some(url::Host::Domain(host)), Some(port)) = (url.host(), url.port_or_known_default()) {
        let lookup = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio::net::lookup_host((host, port)),
        )
        .await;
        if let Ok(Ok(addrs)) = lookup {
            for addr in addrs {
                if let Some(class) = forbidden_class(addr.ip()) {
                    return Err(format!("{host} resolves to a {class} address"));
                }
            }
        }
    }
    Ok(url)
}

/// The class of an address a webhook may not reach, if it is one.
pub fn forbidden_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_class(v4),
            None => v6_class(v6),
        },
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if o[0] == 100 && (64..128).contains(&o[1]) {
        Some("carrier-grade NAT")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else {
        None
    }
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if seg[0] & 0xfe00 == 0xfc00 {
        Some("unique-local")
    } else if seg[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if let Some(v4) = ip.to_ipv4() {
        // IPv4-compatible (deprecated) forms reach IPv4 hosts too.
        v4_class(v4)
    } else {
        None
    }
}

/// A plausible e-mail address: one `@`, a local part, a domain with a dot, no spaces.
pub fn email(addr: &str) -> Result<(), String> {
    let ok = addr.len() <= 254
        && !addr.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(addr.split_once('@'), Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.contains('@')
               && !domain.starts_with('.') && !domain.ends_with('.'));
    if ok {
        Ok(())
    } else {
        Err("not an e-mail address".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_targets_are_refused() {
        for url in [
            "http://127.0.0.1/h",
            "http://10.1.2.3/h",
            "http://172.16.0.1/h",
            "http://192.168.1.1/h",
            "http://169.254.169.254/latest",
            "http://100.64.0.1/h",
            "http://[::1]/h",
            "http://[fc00::1]/h",
            "http://[fe80::1]/h",
            "http://[::ffff:127.0.0.1]/h",
            "http://[::ffff:169.254.169.254]/h",
            "http://224.0.0.1/h",
            "http://0.0.0.0/h",
            "http://localhost:8080/h",
        ] {
            assert!(webhook_url(url, false).is_err(), "{url}");
            assert!(webhook_url(url, true).is_ok(), "{url}");
        }
    }

    #[test]
    fn public_targets_and_schemes() {
        assert!(webhook_url("https://example.net/hook", false).is_ok());
        assert!(webhook_url("http://203.0.113.5/hook", false).is_ok());
        assert!(webhook_url("ftp://example.net/hook", false).is_err());
        assert!(webhook_url("https://u:p@example.net/hook", false).is_err());
        assert!(webhook_url("not a url", false).is_err());
    }

    #[test]
    fn emails() {
        assert!(email("me@example.net").is_ok());
        assert!(email("me@localhost").is_err());
        assert!(email("me example@x.net").is_err());
        assert!(email("@x.net").is_err());
    }
}
