//! `…/deliveries`: every request that reached the organization's webhook, registry-webhook
//! or image-tag routes, newest first, with what became of it and why.

use autodeploy_core::delivery::{DeliveryOutcome, DeliverySource};
use autodeploy_core::ids::is_valid_deployment_id;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::auth::{Caller, Scope};
use super::error::{ApiError, ApiResult};
use super::extract::{ListParams, Org, PathParams, QueryParams, encode_cursor};
use super::{AppState, ListBody};
use crate::store::DeliveryFilter;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/organization/{org}/deliveries", get(list_deliveries))
        .route("/organization/{org}/deliveries/{delivery_id}", get(get_delivery))
}

/// `?source=&outcome=`, each checked.
fn filter(query: &QueryParams) -> ApiResult<DeliveryFilter> {
    let source = match query.get("source").filter(|s| !s.is_empty()) {
        Some(raw) => Some(DeliverySource::parse(raw).ok_or_else(|| {
            let all: Vec<&str> = DeliverySource::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::invalid_field("source", format!("must be one of {}", all.join(", ")))
        })?),
        None => None,
    };
    let outcome = match query.get("outcome").filter(|s| !s.is_empty()) {
        Some(raw) => Some(DeliveryOutcome::parse(raw).ok_or_else(|| {
            let all: Vec<&str> = DeliveryOutcome::ALL.iter().map(|o| o.as_str()).collect();
            ApiError::invalid_field("outcome", format!("must be one of {}", all.join(", ")))
        })?),
        None => None,
    };
    Ok(DeliveryFilter { source, outcome })
}

async fn list_deliveries(
    caller: Caller,
    State(state): State<AppState>,
    Org(org): Org,
    query: QueryParams,
) -> ApiResult<Response> {
    caller.authorize(&org, Scope::Manage)?;
    let filter = filter(&query)?;
    let scope = format!(
        "deliveries?source={}&outcome={}",
        filter.source.map_or("", |s| s.as_str()),
        filter.outcome.map_or("", |o| o.as_str())
    );
    let params = ListParams::parse(&query, &org, &scope)?;
    let page = state
        .store
        .list_deliveries(&org, &filter, params.after.as_deref(), params.limit)
        .await?;
    Ok(ListBody {
        next_cursor: page.last_key.map(|k| encode_cursor(&org, &scope, &k)),
        items: page.items,
    }
    .into_response())
}

async fn get_delivery(
    caller: Caller,
    State(state): State<AppState>,
    Org(org): Org,
    path: PathParams,
) -> ApiResult<Response> {
    caller.authorize(&org, Scope::Manage)?;
    let id = path.raw("delivery_id");
    let not_found = || ApiError::not_found("There is no delivery with that id in this organization's history.");
    if !is_valid_deployment_id(id) {
        return Err(not_found());
    }
    let record = state.store.get_delivery(&org, id).await?.ok_or_else(not_found)?;
    Ok(Json(record).into_response())
}
