//! The deposit request body as the server reads it: JSON into `DepositRequest`, then its
//! policy through `Policy::from_input` and its key material through the parsers. Never panics;
//! an accepted policy survives the JSON round trip it makes through the database.
#![no_main]

use keymaster_core::key::PublicKey;
use keymaster_core::policy::{Policy, PolicyLimits};
use keymaster_core::wire::DepositRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<DepositRequest>(data) else {
        return;
    };
    let now = jiff::Timestamp::from_second(1_767_225_600).expect("a fixed, valid instant");
    let policy = req.policy.clone().unwrap_or_default();
    if let Ok((policy, expires_at)) = Policy::from_input(&policy, now, &PolicyLimits::default()) {
        assert!(expires_at > now);
        let stored = serde_json::to_vec(&policy).expect("a policy serialises");
        let back: Policy = serde_json::from_slice(&stored).expect("a stored policy reads back");
        assert_eq!(back, policy);
    }
    if let Some(text) = &req.public_key {
        let _ = PublicKey::parse(text);
    }
    if let Some(jwk) = &req.jwk {
        let _ = PublicKey::from_jwk(jwk);
    }
});
