//! Engines and pull consumers: `…/deployments/lease`, `…/{id}/ack`, `…/{id}/nack`,
//! `…/{id}/extend` (the standalone server's pull interface) and `…/{id}/result` (an engine's
//! report, on every deployment of the product). All need the `consume` scope.

use std::time::Duration;

use autodeploy_core::body::{Document, Fields};
use autodeploy_core::deployment::{DeploymentRecord, DeploymentResult, ResultStatus};
use axum::Json;
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::StatusCode;
use serde::Serialize;

use super::AppState;
use super::auth::Consume;
use super::deployments::{deployment_id, refused};
use super::error::{ApiError, ApiResult};
use super::extract::{NoQuery, PathParams, Valid, ValidOrDefault};
use crate::deploy::consume;
use crate::store::{LeaseRequest, Leased, PullQueue};
use crate::util::now_rfc3339;

/// The routes every deployment of the product serves.
pub fn result_routes() -> Router<AppState> {
    Router::new().route(
        "/organization/{org}/deployments/{deployment_id}/result",
        post(report_result),
    )
}

/// The pull interface (the standalone server).
pub fn pull_routes() -> Router<AppState> {
    Router::new()
        .route("/organization/{org}/deployments/lease", post(lease))
        .route("/organization/{org}/deployments/{deployment_id}/ack", post(ack))
        .route("/organization/{org}/deployments/{deployment_id}/nack", post(nack))
        .route("/organization/{org}/deployments/{deployment_id}/extend", post(extend))
}

pub const MAX_LEASE_ITEMS: i64 = 10;
pub const LEASE_SECONDS: std::ops::RangeInclusive<i64> = 10..=43_200;
pub const DEFAULT_LEASE_SECONDS: i64 = 300;
pub const MAX_WAIT_SECONDS: i64 = 20;
pub const MAX_RETRY_AFTER_SECONDS: i64 = 3_600;
const MAX_RESULT_MESSAGE: usize = 1_000;
const MAX_RESULT_URL: usize = 2_048;

/// A whole number in `range`, or the default when absent.
fn number_in(fields: &mut Fields<'_>, name: &str, range: std::ops::RangeInclusive<i64>, default: i64) -> Option<i64> {
    if !fields.is_given(name) {
        fields.ignore(name);
        return Some(default);
    }
    let out_of_range = |fields: &mut Fields<'_>| {
        fields.error(
            name,
            format!("must be a whole number from {} to {}", range.start(), range.end()),
        );
        None
    };
    // A whole number written as a decimal (`10.0`, `1e1`, as some clients serialize numbers)
    // is that number, as JSON Schema counts integers; one too large for 64 bits (`1e30`,
    // `99999999999999999999`) is out of range, not "not a whole number".
    if let Some(serde_json::Value::Number(n)) = fields.value(name)
        && n.as_i64().is_none()
    {
        let whole = n.as_f64().filter(|f| f.fract() == 0.0);
        if n.as_u64().is_some() || whole.is_some_and(|f| f.abs() > i64::MAX as f64) {
            return out_of_range(fields);
        }
        if let Some(whole) = whole {
            fields.ignore(name);
            // In range of i64, checked above.
            let value = whole as i64;
            return if range.contains(&value) {
                Some(value)
            } else {
                out_of_range(fields)
            };
        }
    }
    let value: i64 = fields.required(name)?;
    if range.contains(&value) {
        Some(value)
    } else {
        out_of_range(fields)
    }
}

/// `{"max": 1–10, "lease_seconds": 10–43200, "wait_seconds": 0–20}`, each optional.
struct LeaseBody {
    request: LeaseRequest,
    wait: Duration,
}

impl Default for LeaseBody {
    fn default() -> Self {
        Self {
            request: LeaseRequest {
                max: 1,
                lease_secs: DEFAULT_LEASE_SECONDS,
            },
            wait: Duration::ZERO,
        }
    }
}

impl Document for LeaseBody {
    const SHAPE: &'static str = "{\"max\": 1, \"lease_seconds\": 300, \"wait_seconds\": 0}";

