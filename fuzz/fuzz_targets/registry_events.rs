//! The registry notification parsers: `parse_dockerhub`, `parse_github_package` (under each
//! event name GitHub sends) and `parse_ecr_event` (on bodies that are JSON). The first byte
//! picks the parser, the rest is the body.
//!
//! Checks that an announced push is already normalized: its tag passes `validate_tag`, its
//! registry and path normalize to themselves.
#![no_main]

use autodeploy_core::image::{normalize_registry, parse_path, validate_tag};
use autodeploy_core::registry::{RegistryEvent, parse_dockerhub, parse_ecr_event, parse_github_package};
use libfuzzer_sys::fuzz_target;

const GITHUB_EVENTS: [&str; 5] = ["package", "registry_package", "ping", " package ", "push"];

fuzz_target!(|data: &[u8]| {
    let [selector, body @ ..] = data else {
        return;
    };
    let result = match selector % 7 {
        0 => parse_dockerhub(body),
        1 => {
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
                return;
            };
            parse_ecr_event(&value)
        }
        i => parse_github_package(GITHUB_EVENTS[usize::from(i - 2)], body),
    };
    match result {
        Ok(RegistryEvent::Pushed(pushed)) => {
            assert_eq!(validate_tag(&pushed.tag), Ok(()), "tag {:?}", pushed.tag);
            assert_eq!(normalize_registry(&pushed.registry).as_ref(), Ok(&pushed.registry));
            assert_eq!(parse_path(&pushed.registry, &pushed.path).as_ref(), Ok(&pushed.path));
        }
        Ok(RegistryEvent::Ignored(reason)) => assert!(!reason.is_empty()),
        Err(err) => {
            let _ = err.to_string();
        }
    }
});
