//! The layer of every delivery route (git webhooks, image tags, registry webhooks): it opens
//! the delivery's [`DeliveryContext`] before the handler runs and, once it has answered,
//! finishes the delivery in one place — the history record, the log line, the metrics line —
//! whatever the outcome, refusals included.

use std::sync::Arc;

use autodeploy_core::delivery::DeliverySource;
use autodeploy_core::ids::is_valid_id;
use autodeploy_core::provider::GitProvider;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::request::Parts;

use super::AppState;
use super::error::{ApiError, ErrorReason};
use super::extract::{Org, PathParams, QueryParams};
use crate::deploy::history::{DeliveryContext, DeliverySummary, finish};
use crate::metrics::{DeliveryLine, Endpoint, Tally, emit, image_source, request_ids};

/// What a delivery route's handler starts from: the state, the organization and the rest of
/// the path, the query, and the delivery's account the layer opened (none without the layer).
pub struct DeliveryRequest {
    pub state: AppState,
    pub org: String,
    pub path: PathParams,
    pub query: QueryParams,
    context: Option<Arc<DeliveryContext>>,
}

impl DeliveryRequest {
    /// The delivery's account, for the use case to record with its deployments.
    pub fn history(&self) -> Option<&DeliveryContext> {
        self.context.as_deref()
    }
}

impl FromRequestParts<AppState> for DeliveryRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let context = parts.extensions.get::<Arc<DeliveryContext>>().cloned();
        let Org(org) = Org::from_request_parts(parts, state).await?;
        Ok(Self {
            state: state.clone(),
            org,
            path: PathParams::from_request_parts(parts, state).await?,
            query: QueryParams::parse(parts.uri.query()),
            context,
        })
    }
}

/// The layer of the push router.
pub async fn observe_push(State(state): State<AppState>, request: Request, next: Next) -> Response {
    observe(state, Endpoint::Push, request, next).await
}

/// The layer of the image router.
pub async fn observe_image(State(state): State<AppState>, request: Request, next: Next) -> Response {
    observe(state, Endpoint::Image, request, next).await
}

/// Who sent a request to `route` (`None` when the path names no known source).
fn source_of_route(endpoint: Endpoint, route: &str, segments: &[&str]) -> Option<DeliverySource> {
    match endpoint {
        Endpoint::Push => segments
            .get(4)
            .and_then(|slug| GitProvider::from_slug(slug))
            .map(DeliverySource::Git),
        Endpoint::Image => match image_source(route)? {
            "API" if route.ends_with("/job/deploy") => Some(DeliverySource::JobApi),
            "API" => Some(DeliverySource::ContainerApi),
            "DOCKER_HUB" => Some(DeliverySource::Dockerhub),
            "GITHUB_PACKAGES" => Some(DeliverySource::GithubPackages),
            _ => None,
        },
    }
}

async fn observe(state: AppState, endpoint: Endpoint, mut request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let segments: Vec<&str> = request.uri().path().split('/').collect();
    // /organization/{org}/…
    let organization = segments
        .get(2)
        .filter(|org| is_valid_id(org))
        .map(|org| (*org).to_owned());
    let source = source_of_route(endpoint, &route, &segments);
    // What the handler will say, known before it runs, for the deliveries it refuses.
    // Header-borne ids only: the body is the handler's.
    let delivery_id = match (endpoint, segments.get(4).and_then(|slug| GitProvider::from_slug(slug))) {
        (Endpoint::Push, Some(provider)) => autodeploy_core::push::delivery_id(provider, request.headers(), &[])
            .ok()
            .flatten(),
        // GitHub Packages events come with GitHub's own delivery header.
        (Endpoint::Image, _) if source == Some(DeliverySource::GithubPackages) => {
            autodeploy_core::push::delivery_id(GitProvider::Github, request.headers(), &[])
                .ok()
                .flatten()
        }
        _ => None,
    };
    // A malformed flag is refused by the handler (and recorded as rejected).
    let dry_run = QueryParams::parse(request.uri().query()).dry_run().unwrap_or(false);
    let (request_id, api_request_id) = request_ids(&request);
    let context = match (&organization, source) {
        (Some(org), Some(source)) => {
            let context = Arc::new(DeliveryContext::new(org, source, delivery_id.clone(), dry_run));
            request.extensions_mut().insert(Arc::clone(&context));
            Some(context)
        }
        _ => None,
    };

    let mut response = next.run(request).await;

    let status = response.status().as_u16();
    // Taken out: the client is not sent a response's extensions.
    let summary = match response.extensions_mut().remove::<DeliverySummary>() {
        Some(summary) => summary,
        None => {
            let reason = response.extensions().get::<ErrorReason>().map_or("", |r| r.0.as_str());
            DeliverySummary::refused(status, reason)
        }
    };
    match &context {
        Some(context) => finish(state.store.as_ref(), context, &summary, status).await,
        None => tracing::warn!(
            endpoint = endpoint.as_str(),
            // The organization named, when it is a valid name: whose webhook to fix.
            org = organization.as_deref(),
            route,
            status,
            reason = %summary.reason,
            "delivery to no known organization or source"
        ),
    }

    let mut tally = response.extensions_mut().remove::<Tally>().unwrap_or_default();
    tally.delivery_id = tally.delivery_id.or(delivery_id);
    tally.source = tally.source.or_else(|| match endpoint {
        Endpoint::Push => source.map(|s| s.as_str().to_owned()),
        Endpoint::Image => image_source(&route).map(str::to_owned),
    });
    let line = DeliveryLine {
        endpoint,
        organization: organization.as_deref(),
        source: tally.source.as_deref(),
        route: &route,
        status,
        tally: &tally,
        request_id: request_id.as_deref(),
        api_request_id: api_request_id.as_deref(),
    };
    if !(dry_run || tally.dry_run) {
        emit(&line);
    }
    response
}
