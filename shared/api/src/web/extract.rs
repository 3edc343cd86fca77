//! Request parsing shared by every handler: bounded bodies, content types, JSON, path
//! identifiers, list parameters and cursors. Each failure is an `ApiError`, never a panic.

use std::collections::HashMap;

use autodeploy_core::ids::{ID_RULE, is_valid_id};
use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::{BodyExt, Limited};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ApiError, ApiResult};

/// Largest settings body: a service with its rules is a few KiB.
pub const SETTINGS_BODY_LIMIT: usize = 256 * 1024;

/// Read the whole body, refusing (413) past `limit` without buffering beyond it.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Bytes> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(ApiError::payload_too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(ApiError::payload_too_large(limit)),
        Err(_) => Err(ApiError::malformed("The body could not be read completely.")),
    }
}

/// The media type of the request, lower-cased, without parameters.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// Check the content type against `accepted`, then parse the body as JSON.
pub fn json_body(headers: &HeaderMap, bytes: &[u8], accepted: &[&str]) -> ApiResult<Value> {
    match media_type(headers) {
        Some(mt) if accepted.contains(&mt.as_str()) => {}
        _ => return Err(ApiError::unsupported_media_type(&accepted.join(" or "))),
    }
    parse_json(bytes)
}

pub fn parse_json(bytes: &[u8]) -> ApiResult<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::malformed("The request needs a JSON body."));
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::malformed("The body is not valid UTF-8."));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        // serde_json's message names the line and column, never the content.
        ApiError::malformed(format!("The body is not valid JSON: {e}."))
    })
}

/// Refuse a path identifier that does not follow SPEC's grammar.
pub fn check_id(field: &str, value: &str) -> ApiResult<()> {
    if is_valid_id(value) {
        Ok(())
    } else {
        Err(ApiError::invalid_field(field, ID_RULE))
    }
}

/// The query string as a map (the last value of a repeated key wins).
pub fn query_map(query: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// `limit` (default 50, 1..=100) and the position a `cursor` points after.
#[derive(Debug)]
pub struct ListParams {
    pub limit: usize,
    pub after: Option<String>,
}

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 100;

/// A cursor is bound to the organization and the query it came from, so one cannot be
/// replayed against another list.
#[derive(Serialize, Deserialize)]
struct Cursor {
    o: String,
    q: String,
    a: String,
}

impl ListParams {
    /// `scope` names the list and its filters (e.g. `deployments?service_id=api`).
    pub fn parse(query: &HashMap<String, String>, org: &str, scope: &str) -> ApiResult<Self> {
        let mut errors = Vec::new();
        let limit = match query.get("limit") {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    errors.push(autodeploy_core::error::FieldError::new(
                        "limit",
                        format!("must be a whole number from 1 to {MAX_LIMIT}"),
                    ));
                    DEFAULT_LIMIT
                }
            },
        };
        let after = match query.get("cursor").filter(|c| !c.is_empty()) {
            None => None,
            Some(raw) => match decode_cursor(raw) {
                Some(c) if c.o == org && c.q == scope => Some(c.a),
                Some(_) => {
                    errors.push(autodeploy_core::error::FieldError::new(
                        "cursor",
                        "belongs to another organization or list",
                    ));
                    None
                }
                None => {
                    errors.push(autodeploy_core::error::FieldError::new(
                        "cursor",
                        "is not a cursor this API returned",
                    ));
                    None
                }
            },
        };
        if errors.is_empty() {
            Ok(Self { limit, after })
        } else {
            Err(ApiError::validation(errors))
        }
    }
}

fn decode_cursor(raw: &str) -> Option<Cursor> {
    if raw.len() > 1024 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn encode_cursor(org: &str, scope: &str, after: &str) -> String {
    let cursor = Cursor {
        o: org.to_owned(),
        q: scope.to_owned(),
        a: after.to_owned(),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&cursor).unwrap_or_default())
}

/// `If-Match`: `None` when absent; `Some(None)` for `*` (any current state).
pub fn if_match(headers: &HeaderMap) -> ApiResult<Option<Option<String>>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::invalid_field("If-Match", "must be an ETag this API returned"))?
        .trim();
    if value == "*" {
        return Ok(Some(None));
    }
    let tag = value.strip_prefix("W/").unwrap_or(value);
    match tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) if !inner.is_empty() && !inner.contains('"') => Ok(Some(Some(inner.to_owned()))),
        _ => Err(ApiError::invalid_field(
            "If-Match",
            "must be a quoted ETag this API returned",
        )),
    }
}

pub fn etag_header(etag: &str) -> String {
    format!("\"{etag}\"")
}

/// Path parameters by name; a segment that is not valid UTF-8 after decoding is a 400.
pub struct PathParams(HashMap<String, String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(map)| PathParams(map))
            .map_err(|_| ApiError::invalid_field("path", "holds a segment that is not valid UTF-8"))
    }
}

impl PathParams {
    /// The parameter `name`, checked against SPEC's identifier grammar; `field` names it in
    /// the error.
    pub fn id(&self, name: &str, field: &str) -> ApiResult<&str> {
        let value = self.0.get(name).map(String::as_str).unwrap_or("");
        check_id(field, value)?;
        Ok(value)
    }

    pub fn raw(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_bound_to_org_and_query() {
        let c = encode_cursor("acme", "services", "api");
        let q: HashMap<_, _> = [("cursor".to_owned(), c)].into();
        assert_eq!(
            ListParams::parse(&q, "acme", "services").unwrap().after.as_deref(),
            Some("api")
        );
        assert_eq!(ListParams::parse(&q, "other", "services").unwrap_err().status, 400);
        assert_eq!(ListParams::parse(&q, "acme", "tokens").unwrap_err().status, 400);
        let q: HashMap<_, _> = [("cursor".to_owned(), "!!".to_owned())].into();
        assert_eq!(ListParams::parse(&q, "acme", "services").unwrap_err().status, 400);
    }

    #[test]
    fn limits() {
        for (raw, ok) in [
            ("1", true),
            ("100", true),
            ("0", false),
            ("101", false),
            ("x", false),
            ("-1", false),
        ] {
            let q: HashMap<_, _> = [("limit".to_owned(), raw.to_owned())].into();
            assert_eq!(ListParams::parse(&q, "a", "s").is_ok(), ok, "{raw}");
        }
    }

    #[test]
    fn if_match_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h).unwrap(), None);
        h.insert(header::IF_MATCH, "\"abc\"".parse().unwrap());
        assert_eq!(if_match(&h).unwrap(), Some(Some("abc".to_owned())));
        h.insert(header::IF_MATCH, "*".parse().unwrap());
        assert_eq!(if_match(&h).unwrap(), Some(None));
        h.insert(header::IF_MATCH, "abc".parse().unwrap());
        assert!(if_match(&h).is_err());
    }
}
