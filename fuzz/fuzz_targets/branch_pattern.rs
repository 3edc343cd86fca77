//! `validate_branch` and `BranchPattern` on arbitrary names: the input is `pattern \n branch`.
//!
//! Checks that a valid branch name always compiles as a pattern, that a pattern without `*`
//! matches exactly itself, and that a glob pattern matches its own text when that text is a
//! literal (no `*`).
#![no_main]

use autodeploy_core::branch::{BranchPattern, validate_branch};
use autodeploy_fuzz::split_fields;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > 1024 {
        return;
    }
    let [pattern, branch] = split_fields::<2>(data, b'\n');
    let pattern = String::from_utf8_lossy(pattern);
    let branch = String::from_utf8_lossy(branch);
    let valid = validate_branch(&pattern);
    match BranchPattern::new(&pattern) {
        Ok(compiled) => {
            assert!(valid.is_ok());
            assert_eq!(compiled.as_str(), pattern);
            assert_eq!(compiled.is_glob(), pattern.contains('*'));
            if !compiled.is_glob() {
                assert!(compiled.matches(&pattern));
                assert_eq!(compiled.matches(&branch), branch == pattern);
            } else {
                let _ = compiled.matches(&branch);
            }
        }
        Err(message) => {
            assert!(!message.is_empty());
            assert!(
                valid.is_err(),
                "{pattern:?} is a valid branch name but no pattern: {message}"
            );
        }
    }
});
