//! `POST /organization/{org}/webhooks/{provider}`: git push webhooks, verified, matched,
//! restricted and queued exactly once.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};

use autodeploy_core::deployment::{DeploymentRequest, SCHEMA, Trigger};
use autodeploy_core::matching::{SkipReason, decide_push, push_mark};
use autodeploy_core::provider::GitProvider;
use autodeploy_core::push::{Delivery, Push, delivery_id, parse_delivery, verify_signature};
use autodeploy_core::repo_url::normalize_repository_url;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, StatusCode};
use serde::Serialize;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{PathParams, query_map, read_body};
use crate::metrics::Tally;
use crate::pipeline::{Candidate, Outcome};
use crate::store::{DeliveryRef, Guard, StoredService};
use crate::util::{new_deployment_id, now_rfc3339, now_unix};

/// GitHub's own cap on webhook payloads; other providers send less.
pub const WEBHOOK_BODY_LIMIT: usize = 25 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/organization/{org}/webhooks/{provider}", post(push_webhook))
        .route_layer(axum::middleware::from_fn(crate::metrics::observe_push))
}

/// A deployment queued (or, in a dry run, that would be).
#[derive(Debug, Serialize)]
pub struct QueuedEntry {
    pub service_id: String,
    pub deployment_id: Option<String>,
    pub branch: String,
    pub commit_sha: String,
    pub status: &'static str,
}

#[derive(Debug, Serialize)]
pub struct SkippedEntry {
    pub service_id: String,
    pub reason: SkipReason,
    pub branch: String,
}

/// SPEC's push response.
#[derive(Debug, Serialize)]
pub struct PushResponse {
    pub delivery_id: Option<String>,
    pub provider: GitProvider,
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub commit_sha: Option<String>,
    pub files: Option<&'static str>,
    pub queued: Vec<QueuedEntry>,
    pub skipped: Vec<SkippedEntry>,
    pub ignored: Option<&'static str>,
    pub dry_run: bool,
}

impl PushResponse {
    fn new(provider: GitProvider, delivery_id: Option<String>, dry_run: bool) -> Self {
        Self {
            delivery_id,
            provider,
            repository: None,
            branch: None,
            commit_sha: None,
            files: None,
            queued: Vec::new(),
            skipped: Vec::new(),
            ignored: None,
            dry_run,
        }
    }

    fn ignored(mut self, reason: &'static str) -> Response {
        self.ignored = Some(reason);
        self.into_http(StatusCode::OK)
    }

    /// The HTTP response, carrying its [`Tally`] for the metrics layer.
    fn into_http(self, status: StatusCode) -> Response {
        let tally = Tally {
            ignored: self.ignored,
            delivery_id: self.delivery_id.clone(),
            dry_run: self.dry_run,
            ..Tally::of(self.queued.iter().map(|q| q.status), self.skipped.len())
        };
        let mut response = (status, Json(self)).into_response();
        response.extensions_mut().insert(tally);
        response
    }
}

