//! The HTTP API as one axum router, shared by the standalone server and the Lambda functions
//! (`lambda_http::run` serves an axum `Router` as it is). Handlers extract, call a use case or
//! the store, and render; the rules live in `autodeploy-core` and [`crate::deploy`].

pub mod auth;
pub mod consumers;
pub mod credentials;
pub mod deliveries;
pub mod deployments;
pub mod error;
pub mod extract;
pub mod images;
pub mod limits;
pub mod list;
pub mod observe;
pub mod precondition;
pub mod registry;
pub mod services;
pub mod targets;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::StatusCode;

use crate::admin::AdminTokenSource;
use crate::deploy::Deployer;
use crate::deploy::consume::{Draining, WaitingPolls};
use crate::store::{DeploymentQueue, PullQueue, Store, TenantLimits};
use error::ApiError;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub admin: Arc<dyn AdminTokenSource>,
    pub deployer: Deployer,
    /// The pull interface, where the store has one (the standalone server's SQLite).
    pub pull: Option<Arc<dyn PullQueue>>,
    pub limits: TenantLimits,
    /// `AUTODEPLOY_TARGETS_ALLOW_PRIVATE`: deploy targets may be private or plain http.
    pub allow_private_targets: bool,
    /// Begun when the server shuts down (long polls answer at once).
    pub draining: Arc<Draining>,
    /// The long polls waiting at once, bounded.
    pub waiting_polls: Arc<WaitingPolls>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, queue: Arc<dyn DeploymentQueue>, admin: Arc<dyn AdminTokenSource>) -> Self {
        Self {
            deployer: Deployer {
                store: Arc::clone(&store),
                queue,
                in_flight_horizon: crate::pipeline::IN_FLIGHT_HORIZON,
                turns: Arc::default(),
            },
            store,
            admin,
            pull: None,
            limits: TenantLimits::default(),
            allow_private_targets: false,
            draining: Arc::default(),
            waiting_polls: Arc::default(),
        }
    }

    /// The same state, with at most `total` long polls waiting at once over the server (and
    /// [`crate::deploy::consume::WAITING_POLLS_PER_ORGANIZATION`] per organization).
    pub fn with_waiting_polls(mut self, total: usize) -> Self {
        self.waiting_polls = Arc::new(WaitingPolls::new(
            crate::deploy::consume::WAITING_POLLS_PER_ORGANIZATION,
            total,
        ));
        self
    }

    /// The same state, allowing deploy targets on private addresses (and plain http).
    pub fn allowing_private_targets(mut self, allow: bool) -> Self {
        self.allow_private_targets = allow;
        self
    }

    /// The same state with other limits per organization.
    pub fn with_limits(mut self, limits: TenantLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The same state, serving pull consumers from `pull`.
    pub fn with_pull(mut self, pull: Arc<dyn PullQueue>) -> Self {
        self.pull = Some(pull);
        self
    }

    /// The same state with another horizon than [`crate::pipeline::IN_FLIGHT_HORIZON`]
    /// (tests, which cannot wait for a deployment to be stranded for 15 s).
    pub fn with_in_flight_horizon(mut self, horizon: std::time::Duration) -> Self {
        self.deployer.in_flight_horizon = horizon;
        self
    }
}

/// `GET /health`: 200 when the store answers.
async fn health(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    state.store.ping().await?;
    Ok((StatusCode::OK, axum::Json(serde_json::json!({"status": "ok"}))))
}

async fn not_found(uri: http::Uri) -> ApiError {
    // Routes never end in a slash: say so, rather than leave a copy-paste mistake a mystery.
    if uri.path().len() > 1 && uri.path().ends_with('/') {
        return ApiError::not_found("No such route: paths do not end with `/`; remove the trailing slash.");
    }
    ApiError::not_found(
        "No such route. The API reference lists the paths served: GET /openapi.yaml on the standalone server, infra/openapi.yaml in the source.",
    )
}

/// Routes every binary serves, whatever else it serves: health, and SPEC-shaped 404 / 405.
fn finish(router: Router<AppState>, state: AppState) -> Router {
    router
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
}

/// The settings API's routes (the `settings` Lambda function).
fn settings_routes() -> Router<AppState> {
    services::routes()
        .merge(credentials::routes())
        .merge(deployments::routes())
        .merge(deliveries::routes())
        .merge(targets::routes())
        .merge(consumers::result_routes())
}

