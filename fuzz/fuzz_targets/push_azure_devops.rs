//! `verify_signature`, `delivery_id` and `parse_delivery` for Azure DevOps deliveries; the input
//! format (event selector, flags, body) is described in `fuzz/src/lib.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| autodeploy_fuzz::run_push(&autodeploy_fuzz::AZURE_DEVOPS, data));
