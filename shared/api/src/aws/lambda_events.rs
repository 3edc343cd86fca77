//! What the Lambda functions do with an invocation, beyond serving a router: the `image-tag`
//! function's dispatch between API Gateway requests and EventBridge ECR events, and the
//! scheduled relay. The binaries only wire these to `lambda_runtime`, so everything here runs
//! in tests with a plain [`LambdaEvent`].
//!
//! Raw events are never logged: a Docker Hub notification's path ends with the organization's
//! webhook secret (`/organization/{org}/registry-webhooks/dockerhub/{secret}`). Logged paths go
//! through [`redact_path`].

use std::borrow::Cow;

use autodeploy_core::ids::{ID_RULE, is_valid_id};
use autodeploy_core::image::ImageName;
use autodeploy_core::matching::ImageTarget;
use autodeploy_core::registry::{ImagePushed, ImageSourceKind, RegistryEvent, RegistryEventError, parse_ecr_event};
use axum::Router;
use lambda_http::lambda_runtime::{Diagnostic, LambdaEvent};
use lambda_http::request::LambdaRequest;
use serde::Serialize;
use serde_json::Value;
use tower::ServiceExt;

use crate::deploy::DeployError;
use crate::deploy::history::{DeliveryContext, DeliverySummary, finish};
use crate::deploy::image::{ImageAnnouncement, ImageReport, deploy_image};
use crate::metrics::{DeliveryLine, Endpoint, Tally};
use crate::pipeline::{RelayReport, relay_pending};
use crate::store::{DeploymentQueue, Store, StoreError};
use crate::web::{AppState, image_router};
use autodeploy_core::delivery::DeliverySource;

/// The organization whose containers and jobs the ECR events of this function's account
/// deploy (the `image-tag` function). An EventBridge event names an AWS account and region, not an
/// organization, so the operator says which one the account's pushes belong to; without it
/// ECR events are refused (HTTP requests are served all the same).
pub const ECR_ORGANIZATION_ENV: &str = "AUTODEPLOY_ECR_ORGANIZATION";

/// Deployments the relay reads per batch (it loops until none are left).
pub const RELAY_BATCH: usize = 100;

/// The `route` property of an ECR event's metrics line (an HTTP delivery's is its route).
pub const ECR_ROUTE: &str = "EventBridge aws.ecr Image Action";

/// The Lambda environment `lambda_runtime` reads at start-up (it panics without it).
const RUNTIME_ENV: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

/// Why an invocation failed. Lambda records it as the invocation's error (an EventBridge or
/// scheduled invocation is then retried); the messages never carry an event's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Neither an API Gateway HTTP API request (payload format 2.0) nor an EventBridge event.
    #[error("Unsupported event: {0}")]
    Unsupported(String),
    /// An ECR event reached a function without `AUTODEPLOY_ECR_ORGANIZATION`.
    #[error("{0}")]
    EcrNotConfigured(String),
    /// An ECR event that is not what EventBridge sends.
    #[error("{0}")]
    MalformedEvent(String),
    /// The deployment was refused (a 4xx of the HTTP API).
    #[error("The ECR event was refused ({code}): {message}")]
    Rejected { code: &'static str, message: String },
    /// The store did not answer: nothing was recorded, a retry starts clean.
    #[error("{0}")]
    Unavailable(String),
}

impl EventError {
    fn kind(&self) -> &'static str {
        match self {
            EventError::Unsupported(_) => "UnsupportedEvent",
            EventError::EcrNotConfigured(_) => "EcrOrganizationNotConfigured",
            EventError::MalformedEvent(_) => "MalformedEvent",
            EventError::Rejected { .. } => "Rejected",
            EventError::Unavailable(_) => "Unavailable",
        }
    }
}

impl From<EventError> for Diagnostic {
    fn from(err: EventError) -> Self {
        Diagnostic {
            error_type: err.kind().to_owned(),
            error_message: err.to_string(),
        }
    }
}

impl From<RegistryEventError> for EventError {
    fn from(err: RegistryEventError) -> Self {
        EventError::MalformedEvent(err.to_string())
    }
}

impl From<StoreError> for EventError {
    fn from(err: StoreError) -> Self {
        EventError::Unavailable(format!("The store is unavailable: {err}"))
    }
}

impl From<DeployError> for EventError {
    fn from(err: DeployError) -> Self {
        match err {
            DeployError::Store(err) => err.into(),
            DeployError::Contention => EventError::Unavailable(err.to_string()),
        }
    }
}

