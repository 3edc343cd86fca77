//! Identifiers: organization ids, service ids, token ids and deployment ids.

/// SPEC: identifiers match `[A-Za-z0-9][A-Za-z0-9._-]{0,62}`.
pub fn is_valid_id(s: &str) -> bool {
    let bytes = s.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            first.is_ascii_alphanumeric()
                && rest.len() <= 62
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        None => false,
    }
}

/// The sentence used whenever an identifier is refused.
pub const ID_RULE: &str = "must match [A-Za-z0-9][A-Za-z0-9._-]{0,62}";

/// A deployment id is 32 lowercase hex characters.
pub fn is_valid_deployment_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "api", "A.b_c-d", "0", &"x".repeat(63)] {
            assert!(is_valid_id(ok), "{ok}");
        }
        for bad in ["", "-a", ".a", "_a", "a/b", "a b", "é", &"x".repeat(64), "a\n"] {
            assert!(!is_valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn deployment_ids() {
        assert!(is_valid_deployment_id("0f8b8c1e4d2a4b7f9a6e3c2d1b0a9f8e"));
        assert!(!is_valid_deployment_id("0F8B8C1E4D2A4B7F9A6E3C2D1B0A9F8E"));
        assert!(!is_valid_deployment_id("0f8b"));
    }
}
