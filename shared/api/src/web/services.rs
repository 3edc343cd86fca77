//! `…/services`: create, read, list, replace, patch and delete services.

use autodeploy_core::model::{Service, ServiceSpec, SpecError, merge_patch, parse_service_document};
use axum::Json;
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::AppState;
use super::auth::{Manage, ManageWrite, PathId};
use super::error::{ApiError, ApiResult};
use super::extract::{JsonValue, MergePatch, NoQuery, PathParams, QueryParams};
use super::list::ListParams;
use super::precondition::{Precondition, etag_header};
use crate::store::{Expected, StoreError, StoredService};
use crate::turns::{Turn, retry_pause};
use crate::util::{new_etag, now_rfc3339};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/organization/{org}/services", get(list_services))
        .route(
            "/organization/{org}/services/{service_id}",
            get(get_service)
                .put(put_service)
                .patch(patch_service)
                .delete(delete_service),
        )
}

/// How many times a write re-reads and retries after losing a race it may retry (to another
/// process: in this one, writes of a service take turns).
const WRITE_ATTEMPTS: usize = 8;

/// The 503 of a write that could not land: the service kept changing under it.
fn contended() -> ApiError {
    ApiError::unavailable("The service is being changed by many requests at once; nothing was changed. Retry shortly.")
}

fn spec_error(err: SpecError) -> ApiError {
    match err {
        SpecError::Malformed(message) => ApiError::malformed(message),
        SpecError::Invalid(details) => ApiError::validation(details),
    }
}

fn service_response(status: StatusCode, stored: &StoredService) -> Response {
    let mut response = (status, Json(&stored.service)).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag_header(&stored.etag)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

fn service_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("There is no service {id} in this organization."))
}

/// The service the path names.
struct ServiceId(String);

impl PathId for ServiceId {
    fn read(path: &PathParams) -> ApiResult<Self> {
        Ok(Self(path.id("service_id", "service_id")?.to_owned()))
    }
}

async fn get_service(Manage { state, org, id, .. }: Manage<ServiceId>, _: NoQuery) -> ApiResult<Response> {
    let stored = state.store.get_service(&org, &id.0).await?;
    let stored = stored.ok_or_else(|| service_not_found(&id.0))?;
    Ok(service_response(StatusCode::OK, &stored))
}

async fn list_services(Manage { state, org, .. }: Manage, query: QueryParams) -> ApiResult<Response> {
    let list = ListParams::parse(&query, &org, "services", &[])?;
    let page = state.store.list_services(&org, list.page()).await?;
    Ok(list.answer(page, |s| s.service))
}

/// A service's `deploy_target` must name a target of its organization, with the
/// `external_id` that target's type needs.
async fn check_deploy_target(state: &AppState, org: &str, spec: &ServiceSpec) -> ApiResult<()> {
    let Some(wanted) = &spec.deploy_target else {
        return Ok(());
    };
    let Some(target) = state.store.get_target(org, &wanted.target_id).await? else {
        return Err(ApiError::missing_target());
    };
    let kind = target.spec.target_type();
    // Checked again in the store's write (the target may change meanwhile); here, it is
    // answered before any write in the common case.
    if !wanted.fits(kind) {
        return Err(ApiError::unfit_target(kind));
    }
    Ok(())
}

/// Which services a write applies to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Create or replace (PUT).
    Any,
    /// Only an existing service (PATCH): 404 otherwise.
    Existing,
}

/// Write the service `build` makes of the current state, under `precondition`. A write that
/// loses a race is retried on the new state unless the client pinned an ETag (then 412).
/// Writes of one service take turns in this process; a race with another process is retried
/// after a random pause.
async fn write_service(
    request: &Manage<ServiceId>,
    target: Target,
    precondition: &Precondition,
    build: impl Fn(Option<&StoredService>) -> ApiResult<ServiceSpec>,
) -> ApiResult<Response> {
    let Manage {
        state,
        org,
        id: ServiceId(id),
        ..
    } = request;
    let _turn = service_turn(state, org, id).await?;
    for attempt in 0..WRITE_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(retry_pause(attempt)).await;
        }
        let current = state.store.get_service(org, id).await?;
        // A PATCH of nothing is a 404, but under `If-Match` a 412: the condition names a
        // state the service is no longer (or never was) in.
        if target == Target::Existing && current.is_none() && *precondition == Precondition::None {
            return Err(service_not_found(id));
        }
        precondition.check(current.as_ref().map(|c| c.etag.as_str()))?;
        let spec = build(current.as_ref())?;
        check_deploy_target(state, org, &spec).await?;
        // A write that changes nothing changes nothing: same version, same ETag (a client
        // holding it, or a tool applying the same state again, is not told it changed).
        if let Some(current) = current.as_ref().filter(|c| c.service.spec == spec) {
            return Ok(service_response(StatusCode::OK, current));
        }
        let now = now_rfc3339();
        let (service, expected) = match &current {
            Some(c) => (
                Service {
                    spec,
                    version: c.service.version + 1,
                    updated_at: now,
                    ..c.service.clone()
                },
                Expected::Etag(c.etag.clone()),
            ),
            None => (
                Service {
                    id: id.to_owned(),
                    organization_id: org.to_owned(),
                    spec,
                    version: 1,
                    created_at: now.clone(),
                    updated_at: now,
                },
                Expected::Absent,
            ),
        };
        let stored = StoredService {
            service,
            etag: new_etag(),
            last_push: current.as_ref().and_then(|c| c.last_push.clone()),
        };
        match state.store.put_service(&stored, expected, state.limits).await {
            Ok(()) => {
                let status = if current.is_some() {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                request.audit(&format!("service {id}"), Some(stored.service.version));
                return Ok(service_response(status, &stored));
            }
            Err(StoreError::PreconditionFailed) if !matches!(precondition, Precondition::Etag(_)) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(contended())
}

/// The turn to write a service in this process.
async fn service_turn<'a>(state: &'a AppState, org: &str, id: &str) -> ApiResult<Turn<'a>> {
    let key = format!("service/{org}/{id}");
    state.deployer.turns.take(key).await.map_err(|_| contended())
}

async fn put_service(write: ManageWrite<ServiceId, JsonValue>) -> ApiResult<Response> {
    let ManageWrite {
        request,
        body: JsonValue(doc),
        precondition,
    } = write;
    let spec = parse_service_document(&request.org, &request.id.0, &doc).map_err(spec_error)?;
    write_service(&request, Target::Any, &precondition, |_| Ok(spec.clone())).await
}

async fn patch_service(write: ManageWrite<ServiceId, MergePatch>) -> ApiResult<Response> {
    let ManageWrite {
        request,
        body: MergePatch(patch),
        precondition,
    } = write;
    let (org, ServiceId(id)) = (&request.org, &request.id);
    write_service(&request, Target::Existing, &precondition, |current| {
        let current = current.ok_or_else(|| service_not_found(id))?;
        let doc = merge_patch(&current.service, &patch).map_err(spec_error)?;
        parse_service_document(org, id, &doc).map_err(spec_error)
    })
    .await
}

async fn delete_service(request: Manage<ServiceId>, _: NoQuery, headers: HeaderMap) -> ApiResult<StatusCode> {
    let Manage { state, org, id, .. } = &request;
    let id = &id.0;
    let precondition = Precondition::from_headers(&headers)?;
    let expected = precondition.for_delete()?;
    let _turn = service_turn(state, org, id).await?;
    if state.store.delete_service(org, id, expected).await? {
        request.audit(&format!("service {id}"), None);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(precondition.nothing_deleted(service_not_found(id)))
    }
}
