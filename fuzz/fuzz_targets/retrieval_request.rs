//! The retrieval request body as the server reads it: JSON into `RetrievalRequest`, then its
//! code through `Code::parse` (the check before any lookup). Never panics.
#![no_main]

use keymaster_core::code::Code;
use keymaster_core::wire::RetrievalRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<RetrievalRequest>(data) else {
        return;
    };
    if let Ok(code) = Code::parse(&req.code) {
        assert_eq!(Code::parse(code.as_str()).map(|c| c.format()).ok(), Some(code.format()));
    }
    let back = serde_json::to_vec(&req).expect("a request serialises");
    let _: RetrievalRequest = serde_json::from_slice(&back).expect("and reads back");
});
