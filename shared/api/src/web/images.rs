//! New image tags: the CI endpoints `POST /organization/{org}/container/deploy` and
//! `…/job/deploy` (Qovery's paths and body), and registry webhooks from Docker Hub and GitHub
//! Packages. All of them end in [`deploy_image`], which the ECR EventBridge path reuses.

use std::collections::BTreeSet;

use autodeploy_core::deployment::{DeploymentRequest, SCHEMA, Trigger};
use autodeploy_core::error::FieldError;
use autodeploy_core::image::{ImageName, parse_image_name, validate_tag};
use autodeploy_core::matching::{ImageTarget, SkipReason, decide_image};
use autodeploy_core::model::Service;
use autodeploy_core::provider::GitProvider;
use autodeploy_core::push::verify_signature;
use autodeploy_core::registry_events::{
    ImagePushed, ImageSourceKind, RegistryEvent, RegistryEventError, parse_dockerhub, parse_github_package,
};
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::auth::{Caller, Scope};
use super::error::{ApiError, ApiResult};
use super::extract::{PathParams, json_body, read_body};
use super::webhooks::dry_run;
use crate::metrics::Tally;
use crate::pipeline::{Candidate, Outcome};
use crate::store::{Guard, StoredService};
use crate::util::{new_deployment_id, new_etag, now_rfc3339};

/// An image notification is a few hundred bytes; registry webhooks a few KiB.
pub const IMAGE_BODY_LIMIT: usize = 1024 * 1024;

/// Tries per service when its record loses a race (the service changed since it was read):
/// enough for identical concurrent notifications, where the second read already sees the tag.
const RECORD_ATTEMPTS: usize = 3;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/organization/{org}/container/deploy", post(deploy_container))
        .route("/organization/{org}/job/deploy", post(deploy_job))
        .route(
            "/organization/{org}/registry-webhooks/dockerhub/{secret}",
            post(dockerhub_webhook),
        )
        // Docker Hub cannot sign, so its URL must carry the secret: say so rather than 404.
        .route(
            "/organization/{org}/registry-webhooks/dockerhub",
            post(dockerhub_without_secret),
        )
        .route(
            "/organization/{org}/registry-webhooks/github",
            post(github_package_webhook),
        )
        .route_layer(axum::middleware::from_fn(crate::metrics::observe_image))
}

/// A deployment queued (or, in a dry run, that would be) for a new tag.
#[derive(Debug, Clone, Serialize)]
pub struct ImageQueuedEntry {
    pub service_id: String,
    pub deployment_id: Option<String>,
    pub tag: String,
    pub previous_tag: String,
    pub status: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageSkippedEntry {
    pub service_id: String,
    pub reason: SkipReason,
}

/// The image-tag response: shaped as the push response (`queued`, `skipped`, `ignored`,
/// `dry_run`), naming the image as it was matched (normalized).
#[derive(Debug, Clone, Serialize)]
pub struct ImageResponse {
    pub source: ImageSourceKind,
    /// The registry host the notification named; `null` for a bare name (any registry).
    pub registry: Option<String>,
    pub image_name: Option<String>,
    pub tag: Option<String>,
    pub queued: Vec<ImageQueuedEntry>,
    pub skipped: Vec<ImageSkippedEntry>,
    pub ignored: Option<&'static str>,
    /// Why a notification was ignored, for the person reading the registry's delivery log.
    pub message: Option<String>,
    pub dry_run: bool,
}

impl ImageResponse {
    /// An empty response: nothing queued, skipped or ignored yet.
    pub fn new(source: ImageSourceKind, dry_run: bool) -> Self {
        Self {
            source,
            registry: None,
            image_name: None,
            tag: None,
            queued: Vec::new(),
            skipped: Vec::new(),
            ignored: None,
            message: None,
            dry_run,
        }
    }

