//! `parse_repository_url` / `normalize_repository_url` on any string.
//!
//! Checks what `repo_url.rs` promises of an accepted URL's normalized form: a non-empty
//! `host/path`, lower-case, with no empty, `.` or `..` segment and no `.git` suffix left on the
//! last segment (unless removing it would leave an empty, `.` or `..` name), and normalizing it
//! again gives it back whenever it parses. Two exceptions are left out of that last check, as
//! the module's own test leaves them out: a decoded space (never parses again) and a decoded `%`
//! (the normalized form is a comparison key, not a URL: a second pass would decode it again).
#![no_main]

use autodeploy_core::repo_url::{MAX_REPOSITORY_URL_LEN, normalize_repository_url, parse_repository_url};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_REPOSITORY_URL_LEN + 64 {
        return;
    }
    let input = String::from_utf8_lossy(data);
    let parsed = match parse_repository_url(&input) {
        Ok(parsed) => parsed,
        Err(err) => {
            let _ = err.to_string();
            return;
        }
    };
    let normalized = parsed.normalized;
    assert_eq!(normalize_repository_url(&input).as_ref(), Ok(&normalized));
    let (host, path) = normalized.split_once('/').expect("normalized form is host/path");
    assert!(!host.is_empty() && !path.is_empty(), "{normalized:?}");
    assert!(
        !normalized.bytes().any(|b| b.is_ascii_uppercase()),
        "not lower-case: {normalized:?}"
    );
    for segment in path.split('/') {
        assert!(
            !matches!(segment, "" | "." | ".."),
            "{segment:?} segment in {normalized:?}"
        );
    }
    let last = normalized.rsplit('/').next().unwrap_or_default();
    // `.git` and `..git` keep theirs: without it they would be an empty, `.` or `..` segment.
    let stem = last.strip_suffix(".git");
    assert!(
        matches!(stem, None | Some("" | "." | "..")),
        ".git suffix left: {normalized:?}"
    );

    if normalized.contains(['%', ' ']) {
        return;
    }
    if let Ok(again) = normalize_repository_url(&normalized) {
        assert_eq!(again, normalized, "normalizing {input:?} twice changed its form");
    }
});
