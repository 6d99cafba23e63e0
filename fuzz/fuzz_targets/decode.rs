//! The review decoder on arbitrary bytes: never panics; whatever decodes has a uid, and a refusal
//! built from any decode error encodes to an AdmissionReview that does not allow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandbox_admission::admission::{self, Response};

fuzz_target!(|data: &[u8]| {
    match admission::decode(data) {
        Ok(req) => {
            assert!(!req.uid.is_empty());
            let _ = req.display_name();
            let wire: serde_json::Value =
                serde_json::from_slice(&Response::allow(&req.uid).to_review_json()).unwrap();
            assert_eq!(wire["response"]["uid"], req.uid.as_str());
        }
        Err(err) => {
            if let Some(uid) = err.uid() {
                let wire: serde_json::Value = serde_json::from_slice(
                    &Response::deny(uid, 400, err.to_string()).to_review_json(),
                )
                .unwrap();
                assert_eq!(wire["response"]["allowed"], false);
            }
        }
    }
});
