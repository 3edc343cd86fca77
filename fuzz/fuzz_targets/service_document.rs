//! `parse_service_document` on any JSON document (inputs that are not JSON are skipped).
//!
//! Checks that an accepted spec, serialized as the API returns it, is accepted again as the
//! same spec (a GET body can be PUT back).
#![no_main]

use autodeploy_core::model::{SpecError, parse_service_document};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > 16 * 1024 {
        return;
    }
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    match parse_service_document("org-1", "svc-1", &doc) {
        Ok(spec) => {
            let back = serde_json::to_value(&spec).expect("a spec serializes");
            assert_eq!(
                parse_service_document("org-1", "svc-1", &back).as_ref(),
                Ok(&spec),
                "the accepted spec {back} is not accepted back"
            );
        }
        Err(SpecError::Malformed(message)) => assert!(!message.is_empty()),
        Err(SpecError::Invalid(errors)) => assert!(!errors.is_empty(), "Invalid with no field named"),
    }
});