    /// 200 with `ignored` set: the notification announces nothing to deploy.
    pub fn ignored(source: ImageSourceKind, dry_run: bool, ignored: &'static str, message: &str) -> Response {
        let mut response = Self::new(source, dry_run);
        response.ignored = Some(ignored);
        response.message = Some(message.to_owned());
        response.into_http(StatusCode::OK)
    }

    /// What the response reports, for its metrics line.
    pub fn tally(&self) -> Tally {
        Tally {
            ignored: self.ignored,
            source: serde_json::to_value(self.source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned)),
            dry_run: self.dry_run,
            ..Tally::of(self.queued.iter().map(|q| q.status), self.skipped.len())
        }
    }

    /// The HTTP response, carrying its [`Tally`] for the metrics layer.
    pub fn into_http(self, status: StatusCode) -> Response {
        let tally = self.tally();
        let mut response = (status, Json(self)).into_response();
        response.extensions_mut().insert(tally);
        response
    }
}

async fn deploy_container(
    caller: Caller,
    state: State<AppState>,
    path: PathParams,
    query: RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    ci_deploy(caller, state, path, query, headers, body, ImageTarget::Container).await
}

async fn deploy_job(
    caller: Caller,
    state: State<AppState>,
    path: PathParams,
    query: RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    ci_deploy(caller, state, path, query, headers, body, ImageTarget::Job).await
}

/// The CI endpoints: Qovery's `autoDeployContainerEnvironments` / `autoDeployJobEnvironments`.
async fn ci_deploy(
    caller: Caller,
    State(state): State<AppState>,
    path: PathParams,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
    target: ImageTarget,
) -> ApiResult<Response> {
    let org = path.id("org", "organization_id")?;
    caller.authorize(org, Scope::Deploy)?;
    let dry_run = dry_run(query.as_deref());
    let bytes = read_body(&headers, body, IMAGE_BODY_LIMIT).await?;
    let doc = json_body(&headers, &bytes, &["application/json"])?;
    let (image, tag) = parse_deploy_body(&doc)?;
    let (status, response) = deploy_image(&state, org, target, &image, &tag, ImageSourceKind::Api, dry_run).await?;
    Ok(response.into_http(status))
}

/// `{"image_name": "acme/api", "tag": "1.4.0"}`; every bad field is named at once.
fn parse_deploy_body(doc: &Value) -> ApiResult<(ImageName, String)> {
    let Some(obj) = doc.as_object() else {
        return Err(ApiError::malformed(
            "The body must be a JSON object: {\"image_name\": \"…\", \"tag\": \"…\"}.",
        ));
    };
    let mut errors: Vec<FieldError> = obj
        .keys()
        .filter(|k| !matches!(k.as_str(), "image_name" | "tag"))
        .map(|k| FieldError::new(k.as_str(), "is not a known field"))
        .collect();
    let image = match obj.get("image_name") {
        Some(Value::String(s)) => parse_image_name(s)
            .map_err(|err| errors.push(FieldError::new("image_name", err.to_string())))
            .ok(),
        Some(_) => {
            errors.push(FieldError::new("image_name", "must be a string"));
            None
        }
        None => {
            errors.push(FieldError::new("image_name", "is required"));
            None
        }
    };
    let tag = match obj.get("tag") {
        Some(Value::String(s)) => validate_tag(s)
            .map(|()| s.clone())
            .map_err(|err| errors.push(FieldError::new("tag", err.to_string())))
            .ok(),
        Some(_) => {
            errors.push(FieldError::new("tag", "must be a string"));
            None
        }
        None => {
            errors.push(FieldError::new("tag", "is required"));
            None
        }
    };
    match (image, tag) {
        (Some(image), Some(tag)) if errors.is_empty() => Ok((image, tag)),
        _ => Err(ApiError::validation(errors)),
    }
}

/// Hashing both sides first makes the comparison constant-time in the length too.
fn secret_matches(presented: &str, stored: &str) -> bool {
    let a: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let b: [u8; 32] = Sha256::digest(stored.as_bytes()).into();
    bool::from(a.ct_eq(&b))
}

