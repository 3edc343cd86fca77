//! Conditional writes: `If-Match` and `If-None-Match` read into what a write requires of the
//! current state, and the `ETag` a response carries.

use http::{HeaderMap, header};

use super::error::{ApiError, ApiResult};

/// What a write requires of the current state (`If-Match` / `If-None-Match`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// No condition.
    None,
    /// `If-Match: *`: the resource must exist.
    Exists,
    /// `If-None-Match: *`: the resource must not exist (create only).
    Absent,
    /// `If-Match: "<etag>"`: exactly this state.
    Etag(String),
}

impl Precondition {
    /// Read `If-Match` and `If-None-Match` (only `*` is meaningful for the latter). Either
    /// given on two lines is a 400: which line a proxy or a client meant is a guess, and reading
    /// the first alone could let `*` pass over a stale ETag.
    pub fn from_headers(headers: &HeaderMap) -> ApiResult<Self> {
        for (name, shown) in [(header::IF_MATCH, "If-Match"), (header::IF_NONE_MATCH, "If-None-Match")] {
            if headers.get_all(&name).iter().nth(1).is_some() {
                return Err(ApiError::invalid_field(shown, "is given more than once; send one"));
            }
        }
        let if_match = headers.get(header::IF_MATCH);
        let if_none_match = headers.get(header::IF_NONE_MATCH);
        match (if_match, if_none_match) {
            (Some(_), Some(_)) => Err(ApiError::invalid_field("If-None-Match", "cannot be sent with If-Match")),
            (None, None) => Ok(Precondition::None),
            (None, Some(value)) => match value.to_str().map(str::trim) {
                Ok("*") => Ok(Precondition::Absent),
                _ => Err(ApiError::invalid_field(
                    "If-None-Match",
                    "must be * (create only); conditional reads are not supported",
                )),
            },
            (Some(value), None) => {
                let value = value
                    .to_str()
                    .map_err(|_| ApiError::invalid_field("If-Match", "must be an ETag this API returned"))?
                    .trim();
                if value == "*" {
                    return Ok(Precondition::Exists);
                }
                let tag = value.strip_prefix("W/").unwrap_or(value);
                match tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
                    Some(inner) if !inner.is_empty() && !inner.contains('"') => {
                        Ok(Precondition::Etag(inner.to_owned()))
                    }
                    _ => Err(ApiError::invalid_field(
                        "If-Match",
                        "must be a quoted ETag this API returned, as in If-Match: \"<etag>\"",
                    )),
                }
            }
        }
    }

    /// 412 unless the current state (its etag, if it exists) satisfies the condition.
    pub fn check(&self, current: Option<&str>) -> ApiResult<()> {
        match (self, current) {
            (Precondition::None, _) | (Precondition::Exists, Some(_)) | (Precondition::Absent, None) => Ok(()),
            (Precondition::Etag(want), Some(have)) if want == have => Ok(()),
            _ => Err(self.failed()),
        }
    }

    /// The etag a `DELETE` under this condition requires of the stored resource (`None`: any
    /// state); 412 for `If-None-Match: *`, which no deletion can satisfy.
    pub fn for_delete(&self) -> ApiResult<Option<&str>> {
        match self {
            Precondition::Etag(tag) => Ok(Some(tag)),
            // Whether or not the resource exists: the condition excludes the delete either way.
            Precondition::Absent => Err(ApiError::precondition_failed(
                "If-None-Match: * asks that the resource not exist, and a DELETE removes one that does: send If-Match with its ETag, or no condition.",
            )),
            Precondition::None | Precondition::Exists => Ok(None),
        }
    }

    /// The answer of a `DELETE` under this condition that found nothing to delete: `not_found`
    /// without a condition, a 412 under one (`If-Match: *` names an existing resource).
    pub fn nothing_deleted(&self, not_found: ApiError) -> ApiError {
        if *self == Precondition::None {
            not_found
        } else {
            self.failed()
        }
    }

    /// The 412 of a write whose resource is not in the state this condition asks for.
    pub fn failed(&self) -> ApiError {
        ApiError::precondition_failed(match self {
            Precondition::Exists => "The resource does not exist, and If-Match: * writes only over an existing one.",
            Precondition::Absent => "The resource already exists, and If-None-Match: * only creates.",
            Precondition::Etag(_) => "The resource changed since the ETag given in If-Match: read it again and retry.",
            Precondition::None => "The resource was changed by another request meanwhile: read it again and retry.",
        })
    }
}

pub fn etag_header(etag: &str) -> String {
    format!("\"{etag}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditions() {
        let mut h = HeaderMap::new();
        assert_eq!(Precondition::from_headers(&h).unwrap(), Precondition::None);
        h.insert(header::IF_MATCH, "\"abc\"".parse().unwrap());
        assert_eq!(
            Precondition::from_headers(&h).unwrap(),
            Precondition::Etag("abc".to_owned())
        );
        h.insert(header::IF_MATCH, "*".parse().unwrap());
        assert_eq!(Precondition::from_headers(&h).unwrap(), Precondition::Exists);
        h.insert(header::IF_MATCH, "abc".parse().unwrap());
        assert!(Precondition::from_headers(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, "*".parse().unwrap());
        assert_eq!(Precondition::from_headers(&h).unwrap(), Precondition::Absent);
        assert!(Precondition::Absent.check(Some("x")).is_err());
        assert!(Precondition::Absent.check(None).is_ok());
        assert!(Precondition::Exists.check(None).is_err());
        // Two lines: a 400, whichever comes first.
        for (name, lines) in [
            (header::IF_MATCH, ["*", "\"stale\""]),
            (header::IF_MATCH, ["\"stale\"", "*"]),
            (header::IF_NONE_MATCH, ["*", "*"]),
        ] {
            let mut h = HeaderMap::new();
            for line in lines {
                h.append(&name, line.parse().unwrap());
            }
            let err = Precondition::from_headers(&h).unwrap_err();
            assert_eq!(err.status, http::StatusCode::BAD_REQUEST, "{name}: {lines:?}");
        }
    }
}