/// The image-tag endpoints and registry webhooks (the `image-tag` Lambda function), each
/// delivery finished by the observing layer.
fn image_routes(state: &AppState) -> Router<AppState> {
    images::routes()
        .merge(registry::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe_image,
        ))
}

/// The git push webhooks (the `push-webhook` Lambda function), each delivery finished by the
/// observing layer.
fn push_routes(state: &AppState) -> Router<AppState> {
    webhooks::routes().route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        observe::observe_push,
    ))
}

/// The settings API (the `settings` Lambda function), which API Gateway also hands every
/// request no other route takes (it is the `$default` route).
pub fn settings_router(state: AppState) -> Router {
    finish(settings_routes().merge(elsewhere_on_aws()), state)
}

/// What reaches the settings function on AWS beside its own routes, answered as the standalone
/// server answers it: another function's path with a method it does not take is a 405, and a
/// route of the standalone server alone (the pull consumers', the document) a 404 — without
/// these, `POST …/deployments/lease` would be a 405 of `GET …/deployments/{deployment_id}`.
fn elsewhere_on_aws() -> Router<AppState> {
    ROUTES
        .iter()
        .fold(Router::new(), |router, &(method, path, function)| match function {
            "settings" => router,
            "standalone" => {
                let filter = http::Method::from_bytes(method.as_bytes())
                    .ok()
                    .and_then(|method| axum::routing::MethodFilter::try_from(method).ok());
                match filter {
                    Some(filter) => router.route(path, axum::routing::on(filter, not_found)),
                    None => router,
                }
            }
            "push-webhook" => router.route(path, axum::routing::any(webhooks::other_method)),
            _ => router.route(path, axum::routing::any(|| async { ApiError::method_not_allowed() })),
        })
}

/// The git push webhooks (the `push-webhook` Lambda function).
pub fn push_router(state: AppState) -> Router {
    finish(push_routes(&state), state)
}

/// The image-tag endpoints and registry webhooks (the `image-tag` Lambda function).
pub fn image_router(state: AppState) -> Router {
    finish(image_routes(&state), state)
}

/// Every route of the product (the standalone server), and its OpenAPI document.
pub fn full_router(state: AppState) -> Router {
    finish(
        settings_routes()
            .merge(consumers::pull_routes())
            .merge(push_routes(&state))
            .merge(image_routes(&state))
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
/// `infra/openapi.yaml` (its `paths`) list exactly these, and the routers serve exactly these:
/// the integration tests check all three.
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
    ("GET", "/organization/{org}/deployments/{deployment_id}", "settings"),
    ("POST", "/organization/{org}/deployments/{deployment_id}/result", "settings"),
    ("POST", "/organization/{org}/deployments/{deployment_id}/redeploy", "settings"),
    ("POST", "/organization/{org}/deployments/lease", "standalone"),
    ("POST", "/organization/{org}/deployments/{deployment_id}/ack", "standalone"),
    ("POST", "/organization/{org}/deployments/{deployment_id}/nack", "standalone"),
    ("POST", "/organization/{org}/deployments/{deployment_id}/extend", "standalone"),
    ("GET", "/organization/{org}/targets", "settings"),
    ("GET", "/organization/{org}/targets/{target_id}", "settings"),
    ("PUT", "/organization/{org}/targets/{target_id}", "settings"),
    ("DELETE", "/organization/{org}/targets/{target_id}", "settings"),
    ("GET", "/organization/{org}/deliveries", "settings"),
    ("GET", "/organization/{org}/deliveries/{delivery_id}", "settings"),
    ("POST", "/organization/{org}/webhooks/{provider}", "push-webhook"),
    ("POST", "/organization/{org}/container/deploy", "image-tag"),
    ("POST", "/organization/{org}/job/deploy", "image-tag"),
    ("POST", "/organization/{org}/registry-webhooks/dockerhub/{secret}", "image-tag"),
    ("POST", "/organization/{org}/registry-webhooks/dockerhub", "image-tag"),
    ("POST", "/organization/{org}/registry-webhooks/github", "image-tag"),
    ("GET", "/openapi.yaml", "standalone"),
];
