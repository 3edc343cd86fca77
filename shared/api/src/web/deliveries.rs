//! `…/deliveries`: every request that reached the organization's webhook, registry-webhook
//! or image-tag routes, newest first, with what became of it and why.

use std::convert::identity;

use autodeploy_core::ids::is_valid_deployment_id;
use axum::Json;
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::auth::Manage;
use super::error::{ApiError, ApiResult};
use super::extract::{NoQuery, PathParams, QueryParams};
use super::list::ListParams;
use crate::store::DeliveryFilter;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/organization/{org}/deliveries", get(list_deliveries))
        .route("/organization/{org}/deliveries/{delivery_id}", get(get_delivery))
}

/// `?source=&outcome=`, each checked.
fn filter(query: &QueryParams) -> ApiResult<DeliveryFilter> {
    Ok(DeliveryFilter {
        source: query.one_of("source")?,
        outcome: query.one_of("outcome")?,
    })
}

async fn list_deliveries(Manage { state, org, .. }: Manage, query: QueryParams) -> ApiResult<Response> {
    let filter = filter(&query)?;
    let scope = format!(
        "deliveries?source={}&outcome={}",
        filter.source.map_or("", |s| s.as_str()),
        filter.outcome.map_or("", |o| o.as_str())
    );
    let list = ListParams::parse(&query, &org, &scope, &["source", "outcome"])?;
    let page = state.store.list_deliveries(&org, &list.query(filter)).await?;
    Ok(list.answer(page, identity))
}

async fn get_delivery(Manage { state, org, .. }: Manage, _: NoQuery, path: PathParams) -> ApiResult<Response> {
    let id = path.raw("delivery_id");
    let not_found = || ApiError::not_found("There is no delivery with that id in this organization's history.");
    if !is_valid_deployment_id(id) {
        return Err(not_found());
    }
    let record = state.store.get_delivery(&org, id).await?.ok_or_else(not_found)?;
    Ok(Json(record).into_response())
}