/// Docker Hub cannot sign its webhooks, so the URL carries the organization's `dockerhub`
/// secret. The path (and so the secret) is never logged nor echoed.
async fn dockerhub_webhook(
    State(state): State<AppState>,
    path: PathParams,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let org = path.id("org", "organization_id")?;
    // Fail closed: no secret configured means no notification is believed.
    let stored = state.store.get_secret(org, "dockerhub").await?.ok_or_else(|| {
        ApiError::unauthorized(
            "No dockerhub webhook secret is configured for this organization, so notifications are refused.",
        )
    })?;
    if stored.secret.is_empty() || !secret_matches(path.raw("secret"), &stored.secret) {
        return Err(ApiError::unauthorized(
            "The webhook URL does not carry this organization's dockerhub secret.",
        ));
    }
    let dry_run = dry_run(query.as_deref());
    let bytes = read_body(&headers, body, IMAGE_BODY_LIMIT).await?;
    let event = parse_dockerhub(&bytes).map_err(registry_error)?;
    registry_event(&state, org, event, ImageSourceKind::DockerHub, dry_run).await
}

async fn dockerhub_without_secret() -> ApiError {
    ApiError::unauthorized(
        "The Docker Hub webhook URL ends with the organization's dockerhub secret: …/registry-webhooks/dockerhub/<secret>.",
    )
}

/// GitHub `package` / `registry_package` events, signed with the organization's `github`
/// secret exactly as its pushes are.
async fn github_package_webhook(
    State(state): State<AppState>,
    path: PathParams,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let org = path.id("org", "organization_id")?;
    let dry_run = dry_run(query.as_deref());
    let bytes = read_body(&headers, body, IMAGE_BODY_LIMIT).await?;
    let secret = state
        .store
        .get_secret(org, GitProvider::Github.slug())
        .await?
        .ok_or_else(|| {
            ApiError::unauthorized(
                "No github webhook secret is configured for this organization, so deliveries are refused.",
            )
        })?;
    verify_signature(GitProvider::Github, &headers, &bytes, secret.secret.as_bytes())
        .map_err(|e| ApiError::unauthorized(format!("The delivery could not be verified: {e}.")))?;

    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::malformed("The delivery has no X-GitHub-Event header."))?;
    let source = ImageSourceKind::GithubPackages;
    if event == "ping" {
        return Ok(ImageResponse::ignored(
            source,
            dry_run,
            "PING",
            "A ping: GitHub is checking the webhook.",
        ));
    }
    let json = github_json(&headers, &bytes)?;
    let parsed = parse_github_package(event, &json).map_err(registry_error)?;
    registry_event(&state, org, parsed, source, dry_run).await
}

/// GitHub can be configured to send a form whose `payload` field holds the JSON; the
/// signature covers the form as sent, so this runs after verification.
fn github_json(headers: &HeaderMap, bytes: &Bytes) -> ApiResult<Bytes> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form && !bytes.starts_with(b"payload=") {
        return Ok(bytes.clone());
    }
    form_urlencoded::parse(bytes)
        .find(|(name, _)| name == "payload")
        .map(|(_, payload)| Bytes::from(payload.into_owned()))
        .ok_or_else(|| ApiError::malformed("The form-encoded delivery has no payload field."))
}

fn registry_error(err: RegistryEventError) -> ApiError {
    // The messages describe the shape or the rule, never a secret.
    ApiError::malformed(err.to_string())
}

/// A parsed registry notification: ignored, or matched against containers on that registry.
async fn registry_event(
    state: &AppState,
    org: &str,
    event: RegistryEvent,
    source: ImageSourceKind,
    dry_run: bool,
) -> ApiResult<Response> {
    match event {
        RegistryEvent::Ignored(reason) => Ok(ImageResponse::ignored(source, dry_run, "UNSUPPORTED_EVENT", reason)),
        RegistryEvent::Pushed(ImagePushed {
            registry,
            path,
            tag,
            source,
        }) => {
            // With its host, the name matches only services on that registry.
            let image = ImageName {
                registry: Some(registry),
                path,
            };
            let (status, response) =
                deploy_image(state, org, ImageTarget::Registry, &image, &tag, source, dry_run).await?;
            Ok(response.into_http(status))
        }
    }
}

