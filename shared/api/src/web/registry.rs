//! Registry webhooks: Docker Hub (its secret in the URL: it cannot sign) and GitHub Packages
//! (signed with the organization's `github` secret, as its pushes are). Each announces a tag
//! of an image on that registry; a body seen before is a replay and deploys nothing.

use autodeploy_core::image::ImageName;
use autodeploy_core::matching::ImageTarget;
use autodeploy_core::provider::GitProvider;
use autodeploy_core::registry::{
    ImagePushed, ImageSourceKind, RegistryEvent, RegistryEventError, parse_dockerhub, parse_github_package,
};
use axum::Router;
use axum::body::Body;

use autodeploy_core::push::{github_payload, secrets_match};
use axum::response::Response;
use axum::routing::post;
use http::HeaderMap;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::read_body;
use super::images::render;
use super::observe::DeliveryRequest;
use super::webhooks::{checked_delivery_id, verified_body};
use crate::deploy::Ignored;
use crate::deploy::image::{ImageAnnouncement, ImageReport, deploy_image};
use crate::store::DeliveryKey;
use crate::util::{now_unix, sha256_hex};

/// A registry notification is a few KiB.
pub const REGISTRY_BODY_LIMIT: usize = 1024 * 1024;

/// How long a notification's body is remembered (SPEC: a replay within 30 days deploys
/// nothing).
pub const BODY_RETENTION_SECS: i64 = 30 * 24 * 60 * 60;

pub fn routes() -> Router<AppState> {
    Router::new()
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
}

/// The path (and so the secret) is never logged nor echoed.
async fn dockerhub_webhook(request: DeliveryRequest, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    // Fail closed: no secret configured means no notification is believed.
    let stored = request
        .state
        .store
        .get_secret(&request.org, "dockerhub")
        .await?
        .ok_or_else(|| {
            ApiError::unauthorized(format!(
                "Refused: no dockerhub secret is configured for organization {} (its webhook secret, set with PUT /organization/{}/webhook-secrets/dockerhub).",
                request.org, request.org
            ))
        })?;
    let secret = request.path.raw("secret");
    if stored.secret.is_empty() || !secrets_match(secret.as_bytes(), stored.secret.as_bytes()) {
        return Err(ApiError::unauthorized(
            "The webhook URL does not carry this organization's dockerhub secret.",
        ));
    }
    let dry_run = request.query.dry_run()?;
    let bytes = read_body(&headers, body, REGISTRY_BODY_LIMIT).await?;
    let event = parse_dockerhub(&bytes).map_err(registry_error)?;
    registry_event(&request, event, &bytes, ImageSourceKind::DockerHub, dry_run).await
}

async fn dockerhub_without_secret() -> ApiError {
    ApiError::unauthorized(
        "The Docker Hub webhook URL ends with the organization's dockerhub secret: …/registry-webhooks/dockerhub/<secret>.",
    )
}

/// GitHub `package` / `registry_package` events.
async fn github_package_webhook(request: DeliveryRequest, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let DeliveryRequest { state, org, .. } = &request;
    let dry_run = request.query.dry_run()?;
    let bytes = verified_body(state, org, GitProvider::Github, &headers, body, REGISTRY_BODY_LIMIT).await?;
    // Replays are known by the body here, but the id is what the history shows: refused as
    // on the push route rather than dropped.
    checked_delivery_id(GitProvider::Github, &headers, &bytes)?;
    let mut events = headers.get_all("x-github-event").iter();
    let event = events.next();
    if events.next().is_some() {
        return Err(ApiError::invalid_field("X-GitHub-Event", "is given more than once"));
    }
    let event = event
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        // A header, not the body, as on the git push route.
        .ok_or_else(|| {
            ApiError::invalid_field(
                "X-GitHub-Event",
                "is missing, so the kind of event cannot be told (GitHub sends it with every delivery)",
            )
        })?;
    let source = ImageSourceKind::GithubPackages;
    if event == "ping" {
        let report = ImageReport::ignored(
            source,
            dry_run,
            Ignored::Ping,
            "A ping: GitHub is checking the webhook.",
        );
        return Ok(render(report));
    }
    // GitHub may send a form whose `payload` field holds the JSON; the signature covered the
    // form as sent.
    let json = github_payload(&headers, &bytes)
        .map_err(|e| ApiError::malformed(format!("The body is not a package event: {e}.")))?;
    let parsed = parse_github_package(event, json.as_bytes()).map_err(registry_error)?;
    registry_event(&request, parsed, &bytes, source, dry_run).await
}

fn registry_error(err: RegistryEventError) -> ApiError {
    // The messages describe the shape or the rule, never a secret.
    ApiError::malformed(err.to_string())
}

/// A parsed registry notification: ignored, a replay, or matched against the services on that
/// registry.
async fn registry_event(
    request: &DeliveryRequest,
    event: RegistryEvent,
    body: &[u8],
    source: ImageSourceKind,
    dry_run: bool,
) -> ApiResult<Response> {
    let ImagePushed {
        registry,
        path,
        tag,
        source,
    } = match event {
        RegistryEvent::Ignored { reason, image } => {
            return Ok(render(ImageReport::ignored_notification(
                source, dry_run, reason, image,
            )));
        }
        RegistryEvent::Pushed(pushed) => pushed,
    };
    let DeliveryRequest { state, org, .. } = request;
    // The body, content-addressed: registry notifications carry their own timestamps, so the
    // same bytes again are a replay, never a new event.
    let body_key = DeliveryKey {
        source: format!(
            "{}-body",
            crate::deploy::image::source_name(source).to_ascii_lowercase()
        ),
        id: sha256_hex(body),
        expires_unix: now_unix() + BODY_RETENTION_SECS,
    };
    if state
        .store
        .delivery_seen(org, &body_key.source, &body_key.id, now_unix())
        .await?
    {
        // What it announced, for the history: which image's notification came again.
        let report = ImageReport::replayed(source, dry_run).naming(registry, path, Some(tag));
        return Ok(render(report));
    }
    // With its host, the name matches only services on that registry.
    let image = ImageName {
        registry: Some(registry),
        path,
    };
    let report = deploy_image(
        &state.deployer,
        ImageAnnouncement {
            org,
            target: ImageTarget::Registry,
            image: &image,
            tag: &tag,
            source,
            dry_run,
            remember: Some(body_key),
            history: request.history(),
        },
    )
    .await?;
    Ok(render(report))
}
