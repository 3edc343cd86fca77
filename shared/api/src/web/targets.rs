//! `…/targets`: where the dispatcher delivers deployments (a signed webhook, Qovery, GitHub
//! Actions). Secrets and tokens are write-only: a GET says only whether one is set; a webhook
//! secret the server generates is shown once, in the PUT's answer.

use autodeploy_core::body::{DocumentError, read_document};
use autodeploy_core::target::signature::GENERATED_SECRET_BYTES;
use autodeploy_core::target::{ResolveContext, TargetDocument, TargetView, missing_token};
use axum::Json;
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use rand::RngCore;
use serde::Serialize;

use super::AppState;
use super::auth::{Manage, ManageWrite, PathId};
use super::error::{ApiError, ApiResult};
use super::extract::{JsonValue, NoQuery, PathParams, QueryParams};
use super::list::ListParams;
use super::precondition::{Precondition, etag_header};
use crate::store::{Expected, Refusal, StoreError, StoredTarget};
use crate::util::{new_etag, now_rfc3339};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/organization/{org}/targets", get(list_targets))
        .route(
            "/organization/{org}/targets/{target_id}",
            get(get_target).put(put_target).delete(delete_target),
        )
}

/// A target as the API shows it.
#[derive(Serialize)]
struct TargetBody {
    id: String,
    organization_id: String,
    #[serde(flatten)]
    view: TargetView,
    version: u64,
    created_at: String,
    updated_at: String,
}

impl TargetBody {
    fn new(target: &StoredTarget, view: TargetView) -> Self {
        Self {
            id: target.id.clone(),
            organization_id: target.organization_id.clone(),
            view,
            version: target.version,
            created_at: target.created_at.clone(),
            updated_at: target.updated_at.clone(),
        }
    }
}

fn target_response(status: StatusCode, target: &StoredTarget, view: TargetView) -> Response {
    let mut response = (status, Json(TargetBody::new(target, view))).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag_header(&target.etag)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// The deploy target the path names.
struct TargetId(String);

impl PathId for TargetId {
    fn read(path: &PathParams) -> ApiResult<Self> {
        Ok(Self(path.id("target_id", "target_id")?.to_owned()))
    }
}

fn target_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("There is no deploy target {id} in this organization."))
}

async fn get_target(Manage { state, org, id, .. }: Manage<TargetId>, _: NoQuery) -> ApiResult<Response> {
    let target = state.store.get_target(&org, &id.0).await?;
    let target = target.ok_or_else(|| target_not_found(&id.0))?;
    Ok(target_response(StatusCode::OK, &target, target.spec.view()))
}

async fn list_targets(Manage { state, org, .. }: Manage, query: QueryParams) -> ApiResult<Response> {
    let list = ListParams::parse(&query, &org, "targets", &[])?;
    let page = state.store.list_targets(&org, list.page()).await?;
    Ok(list.answer(page, |t| TargetBody::new(&t, t.spec.view())))
}

/// Where the target may point: the operator's `AUTODEPLOY_TARGETS_ALLOW_PRIVATE`, and (with
/// the dispatcher's sender built in) the addresses its host name resolves to now.
async fn check_host_now(url: &str, allow_private: bool) -> ApiResult<()> {
    #[cfg(feature = "dispatch")]
    {
        let host = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned));
        if let Some(host) = host
            && crate::dispatch::send::check_host(&host, allow_private).await.is_err()
        {
            return Err(ApiError::invalid_field(
                "url",
                "names a host that resolves to a loopback, private, link-local or unspecified address; deploy targets must be public (AUTODEPLOY_TARGETS_ALLOW_PRIVATE lets an operator allow them)",
            ));
        }
    }
    let _ = (url, allow_private);
    Ok(())
}

