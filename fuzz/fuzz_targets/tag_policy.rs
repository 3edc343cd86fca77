//! `TagPolicy::compile` and `CompiledTagPolicy::accepts` on arbitrary ranges, patterns and tags.
//! The input is `kind byte, range-or-pattern \n current \n new`, with the pattern cut at
//! 600 bytes (just above the 512-character cap, so the cap itself is exercised) and tags at 200.
//!
//! Checks: SEMVER never accepts a tag over the same version (no "move" to itself) and a current
//! tag only ever narrows what is accepted; GLOB and REGEX ignore the current tag.
#![no_main]

use autodeploy_core::tag_policy::TagPolicy;
use autodeploy_fuzz::split_fields;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [kind, rest @ ..] = data else {
        return;
    };
    let [pattern, current, new] = split_fields::<3>(rest, b'\n');
    if pattern.len() > 600 || current.len() > 200 || new.len() > 200 {
        return;
    }
    let pattern = String::from_utf8_lossy(pattern).into_owned();
    let current = String::from_utf8_lossy(current);
    let new = String::from_utf8_lossy(new);
    let policy = match kind % 3 {
        0 => TagPolicy::Semver { range: pattern },
        1 => TagPolicy::Glob { pattern },
        _ => TagPolicy::Regex { pattern },
    };
    let _ = policy.field_name();
    let compiled = match policy.compile() {
        Ok(compiled) => compiled,
        Err(message) => {
            assert!(!message.is_empty());
            return;
        }
    };
    let with_current = compiled.accepts(Some(&current), &new);
    let alone = compiled.accepts(None, &new);
    match policy {
        TagPolicy::Semver { .. } => {
            assert!(!with_current || alone, "a current tag widened the range");
            assert!(!compiled.accepts(Some(&new), &new), "{new:?} accepted over itself");
        }
        TagPolicy::Glob { .. } | TagPolicy::Regex { .. } => {
            assert_eq!(with_current, alone, "GLOB / REGEX looked at the current tag");
        }
    }
});