/// `path` with the secret segment of a Docker Hub webhook URL replaced by `{secret}`, for logs.
pub fn redact_path(path: &str) -> Cow<'_, str> {
    let segments: Vec<&str> = path.split('/').collect();
    let secret_at = segments
        .windows(2)
        .position(|w| w[0].eq_ignore_ascii_case("registry-webhooks") && w[1].eq_ignore_ascii_case("dockerhub"));
    match secret_at.map(|i| i + 2) {
        Some(i) if i < segments.len() => {
            let mut redacted: Vec<&str> = segments[..i].to_vec();
            redacted.push("{secret}");
            // Whatever follows is not ours to read either.
            if i + 1 < segments.len() {
                redacted.push("…");
            }
            Cow::Owned(redacted.join("/"))
        }
        _ => Cow::Borrowed(path),
    }
}

/// `Ok` when the variables `lambda_runtime` needs are set, else a sentence naming those
/// missing, so a function started outside Lambda stops with a message instead of a panic.
pub fn check_runtime_environment() -> Result<(), String> {
    let missing: Vec<&str> = RUNTIME_ENV
        .iter()
        .copied()
        .filter(|name| std::env::var(name).map_or(true, |v| v.trim().is_empty()))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "not running in AWS Lambda: {} not set (the Lambda runtime sets them)",
            missing.join(", ")
        ));
    }
    let memory_ok = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").is_ok_and(|v| v.trim().parse::<i32>().is_ok());
    if !memory_ok {
        return Err("AWS_LAMBDA_FUNCTION_MEMORY_SIZE is not a number".to_owned());
    }
    Ok(())
}

/// What an invocation of the `image-tag` function carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventShape {
    /// An API Gateway HTTP API request, payload format 2.0.
    HttpApi,
    /// An EventBridge event (`source`, `detail-type`, `detail`).
    EventBridge,
    Unknown,
}

impl EventShape {
    pub fn of(event: &Value) -> Self {
        let Some(object) = event.as_object() else {
            return EventShape::Unknown;
        };
        if object.contains_key("detail-type") && object.contains_key("source") {
            EventShape::EventBridge
        } else if object.contains_key("requestContext") && object.contains_key("routeKey") {
            EventShape::HttpApi
        } else {
            EventShape::Unknown
        }
    }
}

/// The answer to an ECR event, as the function returns it (Lambda keeps it for async
/// invocations' destinations): the HTTP status the same notification would get, and the
/// image-tag response.
#[derive(Debug, Clone, Serialize)]
pub struct EcrOutcome {
    pub status: u16,
    #[serde(flatten)]
    pub response: ImageReport,
}

/// The `image-tag` function: HTTP requests from API Gateway go to [`image_router`]; ECR
/// "Image Action" events from EventBridge deploy the pushed tag to the containers and jobs of the
/// configured organization that use that image.
#[derive(Clone)]
pub struct ImageTagHandler {
    state: AppState,
    router: Router,
    /// The organization ECR events deploy in, or why there is none.
    ecr_organization: Result<String, String>,
}

impl ImageTagHandler {
    /// `ecr_organization` is the organization ECR events deploy in; `None` refuses them.
    pub fn new(state: AppState, ecr_organization: Option<&str>) -> Self {
        let ecr_organization = match ecr_organization.map(str::trim).filter(|o| !o.is_empty()) {
            None => Err(format!(
                "ECR events are refused: {ECR_ORGANIZATION_ENV} is not set, so this function does not know which organization's services an ECR push deploys"
            )),
            Some(org) if !is_valid_id(org) => Err(format!(
                "ECR events are refused: {ECR_ORGANIZATION_ENV} is not an organization id ({ID_RULE})"
            )),
            Some(org) => Ok(org.to_owned()),
        };
        Self {
            router: image_router(state.clone()),
            state,
            ecr_organization,
        }
    }

    /// As [`new`](Self::new), with the organization from `AUTODEPLOY_ECR_ORGANIZATION`. An
    /// invalid one is a misconfiguration, logged now; an unset one is the stack without ECR
    /// (the template's default), so nothing is logged at every cold start: an ECR event that
    /// arrives all the same is refused with the reason. HTTP requests are served either way.
    pub fn from_env(state: AppState) -> Self {
        let configured = super::optional_env(ECR_ORGANIZATION_ENV);
        let handler = Self::new(state, configured.as_deref());
        if let Err(reason) = &handler.ecr_organization
            && configured.is_some()
        {
            tracing::warn!(reason = %reason, "ECR events are not configured");
        }
        handler
    }

    /// The organization ECR events deploy in, if configured.
    pub fn ecr_organization(&self) -> Option<&str> {
        self.ecr_organization.as_deref().ok()
    }