async fn put_target(write: ManageWrite<TargetId, JsonValue>) -> ApiResult<Response> {
    let ManageWrite {
        request,
        body: JsonValue(doc),
        precondition,
    } = write;
    let Manage {
        state,
        org,
        id: TargetId(id),
        ..
    } = &request;
    let document: TargetDocument = match read_document(&doc) {
        Ok(document) => document,
        Err(DocumentError::Invalid(mut errors)) => {
            // Named with the others; what the target would keep is read for it.
            let current = state.store.get_target(org, id).await?;
            errors.extend(missing_token(&doc, current.as_ref().map(|c| &c.spec)));
            return Err(ApiError::validation(errors));
        }
        Err(err) => return Err(err.into()),
    };
    // PUTs of one target take turns in this process: each keeps what the one before it set
    // (a secret the server generated, say) instead of failing on its change.
    let _turn = state
        .deployer
        .turns
        .take(format!("target/{org}/{id}"))
        .await
        .map_err(|_| {
            ApiError::unavailable(
                "The deploy target is being changed by many requests at once; nothing was changed. Retry shortly.",
            )
        })?;
    let current = state.store.get_target(org, id).await?;
    precondition.check(current.as_ref().map(|c| c.etag.as_str()))?;
    if current.is_none() {
        // As many targets as services at most: a target no service could name is no use, and
        // a tenant's targets must not grow without bound. Counted before the write, so
        // creations at the same moment may pass it by as many.
        let limit = state.limits.services;
        if state.store.count_targets(org, limit).await? >= limit {
            return Err(ApiError::invalid_field(
                "target",
                format!(
                    "the organization holds {limit} deploy targets, its limit (AUTODEPLOY_MAX_SERVICES, as for services); delete one first"
                ),
            ));
        }
    }
    let mut random = [0u8; GENERATED_SECRET_BYTES];
    rand::rng().fill_bytes(&mut random);
    let resolved = document
        .resolve(&ResolveContext {
            organization_id: org,
            target_id: id,
            allow_private: state.allow_private_targets,
            previous: current.as_ref().map(|c| &c.spec),
            random: &random,
        })
        .map_err(ApiError::validation)?;
    let url = match &resolved.spec {
        autodeploy_core::target::Target::Webhook { url, .. } => url,
        autodeploy_core::target::Target::Qovery { api_url, .. }
        | autodeploy_core::target::Target::GithubActions { api_url, .. } => api_url,
    };
    check_host_now(url, state.allow_private_targets).await?;
    // A PUT that changes nothing changes nothing: same version, same ETag.
    if let Some(current) = current.as_ref().filter(|c| c.spec == resolved.spec) {
        return Ok(target_response(StatusCode::OK, current, resolved.view()));
    }
    let now = now_rfc3339();
    let target = StoredTarget {
        id: id.clone(),
        organization_id: org.clone(),
        spec: resolved.spec.clone(),
        etag: new_etag(),
        version: current.as_ref().map_or(1, |c| c.version + 1),
        created_at: current.as_ref().map_or_else(|| now.clone(), |c| c.created_at.clone()),
        updated_at: now,
    };
    let expected = match &current {
        Some(c) => Expected::Etag(c.etag.clone()),
        None => Expected::Absent,
    };
    match state.store.put_target(&target, expected).await {
        Ok(Ok(())) => {
            let status = if current.is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            request.audit(&format!("deploy target {id}"), Some(target.version));
            Ok(target_response(status, &target, resolved.view()))
        }
        // A service naming it would lack what the new type needs of it.
        Ok(Err(refusal)) => Err(refused(refusal, id)),
        // Written by someone else meanwhile: the client decides what to do with the new state.
        Err(StoreError::PreconditionFailed) => Err(precondition.failed()),
        Err(err) => Err(err.into()),
    }
}

fn refused(refusal: Refusal, id: &str) -> ApiError {
    match refusal {
        Refusal::Conflict(message) => ApiError::conflict(message),
        Refusal::NotFound => target_not_found(id),
    }
}

/// Under `If-Match` (or `If-None-Match`) as a service's `DELETE`: the store deletes only the
/// state the condition names, in the write that deletes.
async fn delete_target(request: Manage<TargetId>, _: NoQuery, headers: HeaderMap) -> ApiResult<StatusCode> {
    let Manage { state, org, id, .. } = &request;
    let id = &id.0;
    let precondition = Precondition::from_headers(&headers)?;
    let expected = precondition.for_delete()?;
    match state.store.delete_target(org, id, expected).await? {
        Ok(true) => {
            request.audit(&format!("deploy target {id}"), None);
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(false) => Err(precondition.nothing_deleted(target_not_found(id))),
        Err(refusal) => Err(refused(refusal, id)),
    }
}
