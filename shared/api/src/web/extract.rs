//! Request parsing shared by every handler: bounded bodies, content types, JSON, path
//! identifiers and query parameters. Each failure is an `ApiError`, never a panic.

use std::collections::HashMap;

use autodeploy_core::body::{Document, read_document};
use autodeploy_core::delivery::{DeliveryOutcome, DeliverySource};
use autodeploy_core::deployment::DeploymentStatus;
use autodeploy_core::error::FieldError;
use autodeploy_core::ids::{ID_RULE, is_valid_id};
use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use super::error::{ApiError, ApiResult};

/// Largest settings body: a service with its rules is a few KiB.
pub const SETTINGS_BODY_LIMIT: usize = 256 * 1024;

/// Read the whole body, refusing (413) past `limit` without buffering beyond it, and (415) a
/// body sent with a content coding (`Content-Encoding: gzip`), which is not decoded: signatures
/// and documents are about the bytes as written.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Bytes> {
    check_identity_encoding(headers)?;
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
        // The body source's own words: a deadline, or the connection closing (never bytes of it).
        Err(err) => Err(ApiError::malformed(format!(
            "The body could not be read completely: {err}."
        ))),
    }
}

/// Refuse a `Content-Encoding` other than `identity` (each one given, each coding listed).
fn check_identity_encoding(headers: &HeaderMap) -> ApiResult<()> {
    let encoded = headers.get_all(header::CONTENT_ENCODING).iter().any(|value| {
        value
            .as_bytes()
            .split(|b| *b == b',')
            .map(<[u8]>::trim_ascii)
            .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case(b"identity"))
    });
    if encoded {
        return Err(ApiError::encoded_body());
    }
    Ok(())
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

/// A settings body, as JSON (`application/json`, at most [`SETTINGS_BODY_LIMIT`] bytes).
async fn settings_json(req: axum::extract::Request, accepted: &[&str]) -> ApiResult<Value> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, SETTINGS_BODY_LIMIT).await?;
    json_body(&parts.headers, &bytes, accepted)
}

/// A JSON body read as document `T` (core's field reader): the media type checked, the size
/// bounded, every field checked, each bad one named.
pub struct Valid<T>(pub T);

impl<S: Send + Sync, T: Document> axum::extract::FromRequest<S> for Valid<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, _: &S) -> Result<Self, Self::Rejection> {
        let value = settings_json(req, &["application/json"]).await?;
        Ok(Valid(read_document(&value)?))
    }
}

/// As [`Valid`], but an empty body reads as `T::default()` (every field optional).
pub struct ValidOrDefault<T>(pub T);

impl<S: Send + Sync, T: Document + Default> axum::extract::FromRequest<S> for ValidOrDefault<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, _: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = read_body(&parts.headers, body, SETTINGS_BODY_LIMIT).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(ValidOrDefault(T::default()));
        }
        let value = json_body(&parts.headers, &bytes, &["application/json"])?;
        Ok(ValidOrDefault(read_document(&value)?))
    }
}

/// A JSON body as a value, for documents read against their path (a service).
pub struct JsonValue(pub Value);

impl<S: Send + Sync> axum::extract::FromRequest<S> for JsonValue {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, _: &S) -> Result<Self, Self::Rejection> {
        Ok(JsonValue(settings_json(req, &["application/json"]).await?))
    }
}

/// An RFC 7396 merge patch (`application/merge-patch+json`, or `application/json`).
pub struct MergePatch(pub Value);

impl<S: Send + Sync> axum::extract::FromRequest<S> for MergePatch {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, _: &S) -> Result<Self, Self::Rejection> {
        let accepted = ["application/merge-patch+json", "application/json"];
        Ok(MergePatch(settings_json(req, &accepted).await?))
    }
}

pub fn parse_json(bytes: &[u8]) -> ApiResult<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::malformed("The request needs a JSON body."));
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::malformed("The body is not valid UTF-8."));
    }
    let value = serde_json::from_slice(bytes).map_err(|e| {
        // serde_json's message names the line and column, never the content.
        ApiError::malformed(format!("The body is not valid JSON: {e}."))
    })?;
    // The parsed value kept only the last of a repeated key: a part of the body dropped.
    if let Some(path) = autodeploy_core::body::repeated_key(bytes) {
        return Err(ApiError::invalid_field(&path, "is given more than once"));
    }
    Ok(value)
}

/// Refuse a path identifier that does not follow SPEC's grammar.
pub fn check_id(field: &str, value: &str) -> ApiResult<()> {
    if is_valid_id(value) {
        Ok(())
    } else {
        Err(ApiError::invalid_field(field, ID_RULE))
    }
}

/// The query string, as pairs in order (percent-decoded).
#[derive(Debug, Default)]
pub struct QueryParams(Vec<(String, String)>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::parse(parts.uri.query()))
    }
}

/// A route that takes no query parameter: any is a 400 naming it ([`QueryParams::only`]), so
/// that a parameter put in the query instead of the body (`?wait_seconds=20`) is not ignored.
pub struct NoQuery;

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for NoQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        QueryParams::parse(parts.uri.query()).only(&[])?;
        Ok(Self)
    }
}