    /// Serve one invocation. An HTTP request always gets an HTTP response (errors included,
    /// in the API's error shape); an ECR event answers an [`EcrOutcome`] or fails.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, EventError> {
        match EventShape::of(&event.payload) {
            EventShape::HttpApi => self.http(event).await,
            EventShape::EventBridge => {
                let context = self
                    .ecr_organization()
                    .map(|org| DeliveryContext::new(org, DeliverySource::Ecr, None, false));
                let outcome = self.eventbridge(&event.payload, context.as_ref()).await;
                if let Some(context) = &context {
                    let (status, summary) = match &outcome {
                        Ok(outcome) => (outcome.status, DeliverySummary::from(&outcome.response)),
                        Err(err @ EventError::Unavailable(_)) => (503, DeliverySummary::refused(503, &err.to_string())),
                        Err(err) => (400, DeliverySummary::refused(400, &err.to_string())),
                    };
                    finish(self.state.store.as_ref(), context, &summary, status).await;
                }
                self.emit_ecr_metrics(&outcome, &event.context.request_id);
                outcome.and_then(encode)
            }
            EventShape::Unknown => {
                let err = EventError::Unsupported(format!(
                    "this function serves API Gateway HTTP API requests (payload format 2.0) and EventBridge ECR Image Action events; got {}",
                    describe(&event.payload)
                ));
                tracing::error!(error = %err, "invocation refused");
                Err(err)
            }
        }
    }

    /// Through `lambda_http`'s own conversions: the event into an `http::Request` (body
    /// decoded, query parsed, context attached), the router's response into API Gateway's.
    async fn http(&self, event: LambdaEvent<Value>) -> Result<Value, EventError> {
        let LambdaEvent { payload, context } = event;
        if payload.get("version").and_then(Value::as_str) != Some("2.0") {
            return Err(EventError::Unsupported(
                "an API Gateway request in payload format other than 2.0; configure the integration with payload format version 2.0".to_owned(),
            ));
        }
        let method = payload
            .pointer("/requestContext/http/method")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let path = redact_path(payload.get("rawPath").and_then(Value::as_str).unwrap_or("")).into_owned();
        // The deserializer's error names no content of the event.
        let request: LambdaRequest = serde_json::from_value(payload).map_err(|_| {
            EventError::Unsupported("an API Gateway HTTP API request that lambda_http cannot read".to_owned())
        })?;
        let adapter = lambda_http::Adapter::from(self.router.clone());
        let response = match adapter.oneshot(LambdaEvent::new(request, context)).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let response = serde_json::to_value(response)
            .map_err(|e| EventError::Unsupported(format!("the response could not be encoded: {e}")))?;
        let status = response.get("statusCode").and_then(Value::as_u64).unwrap_or(0);
        tracing::info!(method, path, status, "http request");
        Ok(response)
    }

    /// The EMF line of an ECR event (`AUTODEPLOY_METRICS=emf`), as an HTTP delivery gets from
    /// the image router's metrics layer: the status the same notification would get over HTTP
    /// (an event refused counts as `Rejected`, a store outage as `Failed`).
    fn emit_ecr_metrics(&self, outcome: &Result<EcrOutcome, EventError>, request_id: &str) {
        let (status, mut tally) = match outcome {
            Ok(outcome) => (outcome.status, crate::web::images::tally(&outcome.response)),
            Err(EventError::Unavailable(_)) => (503, Tally::default()),
            Err(_) => (400, Tally::default()),
        };
        tally.source = Some("ECR".to_owned());
        crate::metrics::emit(&DeliveryLine {
            endpoint: Endpoint::Image,
            organization: self.ecr_organization(),
            source: tally.source.as_deref(),
            route: ECR_ROUTE,
            status,
            tally: &tally,
            request_id: Some(request_id),
            api_request_id: None,
        });
    }

    async fn eventbridge(&self, event: &Value, history: Option<&DeliveryContext>) -> Result<EcrOutcome, EventError> {
        let org = match &self.ecr_organization {
            Ok(org) => org.as_str(),
            Err(reason) => {
                let err = EventError::EcrNotConfigured(format!("{reason}."));
                tracing::error!(error = %err, "ECR event refused");
                return Err(err);
            }
        };
        let parsed = parse_ecr_event(event).map_err(|e| {
            let err = EventError::from(e);
            tracing::error!(error = %err, "ECR event refused");
            err
        })?;
        let ImagePushed {
            registry,
            path,
            tag,
            source,
        } = match parsed {
            RegistryEvent::Ignored { reason, image } => {
                tracing::info!(reason, "ECR event ignored");
                let response = ImageReport::ignored_notification(ImageSourceKind::Ecr, false, reason, image);
                return Ok(EcrOutcome { status: 200, response });
            }
            RegistryEvent::Pushed(pushed) => pushed,
        };
        // With its host, the name matches only services on that registry.
        let image = ImageName {
            registry: Some(registry),
            path,
        };
        let announcement = ImageAnnouncement {
            org,
            target: ImageTarget::Registry,
            image: &image,
            tag: &tag,
            source,
            dry_run: false,
            remember: None,
            history,
        };
        match deploy_image(&self.state.deployer, announcement).await {
            Ok(response) => Ok(EcrOutcome {
                status: if response.queued_any() { 202 } else { 200 },
                response,
            }),
            Err(err) => {
                let err = EventError::from(err);
                tracing::error!(error = %err, org, image = %image, tag, "ECR event not deployed");
                Err(err)
            }
        }
    }
}

