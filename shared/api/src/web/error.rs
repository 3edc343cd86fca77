//! The one error type of the HTTP API: every failure becomes SPEC's error shape
//! `{"error": {"code", "message", "details"}}` with the right status.

use autodeploy_core::error::FieldError;
use autodeploy_core::target::{QOVERY_ID_EXAMPLE, TargetType};
use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;

use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<FieldError>,
    /// `WWW-Authenticate`, which a 401 for a missing or refused API token carries (RFC 9110
    /// 11.6.1): the schemes the API takes.
    pub challenge: Option<&'static str>,
}

/// The schemes of `Authorization` the API takes, as a 401 names them.
pub const TOKEN_CHALLENGE: &str = "Bearer realm=\"autodeploy\", Token realm=\"autodeploy\"";

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            challenge: None,
        }
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MALFORMED_BODY", message)
    }

    pub fn validation(details: Vec<FieldError>) -> Self {
        let message = match details.as_slice() {
            [one] => format!("{}: {}.", one.field, one.message.trim_end_matches('.')),
            _ => format!(
                "{} fields need attention: {}.",
                details.len(),
                details.iter().map(|d| d.field.as_str()).collect::<Vec<_>>().join(", ")
            ),
        };
        Self {
            details,
            ..Self::new(StatusCode::BAD_REQUEST, "VALIDATION_FAILED", message)
        }
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    /// 401 for an API route: no token, or one that is not valid. Names the schemes taken.
    pub fn token_required(message: impl Into<String>) -> Self {
        Self {
            challenge: Some(TOKEN_CHALLENGE),
            ..Self::unauthorized(message)
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    /// A service naming a deploy target the organization does not have.
    pub fn missing_target() -> Self {
        Self::invalid_field(
            "deploy_target.target_id",
            "names no deploy target of this organization; create it with PUT /organization/{org}/targets/{target_id} first",
        )
    }

    /// A service naming a deploy target of type `kind` without what that type needs of it
    /// (a `QOVERY` target: its `external_id`, the service's id in Qovery).
    pub fn unfit_target(kind: TargetType) -> Self {
        Self::invalid_field(
            "deploy_target.external_id",
            format!(
                "must be the id of the service there for a {} target: letters, digits, `-`, `_` and `.`, such as the UUID `{QOVERY_ID_EXAMPLE}` in the service's URL in the Qovery console",
                kind.as_str()
            ),
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "This path does not accept that method.",
        )
    }

    pub fn precondition_failed(message: &str) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED", message)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("The body is larger than the limit of {limit} bytes."),
        )
    }

    pub fn unsupported_media_type(expected: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            format!("The body must be sent as {expected}."),
        )
    }

    /// A body sent with a content coding, which is never decoded.
    pub fn encoded_body() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "The body must be sent unencoded: a `Content-Encoding` (gzip, deflate, br) is not decoded; drop the \
             header and send the body as it is.",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "CONFLICT", message)
    }

    /// A fault of the server that no retry by the client can fix.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", message)
    }

    /// A request whose HTTP message itself could not be read, refused by the HTTP layer
    /// before any route with the status it chose: 400 (a malformed request line or header),
    /// 414 (a request target too long) or 431 (headers too large or too many); `None` for
    /// another status. The message never quotes the request.
    pub fn unreadable_request(status: StatusCode) -> Option<Self> {
        let (code, message) = match status {
            StatusCode::BAD_REQUEST => (
                "MALFORMED_REQUEST",
                "The request is not valid HTTP/1.1: its request line or one of its headers could not be read.",
            ),
            StatusCode::URI_TOO_LONG => (
                "URI_TOO_LONG",
                "The request target (path and query) is longer than this server reads.",
            ),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
                "HEADERS_TOO_LARGE",
                "The request's headers are larger, or more numerous, than this server reads.",
            ),
            _ => return None,
        };
        Some(Self::new(status, code, message))
    }

    /// The body of this error (SPEC's shape), serialized.
    pub fn to_json(&self) -> Vec<u8> {
        // Strings and field errors only: serializing cannot fail.
        serde_json::to_vec(&self.body()).unwrap_or_default()
    }

    fn body(&self) -> Body<'_> {
        Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                details: &self.details,
            },
        }
    }
}

impl From<autodeploy_core::body::DocumentError> for ApiError {
    fn from(err: autodeploy_core::body::DocumentError) -> Self {
        match err {
            autodeploy_core::body::DocumentError::NotAnObject(message) => ApiError::malformed(message),
            autodeploy_core::body::DocumentError::Invalid(details) => ApiError::validation(details),
        }
    }
}

impl From<crate::deploy::DeployError> for ApiError {
    fn from(err: crate::deploy::DeployError) -> Self {
        match err {
            crate::deploy::DeployError::Store(err) => err.into(),
            crate::deploy::DeployError::Contention => ApiError::unavailable(
                "The matching services are being changed by many requests at once; retry shortly.",
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::PreconditionFailed => ApiError::precondition_failed(
                "The resource changed since the ETag given in If-Match: read it again and retry.",
            ),
            StoreError::Unavailable(detail) | StoreError::Incompatible(detail) => {
                // The cause goes to the log, not to the client: it may name internals.
                tracing::error!(error = %detail, "store failure");
                ApiError::unavailable("The store is unavailable; nothing was changed. Retry later.")
            }
            StoreError::LimitReached(message) => ApiError::invalid_field("service", message.trim_end_matches('.')),
            StoreError::TargetMissing => ApiError::missing_target(),
            StoreError::TargetUnfit(kind) => ApiError::unfit_target(kind),
            // Answered by the use cases as `DUPLICATE_DELIVERY`; never reaches a client as is.
            StoreError::DeliveryProcessed => {
                ApiError::conflict("This delivery was processed by another request at the same time.")
            }
            StoreError::Corrupt(detail) => {
                tracing::error!(error = %detail, "a stored record is unreadable");
                ApiError::internal(
                    "A stored record could not be read; a retry will not help. The server's log says which.",
                )
            }
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    details: &'a [FieldError],
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static(challenge),
            );
        }
        // What the caller was told, for the layers that log or record the request.
        response.extensions_mut().insert(ErrorReason(self.message));
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The message of an error response, attached to it for the layers that log or record it.
#[derive(Debug, Clone)]
pub struct ErrorReason(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    /// A store's refusal of a service unfit for its target's type is the 400 the API gives
    /// when it finds so itself before the write.
    #[test]
    fn an_unfit_target_refused_by_the_store_is_the_api_s_400() {
        let err = ApiError::from(StoreError::TargetUnfit(TargetType::Qovery));
        assert_eq!(err, ApiError::unfit_target(TargetType::Qovery));
        assert_eq!((err.status, err.code), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"));
        assert_eq!(
            err.details,
            vec![FieldError::new(
                "deploy_target.external_id",
                "must be the id of the service there for a QOVERY target: letters, digits, `-`, `_` and `.`, such as the UUID `0f8b8c1e-4d2a-4b7f-9a6e-3c2d1b0a9f8e` in the service's URL in the Qovery console"
            )]
        );
    }
}
