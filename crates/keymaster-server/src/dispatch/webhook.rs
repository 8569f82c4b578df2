//! Webhook delivery: Standard Webhooks headers and signature, one attempt per call. Where the
//! request may go (the address check at the moment of sending, the connection to exactly the
//! checked addresses, no proxy, no redirects) is `netguard`'s.
//!
//! One HTTP client per endpoint and checked addresses ([`Clients`]), kept between deliveries, so
//! that its connections are reused (HTTP/1.1 keep-alive, HTTP/2 where the receiver offers it
//! over TLS). A kept client connects only to the addresses it was built for; when the name
//! resolves to others, a new client is built for them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use jiff::Timestamp;
use zeroize::Zeroizing;

use super::{signature, Dispatcher};
use crate::netguard;
use crate::store::outbox::ClaimedDelivery;

/// The HTTP clients kept for reuse, by endpoint: each with the addresses it connects to.
#[derive(Default)]
pub struct Clients {
    map: Mutex<HashMap<String, (Vec<SocketAddr>, reqwest::Client)>>,
}

impl Clients {
    /// The client kept for `endpoint` if it connects to exactly `addrs`.
    fn get(&self, endpoint: &str, addrs: &[SocketAddr]) -> Option<reqwest::Client> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(endpoint)
            .filter(|(a, _)| a.as_slice() == addrs)
            .map(|(_, c)| c.clone())
    }

    fn put(&self, endpoint: &str, addrs: &[SocketAddr], client: reqwest::Client) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(endpoint.to_owned(), (addrs.to_vec(), client));
    }
}

/// One attempt at delivering `d` to its URL.
pub async fn send(dispatcher: &Dispatcher, d: &ClaimedDelivery) -> Result<(), String> {
    let settings = &dispatcher.settings;
    let url = url::Url::parse(&d.target).map_err(|e| format!("bad URL: {e}"))?;
    let target = netguard::resolve(
        &url,
        settings.allow_private_webhooks,
        &netguard::SystemResolver,
    )
    .await?;

    let secrets: Vec<Zeroizing<String>> = d
        .secrets
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

    let client = match dispatcher.clients.get(&d.endpoint, target.addrs()) {
        Some(client) => client,
        None => {
            let client = target
                .client(settings.webhook_timeout)
                .map_err(|e| format!("http client: {e}"))?;
            dispatcher
                .clients
                .put(&d.endpoint, target.addrs(), client.clone());
            client
        }
    };
    let resp = client
        .post(target.url().clone())
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
