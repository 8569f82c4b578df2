//! The `x-request-id` given to a request that comes without one: a random UUID (version 4) in
//! lowercase hyphenated form, as tower-http's `MakeRequestUuid` makes, but drawn from the
//! thread's CSPRNG (`rand::thread_rng`, as ids and tokens are) instead of one `getrandom` system
//! call per request.
//!
//! Not responsible for keeping a request id the client sent (`SetRequestIdLayer` does) or for
//! echoing it in the answer (`PropagateRequestIdLayer`).

use axum::http::{HeaderValue, Request};
use rand::RngCore;
use tower_http::request_id::{MakeRequestId, RequestId};

/// Makes a random version-4 UUID for each request without an `x-request-id`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MakeRequestUuid;

impl MakeRequestId for MakeRequestUuid {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let mut bytes = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut bytes);
        let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        // Hex digits and hyphens are always a valid header value.
        HeaderValue::from_str(uuid.hyphenated().encode_lower(&mut text))
            .ok()
            .map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_lowercase_version_4_uuids() {
        let request = Request::new(());
        let mut make = MakeRequestUuid;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..64 {
            let id = make.make_request_id(&request).unwrap();
            let text = id.header_value().to_str().unwrap().to_owned();
            let parsed = uuid::Uuid::parse_str(&text).unwrap();
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(text, parsed.hyphenated().to_string());
            assert_eq!(text.len(), 36);
            assert!(seen.insert(text));
        }
    }
}