/// Services of `org` that use `image` under any of its lookup paths, each once, by id.
async fn services_using(state: &AppState, org: &str, image: &ImageName) -> ApiResult<Vec<StoredService>> {
    let mut seen = BTreeSet::new();
    let mut services = Vec::new();
    for path in image.lookup_paths() {
        for stored in state.store.services_by_image_path(org, &path).await? {
            if seen.insert(stored.service.id.clone()) {
                services.push(stored);
            }
        }
    }
    Ok(services)
}

/// A deployment of `tag` for `stored`, guarded so that it is recorded only if the service is
/// unchanged since it was read, in the same write that makes `tag` its current tag.
fn candidate(
    org: &str,
    stored: &StoredService,
    tag: &str,
    source: ImageSourceKind,
    requested_at: &str,
) -> Option<Candidate> {
    let service = &stored.service;
    let current = service.spec.image.as_ref()?;
    let (registry, path) = service.image_key()?;
    let mut spec = service.spec.clone();
    if let Some(image) = spec.image.as_mut() {
        image.tag = tag.to_owned();
    }
    let updated = StoredService {
        service: Service {
            spec,
            version: service.version + 1,
            updated_at: requested_at.to_owned(),
            ..service.clone()
        },
        etag: new_etag(),
        last_push: stored.last_push.clone(),
    };
    Some(Candidate {
        request: DeploymentRequest {
            schema: SCHEMA.to_owned(),
            deployment_id: new_deployment_id(),
            organization_id: org.to_owned(),
            environment_id: service.spec.environment_id.clone(),
            service_id: service.id.clone(),
            service_kind: service.spec.kind,
            git_commit_id: None,
            image_tag: Some(tag.to_owned()),
            trigger: Trigger::ImageTag {
                source,
                registry,
                image_name: path,
                previous_tag: Some(current.tag.clone()),
                tag: tag.to_owned(),
            },
            requested_at: requested_at.to_owned(),
        },
        guard: Guard::ServiceUnchanged {
            expected: stored.etag.clone(),
            updated: Box::new(updated),
        },
    })
}