    fn read(fields: &mut Fields<'_>) -> Option<Self> {
        let max = number_in(fields, "max", 1..=MAX_LEASE_ITEMS, 1);
        let lease_secs = number_in(fields, "lease_seconds", LEASE_SECONDS, DEFAULT_LEASE_SECONDS);
        let wait = number_in(fields, "wait_seconds", 0..=MAX_WAIT_SECONDS, 0);
        Some(Self {
            request: LeaseRequest {
                max: usize::try_from(max?).ok()?,
                lease_secs: lease_secs?,
            },
            wait: Duration::from_secs(u64::try_from(wait?).ok()?),
        })
    }
}

/// `{"lease_id": "…"}` and, per route, a number.
struct LeaseRef {
    lease_id: String,
    seconds: i64,
}

fn lease_id(fields: &mut Fields<'_>) -> Option<String> {
    let id: String = fields.required("lease_id")?;
    // Printable ASCII, as the ids a lease returns: another is refused, not looked up.
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        fields.error("lease_id", "must be the lease_id a lease returned");
        return None;
    }
    Some(id)
}

struct AckBody(LeaseRef);
struct NackBody(LeaseRef);
struct ExtendBody(LeaseRef);

impl Document for AckBody {
    const SHAPE: &'static str = "{\"lease_id\": \"…\"}";
    fn read(fields: &mut Fields<'_>) -> Option<Self> {
        Some(Self(LeaseRef {
            lease_id: lease_id(fields)?,
            seconds: 0,
        }))
    }
}

impl Document for NackBody {
    const SHAPE: &'static str = "{\"lease_id\": \"…\", \"retry_after_seconds\": 0}";
    fn read(fields: &mut Fields<'_>) -> Option<Self> {
        let id = lease_id(fields);
        let seconds = number_in(fields, "retry_after_seconds", 0..=MAX_RETRY_AFTER_SECONDS, 0);
        Some(Self(LeaseRef {
            lease_id: id?,
            seconds: seconds?,
        }))
    }
}

impl Document for ExtendBody {
    const SHAPE: &'static str = "{\"lease_id\": \"…\", \"lease_seconds\": 300}";
    fn read(fields: &mut Fields<'_>) -> Option<Self> {
        let id = lease_id(fields);
        let seconds = number_in(fields, "lease_seconds", LEASE_SECONDS, DEFAULT_LEASE_SECONDS);
        Some(Self(LeaseRef {
            lease_id: id?,
            seconds: seconds?,
        }))
    }
}

/// The pull interface, where this deployment of the product has one.
fn pull(state: &AppState) -> ApiResult<&dyn PullQueue> {
    state.pull.as_deref().ok_or_else(|| {
        ApiError::not_found(
            "This deployment has no pull interface: on AWS, consume the SQS queue (see Consuming deployments in the README).",
        )
    })
}

/// A leased deployment: the deployment, and its lease.
#[derive(Serialize)]
struct LeasedView {
    #[serde(flatten)]
    record: DeploymentRecord,
    lease_id: String,
    lease_expires_at: String,
    attempt: u32,
}

impl From<Leased> for LeasedView {
    fn from(leased: Leased) -> Self {
        Self {
            record: leased.record,
            lease_id: leased.lease_id,
            lease_expires_at: leased.lease_expires_at,
            attempt: leased.attempt,
        }
    }
}

async fn lease(
    Consume { state, org, caller, .. }: Consume,
    _: NoQuery,
    ValidOrDefault(body): ValidOrDefault<LeaseBody>,
) -> ApiResult<Response> {
    let leased = consume::lease(
        pull(&state)?,
        &state.waiting_polls,
        &state.draining,
        &org,
        body.request,
        body.wait,
        || caller.still_valid(&state),
    )
    .await?;
    let items: Vec<LeasedView> = leased.into_iter().map(LeasedView::from).collect();
    // Serialized as it is (not through a `Value`, whose maps sort their keys): each item's
    // fields in the order every other answer of a deployment has them.
    Ok(Json(LeaseAnswer { items }).into_response())
}

