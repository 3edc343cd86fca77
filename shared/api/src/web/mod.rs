//! The HTTP API as one axum router, shared by the standalone server and the Lambda functions
//! (`lambda_http::run` serves an axum `Router` as it is).

pub mod auth;
pub mod error;
pub mod extract;
pub mod images;
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
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, queue: Arc<dyn DeploymentQueue>, admin: Arc<dyn AdminTokenSource>) -> Self {
        Self { store, queue, admin }
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

/// Every route of the product (the standalone server).
pub fn full_router(state: AppState) -> Router {
    finish(
        settings::routes().merge(webhooks::routes()).merge(images::routes()),
        state,
    )
}
