//! Deployment restrictions: `validate_restriction_value`, `Restrictions::compile` and
//! `Restrictions::allows` on arbitrary rules and file lists.
//!
//! Input: lines. Each line up to the first empty one is a rule whose first byte picks MATCH
//! (even) or EXCLUDE (odd) and whose rest is the value; the lines after the empty one are the
//! changed files. Checks that a set of values each accepted at write time always compiles,
//! and that with no rules every push deploys.
#![no_main]

use autodeploy_core::restrictions::{
    DeploymentRestriction, RestrictionMode, RestrictionType, Restrictions, validate_restriction_value,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > 4096 {
        return;
    }
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let mut rules = Vec::new();
    let mut all_valid = true;
    for line in lines.by_ref().take(32) {
        let Some(first) = line.bytes().next() else {
            break;
        };
        let value = &line[line.chars().next().map_or(0, char::len_utf8)..];
        all_valid &= validate_restriction_value(value).is_ok();
        rules.push(DeploymentRestriction {
            mode: if first % 2 == 0 {
                RestrictionMode::Match
            } else {
                RestrictionMode::Exclude
            },
            kind: RestrictionType::Path,
            value: value.to_owned(),
        });
    }
    let files: Vec<&str> = lines.take(64).collect();
    match Restrictions::compile(&rules) {
        Ok(compiled) => {
            assert!(all_valid, "compiled a rule that validation refuses");
            let allowed = compiled.allows(files.iter().copied());
            if rules.is_empty() {
                assert!(allowed && compiled.is_empty());
            }
        }
        Err(message) => {
            assert!(
                !all_valid,
                "every value validates, yet the rules do not compile: {message}"
            );
        }
    }
});