/// `?dry_run=true` (or `1`).
pub fn dry_run(query: Option<&str>) -> bool {
    query_map(query)
        .get("dry_run")
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

async fn push_webhook(
    State(state): State<AppState>,
    path: PathParams,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let org = path.id("org", "organization_id")?;
    let provider = GitProvider::from_slug(path.raw("provider")).ok_or_else(|| {
        let known: Vec<_> = GitProvider::ALL.iter().map(|p| p.slug()).collect();
        ApiError::not_found(format!("Unknown git provider; use one of {}.", known.join(", ")))
    })?;
    let dry_run = dry_run(query.as_deref());
    let bytes = read_body(&headers, body, WEBHOOK_BODY_LIMIT).await?;

    // Fail closed: no secret configured means no delivery is believed.
    let secret = state.store.get_secret(org, provider.slug()).await?.ok_or_else(|| {
        ApiError::unauthorized(format!(
            "No {} webhook secret is configured for this organization, so deliveries are refused.",
            provider.slug()
        ))
    })?;
    verify_signature(provider, &headers, &bytes, secret.secret.as_bytes())
        .map_err(|e| ApiError::unauthorized(format!("The delivery could not be verified: {e}.")))?;

    let delivery = delivery_id(provider, &headers, &bytes);
    let response = PushResponse::new(provider, delivery.clone(), dry_run);
    if let Some(id) = &delivery
        && state.store.delivery_seen(org, provider.slug(), id, now_unix()).await?
    {
        return Ok(response.ignored("DUPLICATE_DELIVERY"));
    }
    let pushes = match parse_delivery(provider, &headers, &bytes) {
        Ok(Delivery::Pushes(pushes)) => pushes,
        Ok(Delivery::Ignored(reason)) => return Ok(response.ignored(reason.as_str())),
        Err(err) => return Err(ApiError::malformed(format!("The body is not a push delivery: {err}."))),
    };

    let (status, response) = process_pushes(&state, org, provider, delivery.as_deref(), &pushes, response).await?;
    tracing::info!(
        org,
        provider = provider.slug(),
        delivery_id = delivery.as_deref().unwrap_or(""),
        queued = response.queued.len(),
        skipped = response.skipped.len(),
        dry_run,
        "push delivery"
    );
    Ok(response.into_http(status))
}

/// The repository keys a push can match: every URL it carries, normalized, in the payload's
/// order, each once.
fn repository_keys(push: &Push) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for key in push
        .repository_urls
        .iter()
        .filter_map(|u| normalize_repository_url(u).ok())
    {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// The repository a push is reported under: the first key that services follow, else the
/// first the payload names.
fn display_repository(keys: &[String], by_key: &HashMap<String, Vec<StoredService>>) -> String {
    keys.iter()
        .find(|k| by_key.get(*k).is_some_and(|s| !s.is_empty()))
        .or(keys.first())
        .cloned()
        .unwrap_or_default()
}

/// Match every push of a delivery, record and send, and build the response.
async fn process_pushes(
    state: &AppState,
    org: &str,
    provider: GitProvider,
    delivery: Option<&str>,
    pushes: &[Push],
    mut response: PushResponse,
) -> ApiResult<(StatusCode, PushResponse)> {
    // One index query per distinct repository key of the whole delivery.
    let mut by_key: HashMap<String, Vec<StoredService>> = HashMap::new();
    for push in pushes {
        for key in repository_keys(push) {
            if let Entry::Vacant(slot) = by_key.entry(key) {
                let services = state.store.services_by_repository(org, slot.key()).await?;
                slot.insert(services);
            }
        }
    }

    if let Some(first) = pushes.first() {
        response.repository = Some(display_repository(&repository_keys(first), &by_key));
        response.branch = Some(first.branch.clone());
        response.commit_sha = Some(first.after.clone());
        response.files = Some(if first.files.is_known() { "KNOWN" } else { "UNKNOWN" });
    }

    let requested_at = now_rfc3339();
    let mut candidates = Vec::new();
    for push in pushes {
        let keys = repository_keys(push);
        let repository = display_repository(&keys, &by_key);
        let mut seen = BTreeSet::new();
        let services = keys
            .iter()
            .filter_map(|k| by_key.get(k))
            .flatten()
            .filter(|s| seen.insert(s.service.id.clone()));
        let mark = push_mark(push);
        for stored in services {
            let service = &stored.service;
            match decide_push(service, push) {
                None => {}
                Some(Err(reason)) => response.skipped.push(SkippedEntry {
                    service_id: service.id.clone(),
                    reason,
                    branch: push.branch.clone(),
                }),
                Some(Ok(())) if response.dry_run => {
                    if stored.last_push.as_deref() == Some(mark.as_str()) {
                        response.skipped.push(SkippedEntry {
                            service_id: service.id.clone(),
                            reason: SkipReason::AlreadyQueued,
                            branch: push.branch.clone(),
                        });
                    } else {
                        response.queued.push(QueuedEntry {
                            service_id: service.id.clone(),
                            deployment_id: None,
                            branch: push.branch.clone(),
                            commit_sha: push.after.clone(),
                            status: "DRY_RUN",
                        });
                    }
                }
                Some(Ok(())) => candidates.push(Candidate {
                    request: DeploymentRequest {
                        schema: SCHEMA.to_owned(),
                        deployment_id: new_deployment_id(),
                        organization_id: org.to_owned(),
                        environment_id: service.spec.environment_id.clone(),
                        service_id: service.id.clone(),
                        service_kind: service.spec.kind,
                        git_commit_id: Some(push.after.clone()),
                        image_tag: None,
                        trigger: Trigger::GitPush {
                            provider,
                            repository: repository.clone(),
                            branch: push.branch.clone(),
                            before: push.before.clone(),
                            commit_sha: push.after.clone(),
                            delivery_id: delivery.map(str::to_owned),
                            pusher: push.pusher.clone(),
                        },
                        requested_at: requested_at.clone(),
                    },
                    guard: Guard::Push {
                        mark: mark.clone(),
                        delivery: delivery.map(|id| DeliveryRef {
                            provider: provider.slug().to_owned(),
                            id: id.to_owned(),
                            expires_unix: now_unix() + crate::DELIVERY_RETENTION_SECS,
                        }),
                    },
                }),
            }
        }
    }
    if response.dry_run {
        return Ok((StatusCode::OK, response));
    }

    let outcomes = state.record_and_send(&candidates).await;
    let mut failure = None;
    for (candidate, outcome) in candidates.iter().zip(outcomes) {
        let request = &candidate.request;
        let (branch, commit_sha) = match &request.trigger {
            Trigger::GitPush { branch, commit_sha, .. } => (branch.clone(), commit_sha.clone()),
            Trigger::ImageTag { .. } => continue,
        };
        match outcome {
            Outcome::Recorded(status) => response.queued.push(QueuedEntry {
                service_id: request.service_id.clone(),
                deployment_id: Some(request.deployment_id.clone()),
                branch,
                commit_sha,
                status: status.as_str(),
            }),
            Outcome::GuardFailed => response.skipped.push(SkippedEntry {
                service_id: request.service_id.clone(),
                reason: SkipReason::AlreadyQueued,
                branch,
            }),
            Outcome::Failed(err) => failure = Some(err),
        }
    }
    if let Some(err) = failure {
        // Services whose record failed have nothing written; those recorded are sent or
        // pending. The delivery id is not remembered, so a redelivery completes the rest and
        // finds the others ALREADY_QUEUED.
        return Err(err.into());
    }
    if let Some(id) = delivery
        && let Err(err) = state
            .store
            .remember_delivery(org, provider.slug(), id, now_unix() + crate::DELIVERY_RETENTION_SECS)
            .await
    {
        // Harmless: a redelivery is still caught per service, by the delivery recorded with
        // each deployment.
        tracing::warn!(error = %err, "delivery id could not be remembered");
    }
    let status = if response.queued.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, response))
}
