//! The HTTP API as one axum router, shared by the standalone server and the Lambda functions
//! (`lambda_http::run` serves an axum `Router` as it is).

pub mod auth;
pub mod error;
pub mod extract;
pub mod images;
pub mod limits;
pub mod settings;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::StatusCode;

use crate::admin::AdminTokenSource;
use crate::store::{DeploymentQueue, Store};
use error::ApiError;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn DeploymentQueue>,
    pub admin: Arc<dyn AdminTokenSource>,
    /// See [`crate::pipeline::IN_FLIGHT_HORIZON`].
    pub in_flight_horizon: std::time::Duration,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, queue: Arc<dyn DeploymentQueue>, admin: Arc<dyn AdminTokenSource>) -> Self {
        Self {
            store,
            queue,
            admin,
            in_flight_horizon: crate::pipeline::IN_FLIGHT_HORIZON,
        }
    }

    /// Record and send a request's deployments ([`crate::pipeline::record_and_send`]).
    pub async fn record_and_send(&self, candidates: &[crate::pipeline::Candidate]) -> Vec<crate::pipeline::Outcome> {
        crate::pipeline::record_and_send(
            self.store.as_ref(),
            self.queue.as_ref(),
            candidates,
            self.in_flight_horizon,
        )
        .await
    }

    /// The same state with another horizon than [`crate::pipeline::IN_FLIGHT_HORIZON`]
    /// (tests, which cannot wait for a deployment to be stranded for 15 s).
    pub fn with_in_flight_horizon(mut self, horizon: std::time::Duration) -> Self {
        self.in_flight_horizon = horizon;
        self
    }
}

/// `GET /health`: 200 when the store answers.
async fn health(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    state.store.ping().await?;
    Ok((StatusCode::OK, axum::Json(serde_json::json!({"status": "ok"}))))
}

async fn not_found() -> ApiError {
    ApiError::not_found("No such route. See the API reference for the paths this server serves.")
}

/// Routes every binary serves, whatever else it serves: health, and SPEC-shaped 404 / 405.
fn finish(router: Router<AppState>, state: AppState) -> Router {
    router
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
}

/// The settings API (the `settings` Lambda function).
pub fn settings_router(state: AppState) -> Router {
    finish(settings::routes(), state)
}

/// The git push webhooks (the `push-webhook` Lambda function).
pub fn push_router(state: AppState) -> Router {
    finish(webhooks::routes(), state)
}

/// The image-tag endpoints and registry webhooks (the `image-tag` Lambda function).
pub fn image_router(state: AppState) -> Router {
    finish(images::routes(), state)
}

/// Every route of the product (the standalone server), and its OpenAPI document.
pub fn full_router(state: AppState) -> Router {
    finish(
        settings::routes()
            .merge(webhooks::routes())
            .merge(images::routes())
            .route("/openapi.yaml", get(openapi)),
        state,
    )
}

/// The API reference, `infra/openapi.yaml`, as built into the binary.
pub const OPENAPI_YAML: &str = include_str!("../../../../infra/openapi.yaml");

/// `GET /openapi.yaml` (standalone server only; on AWS the document ships in `infra/`).
async fn openapi() -> impl IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML)
}

/// Every route of the HTTP API: `(method, path, who serves it)`, where who is the Lambda
/// function (`settings`, `push-webhook`, `image-tag`) whose router serves it, or `standalone`
/// for a route only the standalone server has. The standalone server serves them all, and
/// `/health` is served by every router. `infra/template.yaml` (its `HttpApi` events) and
/// `infra/openapi.yaml` (its `paths`) list exactly these; `tests/tests/routes.rs` checks both,
/// and that the routers serve exactly these: a route added to a router but not here fails it.
#[rustfmt::skip]
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/health", "settings"),
    ("GET", "/organization/{org}/services", "settings"),
    ("GET", "/organization/{org}/services/{service_id}", "settings"),
    ("PUT", "/organization/{org}/services/{service_id}", "settings"),
    ("PATCH", "/organization/{org}/services/{service_id}", "settings"),
    ("DELETE", "/organization/{org}/services/{service_id}", "settings"),
    ("GET", "/organization/{org}/webhook-secrets/{provider}", "settings"),
    ("PUT", "/organization/{org}/webhook-secrets/{provider}", "settings"),
    ("DELETE", "/organization/{org}/webhook-secrets/{provider}", "settings"),
    ("GET", "/organization/{org}/tokens", "settings"),
    ("POST", "/organization/{org}/tokens", "settings"),
    ("DELETE", "/organization/{org}/tokens/{token_id}", "settings"),
    ("GET", "/organization/{org}/deployments", "settings"),
    ("POST", "/organization/{org}/webhooks/{provider}", "push-webhook"),
    ("POST", "/organization/{org}/container/deploy", "image-tag"),
    ("POST", "/organization/{org}/job/deploy", "image-tag"),
    ("POST", "/organization/{org}/registry-webhooks/dockerhub/{secret}", "image-tag"),
    ("POST", "/organization/{org}/registry-webhooks/dockerhub", "image-tag"),
    ("POST", "/organization/{org}/registry-webhooks/github", "image-tag"),
    ("GET", "/openapi.yaml", "standalone"),
];
