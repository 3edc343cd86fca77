//! `parse_image_name`, `parse_service_image`, `normalize_registry`, `parse_path` and
//! `validate_tag` on arbitrary strings. The input is `name \n registry \n tag`.
//!
//! Checks that what is accepted is stable: a parsed name printed and parsed again is the same
//! name, a service image re-parsed from its normalized `registry/path` gives the same pair (when
//! Docker reads that registry as a host), a normalized registry normalizes to itself, and an
//! accepted tag follows Docker's grammar.
#![no_main]

use autodeploy_core::image::{
    DOCKER_HUB, MAX_NAME_LEN, MAX_TAG_LEN, normalize_registry, parse_image_name, parse_path, parse_service_image,
    validate_tag,
};
use autodeploy_fuzz::split_fields;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > 1024 {
        return;
    }
    let [name, registry, tag] = split_fields::<3>(data, b'\n');
    let name = String::from_utf8_lossy(name);
    let registry = String::from_utf8_lossy(registry);
    let tag = String::from_utf8_lossy(tag);

    match parse_image_name(&name) {
        Ok(parsed) => {
            assert!(!parsed.path.is_empty());
            let printed = parsed.to_string();
            // `docker.io/x` prints as `docker.io/library/x`, which may pass the length cap.
            if printed.len() <= MAX_NAME_LEN {
                assert_eq!(
                    parse_image_name(&printed).as_ref(),
                    Ok(&parsed),
                    "{name:?} printed as {printed:?}"
                );
            }
            for candidate in parsed.lookup_paths() {
                let _ = parsed.matches(DOCKER_HUB, &candidate);
            }
        }
        Err(err) => {
            let _ = err.to_string();
        }
    }

    match normalize_registry(&registry) {
        Ok(host) => {
            assert_eq!(
                normalize_registry(&host).as_ref(),
                Ok(&host),
                "{registry:?} normalized to {host:?}"
            );
            if let Ok(path) = parse_path(&host, &name) {
                assert_eq!(
                    parse_path(&host, &path).as_ref(),
                    Ok(&path),
                    "path {name:?} on {host:?}"
                );
            }
        }
        Err(err) => {
            let _ = err.to_string();
        }
    }

    match parse_service_image(&registry, &name) {
        Ok((host, path)) => {
            let full = format!("{host}/{path}");
            // Only a host Docker reads as one (a `.` or `:` in it, or `localhost`) can lead the
            // name; the cap applies to `image_name` as written, not to host and path together.
            let reads_as_host = host.contains(['.', ':']) || host == "localhost";
            if reads_as_host && full.len() <= MAX_NAME_LEN {
                assert_eq!(
                    parse_service_image(&host, &full),
                    Ok((host.clone(), path.clone())),
                    "({registry:?}, {name:?}) re-read from {full:?}"
                );
            }
        }
        Err(err) => {
            let _ = err.to_string();
        }
    }

    match validate_tag(&tag) {
        Ok(()) => {
            assert!(!tag.is_empty() && tag.len() <= MAX_TAG_LEN);
            assert!(
                tag.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            );
            assert!(!tag.starts_with(['.', '-']));
        }
        Err(err) => {
            let _ = err.to_string();
        }
    }
});