fn encode<T: Serialize>(value: T) -> Result<Value, EventError> {
    serde_json::to_value(value).map_err(|e| EventError::Unsupported(format!("the answer could not be encoded: {e}")))
}

/// An event's shape for an error message, without its values: the kind, and an object's keys.
fn describe(event: &Value) -> String {
    match event {
        Value::Object(map) => {
            let mut keys: Vec<&str> = map.keys().map(String::as_str).take(8).collect();
            if map.len() > keys.len() {
                keys.push("…");
            }
            format!("an object with keys [{}]", keys.join(", "))
        }
        Value::Array(_) => "an array".to_owned(),
        Value::String(_) => "a string".to_owned(),
        Value::Number(_) => "a number".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Null => "null".to_owned(),
    }
}

/// One run of the scheduled relay: send every deployment left `PENDING` (SPEC "Nothing
/// recorded is lost") and log what it did. A queue still down is not an error (the next run
/// tries again); a store that does not answer is.
pub async fn relay(store: &dyn Store, queue: &dyn DeploymentQueue) -> Result<RelayReport, EventError> {
    match relay_pending(store, queue, RELAY_BATCH).await {
        Ok(report) => {
            if report.sent < report.pending {
                tracing::warn!(
                    pending = report.pending,
                    sent = report.sent,
                    "relay: the queue did not take every pending deployment; the next run retries"
                );
            } else {
                tracing::info!(pending = report.pending, sent = report.sent, "relay");
            }
            Ok(report)
        }
        Err(err) => {
            let err = EventError::from(err);
            tracing::error!(error = %err, "relay: pending deployments could not be read");
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dockerhub_secrets_are_redacted() {
        assert_eq!(
            redact_path("/organization/acme/registry-webhooks/dockerhub/s3cr3t-s3cr3t-s3cr3t"),
            "/organization/acme/registry-webhooks/dockerhub/{secret}"
        );
        assert_eq!(
            redact_path("/prod/organization/acme/Registry-Webhooks/DockerHub/s3cr3t/more"),
            "/prod/organization/acme/Registry-Webhooks/DockerHub/{secret}/…"
        );
        assert_eq!(
            redact_path("/organization/acme/registry-webhooks/dockerhub"),
            "/organization/acme/registry-webhooks/dockerhub"
        );
        assert_eq!(
            redact_path("/organization/acme/container/deploy"),
            "/organization/acme/container/deploy"
        );
    }

    #[test]
    fn shapes() {
        assert_eq!(
            EventShape::of(&json!({"version": "2.0", "routeKey": "$default", "requestContext": {}})),
            EventShape::HttpApi
        );
        assert_eq!(
            EventShape::of(&json!({"source": "aws.ecr", "detail-type": "ECR Image Action", "detail": {}})),
            EventShape::EventBridge
        );
        assert_eq!(EventShape::of(&json!({"Records": []})), EventShape::Unknown);
        assert_eq!(EventShape::of(&json!("x")), EventShape::Unknown);
    }

    #[test]
    fn errors_become_diagnostics() {
        let d = Diagnostic::from(EventError::EcrNotConfigured("no organization".to_owned()));
        assert_eq!(d.error_type, "EcrOrganizationNotConfigured");
        assert_eq!(d.error_message, "no organization");
    }

    #[test]
    fn descriptions_carry_no_values() {
        let d = describe(&json!({"secret": "s3cr3t", "a": 1}));
        assert!(!d.contains("s3cr3t"), "{d}");
        assert!(d.contains("secret"), "{d}");
    }
}
