//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256 over
//! "{id}.{timestamp}.{body}">`, keyed with the base64 part of the tenant's `whsec_` secret.
//! During a secret rotation every valid secret signs, separated by spaces.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The value of the `webhook-signature` header for this message under these secrets.
pub fn sign(secrets: &[impl AsRef<str>], id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    for secret in secrets {
        let raw = secret
            .as_ref()
            .strip_prefix("whsec_")
            .unwrap_or(secret.as_ref());
        let key = STANDARD.decode(raw).ok()?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).ok()?;
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        parts.push(format!(
            "v1,{}",
            STANDARD.encode(mac.finalize().into_bytes())
        ));
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // From the Standard Webhooks specification's reference implementations.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let ts = 1614265330;
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&[secret], id, ts, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn two_secrets_give_two_signatures() {
        let a = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let b = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let s = sign(&[a, b], "id", 1, b"{}").unwrap();
        assert_eq!(s.split(' ').count(), 2);
        assert!(s.split(' ').all(|p| p.starts_with("v1,")));
    }
}