impl QueryParams {
    pub fn parse(query: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The value of `name`; given twice, a 400 (which one was meant is a guess).
    pub fn get(&self, name: &str) -> ApiResult<Option<&str>> {
        let mut values = self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        match (values.next(), values.next()) {
            (value, None) => Ok(value),
            _ => Err(ApiError::invalid_field(name, "must be given once")),
        }
    }

    /// A boolean parameter: absent is false; `true`, `false`, `1`, `0` in any case; anything
    /// else, or the parameter given twice, is a 400 (a typo must never deploy for real).
    pub fn flag(&self, name: &str) -> ApiResult<bool> {
        let Some(value) = self.get(name)? else {
            return Ok(false);
        };
        match value.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(ApiError::invalid_field(name, "must be true, false, 1 or 0")),
        }
    }

    /// A 400 naming every parameter that is not one of `names`: on a route whose parameters
    /// change what it does, a misspelt one (`?dryrun=true`, `?sevice_id=`) must not be ignored
    /// into a real deployment or an unfiltered list. (Webhook routes take whatever a provider
    /// or a proxy adds.)
    pub fn only(&self, names: &[&str]) -> ApiResult<()> {
        let mut unknown: Vec<String> = Vec::new();
        for (name, _) in &self.0 {
            let shown = shown_name(name);
            if !names.contains(&name.as_str()) && !unknown.contains(&shown) {
                unknown.push(shown);
            }
        }
        if unknown.is_empty() {
            return Ok(());
        }
        let takes = match names {
            [] => "takes no query parameter".to_owned(),
            names => format!("takes only {}", names.join(", ")),
        };
        Err(ApiError::validation(
            unknown
                .into_iter()
                .map(|name| FieldError::new(name, format!("is not a query parameter of this route, which {takes}")))
                .collect(),
        ))
    }

    /// `dry_run`: see [`QueryParams::flag`]. A parameter that reads as `dry_run` spelt
    /// otherwise (`dryrun`, `dry-run`, `dryRun`) is a 400 on every route, webhook routes too,
    /// which otherwise ignore what they do not read: ignored, it would deploy for real.
    pub fn dry_run(&self) -> ApiResult<bool> {
        let misspelt = |name: &str| {
            let letters = name.chars().filter(|c| !matches!(c, '-' | '_' | '.' | ' '));
            name != "dry_run" && letters.map(|c| c.to_ascii_lowercase()).eq("dryrun".chars())
        };
        if let Some((name, _)) = self.0.iter().find(|(name, _)| misspelt(name)) {
            return Err(ApiError::invalid_field(
                &shown_name(name),
                "is not a query parameter: write dry_run (misspelt, it would be ignored and the delivery deployed for real)",
            ));
        }
        self.flag("dry_run")
    }

    /// The parameter `name`, one of `T`'s names: absent or empty is `None`, any other value a
    /// 400 that lists them.
    pub fn one_of<T: Named>(&self, name: &str) -> ApiResult<Option<T>> {
        let Some(raw) = self.get(name)?.filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        T::ALL
            .iter()
            .copied()
            .find(|v| v.name() == raw)
            .map(Some)
            .ok_or_else(|| {
                let all: Vec<&str> = T::ALL.iter().map(|v| v.name()).collect();
                ApiError::invalid_field(name, format!("must be one of {}", all.join(", ")))
            })
    }
}

/// A query parameter's name as an error shows it: as given when it is one word (ASCII
/// letters, digits, `_`, `-`, `.`, `[`, `]`; at most 64), else described: the client's text
/// goes into the deliveries history, where no one may write a sentence of their own.
fn shown_name(name: &str) -> String {
    let word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']');
    if name.is_empty() {
        "(a parameter without a name)".to_owned()
    } else if name.len() <= 64 && name.chars().all(word) {
        name.to_owned()
    } else {
        "(a parameter whose name is not a plain word)".to_owned()
    }
}

/// A closed set of names a query parameter filters by (`?status=QUEUED`).
pub trait Named: Copy + 'static {
    const ALL: &'static [Self];
    fn name(self) -> &'static str;
}

macro_rules! named {
    ($($kind:ty),*) => {$(
        impl Named for $kind {
            const ALL: &'static [Self] = &<$kind>::ALL;
            fn name(self) -> &'static str {
                self.as_str()
            }
        }
    )*};
}

named!(DeliverySource, DeliveryOutcome, DeploymentStatus);

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

/// The organization of the path (`/organization/{org}/…`), checked against the identifier
/// grammar.
pub struct Org(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Org {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        let path = PathParams::from_request_parts(parts, state).await?;
        Ok(Org(path.id("org", "organization_id")?.to_owned()))
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
    fn flags_are_strict() {
        for (query, want) in [
            (None, Some(false)),
            (Some("dry_run=true"), Some(true)),
            (Some("dry_run=TRUE"), Some(true)),
            (Some("dry_run=1"), Some(true)),
            (Some("dry_run=False"), Some(false)),
            (Some("dry_run=0"), Some(false)),
            (Some("dry_run=yes"), None),
            (Some("dry_run"), None),
            (Some("dry_run="), None),
            (Some("dry_run=maybe"), None),
            (Some("dry_run=true&dry_run=true"), None),
            (Some("other=1"), Some(false)),
        ] {
            assert_eq!(QueryParams::parse(query).dry_run().ok(), want, "{query:?}");
        }
    }
}