/// The answer to a lease: `{"items": [...]}`.
#[derive(Serialize)]
struct LeaseAnswer {
    items: Vec<LeasedView>,
}

async fn ack(
    Consume { state, org, .. }: Consume,
    _: NoQuery,
    path: PathParams,
    Valid(AckBody(body)): Valid<AckBody>,
) -> ApiResult<StatusCode> {
    let id = deployment_id(&path)?;
    pull(&state)?
        .ack(&org, id, &body.lease_id)
        .await?
        .map_err(|r| refused(r, id))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn nack(
    Consume { state, org, .. }: Consume,
    _: NoQuery,
    path: PathParams,
    Valid(NackBody(body)): Valid<NackBody>,
) -> ApiResult<StatusCode> {
    let id = deployment_id(&path)?;
    pull(&state)?
        .nack(&org, id, &body.lease_id, body.seconds)
        .await?
        .map_err(|r| refused(r, id))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn extend(
    Consume { state, org, .. }: Consume,
    _: NoQuery,
    path: PathParams,
    Valid(ExtendBody(body)): Valid<ExtendBody>,
) -> ApiResult<Response> {
    let id = deployment_id(&path)?;
    let expires = pull(&state)?
        .extend(&org, id, &body.lease_id, body.seconds)
        .await?
        .map_err(|r| refused(r, id))?;
    Ok(Json(serde_json::json!({
        "deployment_id": id, "lease_id": body.lease_id, "lease_expires_at": expires,
    }))
    .into_response())
}

/// `{"status": "SUCCEEDED" | "FAILED", "message": "…", "url": "https://…"}`.
struct ResultBody {
    status: ResultStatus,
    message: String,
    url: Option<String>,
}

impl Document for ResultBody {
    const SHAPE: &'static str = "{\"status\": \"SUCCEEDED\", \"message\": \"…\", \"url\": \"https://…\"}";

    fn read(fields: &mut Fields<'_>) -> Option<Self> {
        let status = fields.required("status");
        let message: Option<String> = fields.optional("message");
        // Newlines as `\n` or `\r\n`, and tabs (engines' logs hold them); no other control
        // character.
        let stray_control = |m: &str| {
            m.replace("\r\n", "\n")
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
        };
        if let Some(m) = &message
            && (m.chars().count() > MAX_RESULT_MESSAGE || stray_control(m))
        {
            fields.error(
                "message",
                format!(
                    "must be at most {MAX_RESULT_MESSAGE} characters, without control characters but newlines and tabs"
                ),
            );
        }
        let url: Option<String> = fields.optional("url");
        if let Some(u) = &url {
            let web = u.starts_with("https://") || u.starts_with("http://");
            // A user name or password in it would be shown to every reader of the deployment.
            let credentials = |uri: &http::Uri| uri.authority().is_some_and(|a| a.as_str().contains('@'));
            if !web || u.len() > MAX_RESULT_URL || u.parse::<http::Uri>().map_or(true, |uri| credentials(&uri)) {
                fields.error(
                    "url",
                    format!(
                        "must be an http(s) URL of at most {MAX_RESULT_URL} bytes, without a user name or password"
                    ),
                );
            }
        }
        if fields.has_errors() {
            return None;
        }
        Some(Self {
            status: status?,
            message: message.unwrap_or_default(),
            url,
        })
    }
}

async fn report_result(
    Consume { state, org, .. }: Consume,
    _: NoQuery,
    path: PathParams,
    Valid(body): Valid<ResultBody>,
) -> ApiResult<Response> {
    let id = deployment_id(&path)?;
    let result = DeploymentResult {
        status: body.status,
        message: body.message,
        url: body.url,
        reported_at: now_rfc3339(),
    };
    let record = state
        .store
        .report_result(&org, id, &result)
        .await?
        .map_err(|r| refused(r, id))?;
    Ok(Json(record).into_response())
}
