//! `…/deployments`: the deployment log — what was queued, and where each deployment stands —
//! and a finished deployment made again (`…/redeploy`).

use std::convert::identity;

use autodeploy_core::deployment::DeploymentStatus;
use autodeploy_core::ids::is_valid_deployment_id;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;

use super::AppState;
use super::auth::{Caller, Manage, Scope};
use super::error::{ApiError, ApiResult};
use super::extract::{NoQuery, Org, PathParams, QueryParams, SETTINGS_BODY_LIMIT, check_id, read_body};
use super::list::ListParams;
use crate::deploy::redeploy::redeploy;
use crate::store::{DeploymentFilter, Refusal};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/organization/{org}/deployments", get(list_deployments))
        .route("/organization/{org}/deployments/{deployment_id}", get(get_deployment))
        .route(
            "/organization/{org}/deployments/{deployment_id}/redeploy",
            post(redeploy_deployment),
        )
}

/// `?service_id=&status=`, each checked.
fn filter(query: &QueryParams) -> ApiResult<DeploymentFilter> {
    let service_id = match query.get("service_id")?.filter(|s| !s.is_empty()) {
        Some(id) => {
            check_id("service_id", id)?;
            Some(id.to_owned())
        }
        None => None,
    };
    let status = query.one_of("status")?;
    Ok(DeploymentFilter { service_id, status })
}

async fn list_deployments(Manage { state, org, .. }: Manage, query: QueryParams) -> ApiResult<Response> {
    let filter = filter(&query)?;
    let scope = format!(
        "deployments?service_id={}&status={}",
        filter.service_id.as_deref().unwrap_or(""),
        filter.status.map(DeploymentStatus::as_str).unwrap_or("")
    );
    let list = ListParams::parse(&query, &org, &scope, &["service_id", "status"])?;
    let page = state.store.list_deployments(&org, &list.query(filter)).await?;
    Ok(list.answer(page, identity))
}

/// The deployment id of the path; an id that cannot exist is a 404 like any unknown one.
pub fn deployment_id(path: &PathParams) -> ApiResult<&str> {
    let id = path.raw("deployment_id");
    if is_valid_deployment_id(id) {
        Ok(id)
    } else {
        Err(deployment_not_found(id))
    }
}

/// A store's refusal about deployment `id`: 404, or 409 with its sentence.
pub fn refused(refusal: Refusal, id: &str) -> ApiError {
    match refusal {
        Refusal::NotFound => deployment_not_found(id),
        Refusal::Conflict(message) => ApiError::conflict(message),
    }
}

pub fn deployment_not_found(id: &str) -> ApiError {
    let shown = if is_valid_deployment_id(id) { id } else { "with that id" };
    ApiError::not_found(format!("There is no deployment {shown} in this organization."))
}

async fn get_deployment(
    caller: Caller,
    State(state): State<AppState>,
    Org(org): Org,
    path: PathParams,
    query: QueryParams,
) -> ApiResult<Response> {
    caller.authorize_any(&org, &[Scope::Manage, Scope::Consume])?;
    query.only(&[])?;
    let id = deployment_id(&path)?;
    let record = state
        .store
        .get_deployment(&org, id)
        .await?
        .ok_or_else(|| deployment_not_found(id))?;
    Ok(Json(record).into_response())
}

/// `POST …/deployments/{deployment_id}/redeploy`: the deployment made again, as a new one of
/// its service (202, with it; `Location` names it). It takes no body: one that seems to ask for
/// another commit or tag must not be answered with the old one.
async fn redeploy_deployment(
    Manage { state, org, .. }: Manage,
    _: NoQuery,
    path: PathParams,
    headers: http::HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let id = deployment_id(&path)?;
    // Read as the settings bodies are, so that a large one is the same 413 in the API's shape.
    if !read_body(&headers, body, SETTINGS_BODY_LIMIT).await?.is_empty() {
        return Err(ApiError::malformed(
            "This route takes no body: the deployment is made again as it was. A new commit or tag comes from a push or the image-tag endpoints.",
        ));
    }
    let record = redeploy(&state.deployer, &org, id)
        .await?
        .map_err(|refusal| refused(refusal, id))?;
    tracing::info!(
        org = %org,
        service_id = %record.request.service_id,
        deployment_id = %record.request.deployment_id,
        made_again = id,
        status = record.status.as_str(),
        "deployment made again"
    );
    let location = format!("/organization/{org}/deployments/{}", record.request.deployment_id);
    Ok((StatusCode::ACCEPTED, [(http::header::LOCATION, location)], Json(record)).into_response())
}