/// Match an announced image tag against the services of `org` and record (then send) one
/// deployment per service that takes it. Shared by the CI endpoints, the registry webhooks and
/// the ECR EventBridge handler; the caller has validated `image` and `tag`.
///
/// Returns 202 when something was queued, else 200. A store failure is a 503: services whose
/// record failed have nothing written, and a retry finds the others at the new tag (`SAME_TAG`).
pub async fn deploy_image(
    state: &AppState,
    org: &str,
    target: ImageTarget,
    image: &ImageName,
    tag: &str,
    source: ImageSourceKind,
    dry_run: bool,
) -> ApiResult<(StatusCode, ImageResponse)> {
    validate_tag(tag).map_err(|err| ApiError::invalid_field("tag", err.to_string()))?;
    let mut response = ImageResponse::new(source, dry_run);
    response.registry = image.registry.clone();
    response.image_name = Some(image.path.clone());
    response.tag = Some(tag.to_owned());

    let mut pending: Vec<StoredService> = Vec::new();
    for stored in services_using(state, org, image).await? {
        decide(&mut response, &mut pending, stored, target, image, tag);
    }

    if dry_run {
        response.queued = pending
            .iter()
            .filter_map(|stored| {
                Some(ImageQueuedEntry {
                    service_id: stored.service.id.clone(),
                    deployment_id: None,
                    tag: tag.to_owned(),
                    previous_tag: stored.service.spec.image.as_ref()?.tag.clone(),
                    status: "DRY_RUN",
                })
            })
            .collect();
        return Ok((StatusCode::OK, finish(response)));
    }

    let mut failure = None;
    for _ in 0..RECORD_ATTEMPTS {
        if pending.is_empty() {
            break;
        }
        let requested_at = now_rfc3339();
        let candidates: Vec<Candidate> = pending
            .iter()
            .filter_map(|stored| candidate(org, stored, tag, source, &requested_at))
            .collect();
        let outcomes = state.record_and_send(&candidates).await;
        let mut lost: Vec<&str> = Vec::new();
        for (candidate, outcome) in candidates.iter().zip(outcomes) {
            let request = &candidate.request;
            match outcome {
                Outcome::Recorded(status) => response.queued.push(ImageQueuedEntry {
                    service_id: request.service_id.clone(),
                    deployment_id: Some(request.deployment_id.clone()),
                    tag: tag.to_owned(),
                    previous_tag: match &request.trigger {
                        Trigger::ImageTag { previous_tag, .. } => previous_tag.clone().unwrap_or_default(),
                        Trigger::GitPush { .. } => String::new(),
                    },
                    status: status.as_str(),
                }),
                Outcome::GuardFailed => lost.push(request.service_id.as_str()),
                Outcome::Failed(err) => failure = Some(err),
            }
        }
        // The service changed since it was read (most often: the same tag was just recorded
        // by an identical notification). Read it again and decide again.
        let mut next = Vec::new();
        for id in lost {
            if let Some(stored) = state.store.get_service(org, id).await? {
                decide(&mut response, &mut next, stored, target, image, tag);
            }
        }
        pending = next;
    }
    if let Some(err) = failure {
        return Err(err.into());
    }
    if !pending.is_empty() {
        return Err(ApiError::unavailable(
            "The matching services are being changed by many requests at once; retry shortly.",
        ));
    }
    let status = if response.queued.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let response = finish(response);
    tracing::info!(
        org,
        source = ?response.source,
        registry = response.registry.as_deref().unwrap_or(""),
        image_name = %image.path,
        tag,
        queued = response.queued.len(),
        skipped = response.skipped.len(),
        "image tag"
    );
    Ok((status, response))
}

/// Apply SPEC's rules to one service: skipped (with its reason), deployable (into `pending`),
/// or not listed at all.
fn decide(
    response: &mut ImageResponse,
    pending: &mut Vec<StoredService>,
    stored: StoredService,
    target: ImageTarget,
    image: &ImageName,
    tag: &str,
) {
    match decide_image(&stored.service, target, image, tag) {
        None => {}
        Some(Err(reason)) => response.skipped.push(ImageSkippedEntry {
            service_id: stored.service.id.clone(),
            reason,
        }),
        Some(Ok(())) => pending.push(stored),
    }
}

/// Entries in service id order, whatever order lookups and retries produced them in.
fn finish(mut response: ImageResponse) -> ImageResponse {
    response.queued.sort_by(|a, b| a.service_id.cmp(&b.service_id));
    response.skipped.sort_by(|a, b| a.service_id.cmp(&b.service_id));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn body_errors_name_every_field() {
        let fields = |doc: Value| -> Vec<String> {
            let mut f: Vec<String> = parse_deploy_body(&doc)
                .err()
                .map(|e| e.details.into_iter().map(|d| d.field).collect())
                .unwrap_or_default();
            f.sort();
            f
        };
        assert!(parse_deploy_body(&json!({"image_name": "acme/api", "tag": "1.0"})).is_ok());
        assert_eq!(fields(json!({})), vec!["image_name", "tag"]);
        assert_eq!(
            fields(json!({"image_name": 1, "tag": "-x", "extra": 1})),
            vec!["extra", "image_name", "tag"]
        );
        assert_eq!(
            fields(json!({"image_name": "acme/api:1.0", "tag": "1.0"})),
            vec!["image_name"]
        );
        let err = parse_deploy_body(&json!([])).err().map(|e| e.code);
        assert_eq!(err, Some("MALFORMED_BODY"));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(secret_matches("0123456789abcdef", "0123456789abcdef"));
        assert!(!secret_matches("0123456789abcde", "0123456789abcdef"));
        assert!(!secret_matches("", "0123456789abcdef"));
    }
}
