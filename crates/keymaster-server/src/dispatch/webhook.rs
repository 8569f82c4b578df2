//! Webhook delivery: SSRF check at the moment of sending, a connection to the very address that
//! was checked, a request timeout, no redirects, Standard Webhooks headers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use jiff::Timestamp;
use zeroize::Zeroizing;

use super::{signature, Dispatcher};
use crate::routes::notify_check::forbidden_class;
use crate::store::outbox::ClaimedDelivery;

/// Resolves the URL's host and picks an address a webhook may reach; the error says why not.
pub async fn resolve(url: &url::Url, allow_private: bool) -> Result<SocketAddr, String> {
    let host = url.host_str().ok_or("no host")?;
    let port = url.port_or_known_default().ok_or("no port")?;
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(v4)) => vec![SocketAddr::new(IpAddr::V4(v4), port)],
        Some(url::Host::Ipv6(v6)) => vec![SocketAddr::new(IpAddr::V6(v6), port)],
        _ => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect(),
    };
    if allow_private {
        return addrs
            .first()
            .copied()
            .ok_or_else(|| format!("{host} has no address"));
    }
    // Refuse the host if any of its addresses is private: a DNS answer can mix them.
    if let Some(bad) = addrs.iter().find_map(|a| forbidden_class(a.ip())) {
        return Err(format!("{host} resolves to a {bad} address"));
    }
    addrs
        .first()
        .copied()
        .ok_or_else(|| format!("{host} has no address"))
}

/// One attempt at delivering `d` to its URL.
pub async fn send(dispatcher: &Dispatcher, d: &ClaimedDelivery) -> Result<(), String> {
    let settings = &dispatcher.settings;
    let url = url::Url::parse(&d.target).map_err(|e| format!("bad URL: {e}"))?;
    let addr = resolve(&url, settings.allow_private_webhooks).await?;

    let sealed = dispatcher
        .store
        .tenant_webhook_secrets(&d.tenant_id, Timestamp::now())
        .await
        .map_err(|e| format!("cannot read the tenant's secret: {e}"))?;
    let secrets: Vec<Zeroizing<String>> = sealed
        .iter()
        .filter_map(|blob| dispatcher.keys.open(blob, d.tenant_id.as_bytes()))
        .filter_map(|plain| String::from_utf8(plain.to_vec()).ok().map(Zeroizing::new))
        .collect();
    if secrets.is_empty() {
        return Err("the tenant has no webhook secret".into());
    }
    let body = serde_json::to_vec(&d.event).map_err(|e| e.to_string())?;
    let timestamp = Timestamp::now().as_second();
    let sig = signature::sign(&secrets, &d.event.id, timestamp, &body)
        .ok_or("the tenant's webhook secret is malformed")?;

    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.webhook_timeout)
        .connect_timeout(Duration::from_secs(5))
        .user_agent("keymaster-webhooks");
    if let Some(host) = url.host_str() {
        if matches!(url.host(), Some(url::Host::Domain(_))) {
            // Connect to the address that was checked, not to a second DNS answer.
            builder = builder.resolve(host, addr);
        }
    }
    let client = builder.build().map_err(|e| format!("http client: {e}"))?;
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &d.event.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", sig)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {}", without_url(&e)))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

/// A reqwest error's message without the URL (which may carry the receiver's token).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_redirect() {
        "redirect refused"
    } else {
        "error"
    };
    kind.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sending_refuses_private_addresses_unless_allowed() {
        for raw in [
            "http://127.0.0.1:8080/h",
            "http://10.0.0.1/h",
            "http://169.254.169.254/h",
            "http://[::ffff:10.0.0.1]/h",
            "http://[fd00::1]/h",
            "http://localhost:8080/h",
        ] {
            let url = url::Url::parse(raw).unwrap();
            assert!(resolve(&url, false).await.is_err(), "{raw}");
            assert!(resolve(&url, true).await.is_ok(), "{raw}");
        }
        let public = url::Url::parse("http://203.0.113.7:8443/h").unwrap();
        assert_eq!(
            resolve(&public, false).await.unwrap(),
            "203.0.113.7:8443".parse().unwrap()
        );
    }
}
