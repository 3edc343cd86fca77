//! The settings API: services, webhook secrets, API tokens and the deployment log.

use autodeploy_core::error::FieldError;
use autodeploy_core::model::{Service, SpecError, merge_patch, parse_service_document};
use autodeploy_core::provider::SecretProvider;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Caller, SCOPES, Scope};
use super::error::{ApiError, ApiResult};
use super::extract::{
    ListParams, PathParams, SETTINGS_BODY_LIMIT, encode_cursor, etag_header, if_match, json_body, query_map, read_body,
};
use crate::store::{Expected, SecretRecord, StoreError, StoredService, TokenRecord};
use crate::util::{new_etag, new_token, now_rfc3339, sha256_hex};

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
        .route(
            "/organization/{org}/webhook-secrets/{provider}",
            get(get_secret).put(put_secret).delete(delete_secret),
        )
        .route("/organization/{org}/tokens", get(list_tokens).post(create_token))
        .route("/organization/{org}/tokens/{token_id}", delete(delete_token))
        .route("/organization/{org}/deployments", get(list_deployments))
}

/// How many times a write without If-Match re-reads and retries after losing a race.
const WRITE_ATTEMPTS: usize = 5;

const MAX_SECRET: usize = 1024;
const MIN_SECRET: usize = 16;

fn spec_error(err: SpecError) -> ApiError {
    match err {
        SpecError::Malformed(message) => ApiError::malformed(message),
        SpecError::Invalid(details) => ApiError::validation(details),
    }
}

/// `{"items": [...], "next_cursor": ...}`.
#[derive(Serialize)]
struct ListBody<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
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

/// SPEC: If-Match on PUT / PATCH / DELETE — 412 when it does not name the current state.
fn check_precondition(condition: &Option<Option<String>>, current: Option<&StoredService>) -> ApiResult<()> {
    match (condition, current) {
        (None, _) => Ok(()),
        (Some(None), Some(_)) => Ok(()),
        (Some(Some(tag)), Some(c)) if *tag == c.etag => Ok(()),
        _ => Err(ApiError::precondition_failed()),
    }
}

async fn get_service(caller: Caller, State(state): State<AppState>, path: PathParams) -> ApiResult<Response> {
    let org = path.id("org", "organization_id")?;
    let id = path.id("service_id", "service_id")?;
    caller.authorize(org, Scope::Manage)?;
    let stored = state
        .store
        .get_service(org, id)
        .await?
        .ok_or_else(|| service_not_found(id))?;
    Ok(service_response(StatusCode::OK, &stored))
}

async fn list_services(
    caller: Caller,
    State(state): State<AppState>,
    path: PathParams,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let org = path.id("org", "organization_id")?;
    caller.authorize(org, Scope::Manage)?;
    let params = ListParams::parse(&query_map(query.as_deref()), org, "services")?;
    let page = state
        .store
        .list_services(org, params.after.as_deref(), params.limit)
        .await?;
    Ok(Json(ListBody {
        next_cursor: page.last_key.map(|k| encode_cursor(org, "services", &k)),
        items: page.items.into_iter().map(|s| s.service).collect(),
    })
    .into_response())
}

async fn put_service(
    caller: Caller,
    State(state): State<AppState>,
    path: PathParams,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let org = path.id("org", "organization_id")?;
    let id = path.id("service_id", "service_id")?;
    caller.authorize(org, Scope::Manage)?;
    let condition = if_match(&headers)?;
    let bytes = read_body(&headers, body, SETTINGS_BODY_LIMIT).await?;
    let doc = json_body(&headers, &bytes, &["application/json"])?;
    let spec = parse_service_document(org, id, &doc).map_err(spec_error)?;
    for _ in 0..WRITE_ATTEMPTS {
        let current = state.store.get_service(org, id).await?;
        check_precondition(&condition, current.as_ref())?;
        let now = now_rfc3339();
        let (service, expected) = match &current {
            Some(c) => (
                Service {
                    spec: spec.clone(),
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
                    spec: spec.clone(),
                    version: 1,
                    created_at: now.clone(),
                    updated_at: now,
                },
                Expected::Absent,
            ),
        };
        let created = current.is_none();
        let etag = new_etag();
        match state.store.put_service(&service, &etag, expected).await {
            Ok(()) => {
                let status = if created { StatusCode::CREATED } else { StatusCode::OK };
                let stored = StoredService {
                    service,
                    etag,
                    last_push: None,
                };
                return Ok(service_response(status, &stored));
            }
            // Someone else wrote in between: with If-Match that is the client's 412; without,
            // read the new state and apply this replacement over it.
            Err(StoreError::PreconditionFailed) if condition.is_none() => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(too_much_contention())
}

fn too_much_contention() -> ApiError {
    ApiError::unavailable("The service is being changed by many requests at once; retry shortly.")
}

async fn patch_service(
    caller: Caller,
    State(state): State<AppState>,
    path: PathParams,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let org = path.id("org", "organization_id")?;
    let id = path.id("service_id", "service_id")?;
    caller.authorize(org, Scope::Manage)?;
    let condition = if_match(&headers)?;
    let bytes = read_body(&headers, body, SETTINGS_BODY_LIMIT).await?;
    let patch = json_body(&headers, &bytes, &["application/merge-patch+json", "application/json"])?;
    for _ in 0..WRITE_ATTEMPTS {
        let current = state
            .store
            .get_service(org, id)
            .await?
            .ok_or_else(|| service_not_found(id))?;
        check_precondition(&condition, Some(&current))?;
        let doc = merge_patch(&current.service, &patch).map_err(spec_error)?;
        let spec = parse_service_document(org, id, &doc).map_err(spec_error)?;
        let service = Service {
            spec,
            version: current.service.version + 1,
            updated_at: now_rfc3339(),
            ..current.service.clone()
        };
        let etag = new_etag();
        match state
            .store
            .put_service(&service, &etag, Expected::Etag(current.etag.clone()))
            .await
        {
            Ok(()) => {
                let stored = StoredService {
                    service,
                    etag,
                    last_push: current.last_push,
                };
                return Ok(service_response(StatusCode::OK, &stored));
            }
            Err(StoreError::PreconditionFailed) if condition.is_none() => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(too_much_contention())
}

async fn delete_service(
    caller: Caller,
    State(state): State<AppState>,
    path: PathParams,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let org = path.id("org", "organization_id")?;
    let id = path.id("service_id", "service_id")?;
    caller.authorize(org, Scope::Manage)?;
    let expected = match if_match(&headers)? {
        None | Some(None) => None,
        Some(Some(tag)) => Some(tag),
    };
    if state.store.delete_service(org, id, expected.as_deref()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(service_not_found(id))
    }
}

fn secret_provider(path: &PathParams) -> ApiResult<SecretProvider> {
    SecretProvider::from_slug(path.raw("provider")).ok_or_else(|| {
        ApiError::invalid_field(
            "provider",
            format!("must be one of {}", SecretProvider::all_slugs().join(", ")),
        )
    })
}

async fn put_secret(
    caller: Caller,
    State(state): State<AppState>,
    path: PathParams,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let org = path.id("org", "organization_id")?;
    caller.authorize(org, Scope::Manage)?;
    let provider = secret_provider(&path)?;
    let bytes = read_body(&headers, body, SETTINGS_BODY_LIMIT).await?;
    let doc = json_body(&headers, &bytes, &["application/json"])?;
    let secret = parse_secret_body(&doc)?;
    let record = SecretRecord {
        secret,
        set_at: now_rfc3339(),
    };
    state.store.put_secret(org, provider.slug(), &record).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `{"secret": "..."}`; errors describe the rule, never the value.
fn parse_secret_body(doc: &Value) -> ApiResult<String> {
    let Some(obj) = doc.as_object() else {
        return Err(ApiError::malformed(
            "The body must be a JSON object: {\"secret\": \"...\"}.",
        ));
    };
    let mut errors: Vec<FieldError> = obj
        .keys()
        .filter(|k| k.as_str() != "secret")
        .map(|k| FieldError::new(k.as_str(), "is not a known field"))
        .collect();
    let secret = match obj.get("secret") {
        Some(Value::String(s)) => {
            let chars = s.chars().count();
            if chars < MIN_SECRET {
                errors.push(FieldError::new(
                    "secret",
                    format!("must be at least {MIN_SECRET} characters long"),
                ));
            } else if s.len() > MAX_SECRET {
                errors.push(FieldError::new(
                    "secret",
                    format!("must be at most {MAX_SECRET} bytes long"),
                ));
            } else if s.chars().any(char::is_control) {
                errors.push(FieldError::new("secret", "must not contain control characters"));
            }
            s.clone()
        }
        Some(_) => {
            errors.push(FieldError::new("secret", "must be a string"));
            String::new()
        }
        None => {
            errors.push(FieldError::new("secret", "is required"));
            String::new()
        }
    };
    if errors.is_empty() {
        Ok(secret)
    } else {
        Err(ApiError::validation(errors))
    }
}

async fn get_secret(caller: Caller, State(state): State<AppState>, path: PathParams) -> ApiResult<Response> {
    let org = path.id("org", "organization_id")?;
    caller.authorize(org, Scope::Manage)?;
    let provider = secret_provider(&path)?;
    let record = state.store.get_secret(org, provider.slug()).await?;
    Ok(Json(json!({
        "provider": provider.slug(),
        "configured": record.is_some(),
        "set_at": record.map(|r| r.set_at),
    }))
    .into_response())
}

async fn delete_secret(caller: Caller, State(state): State<AppState>, path: PathParams) -> ApiResult<StatusCode> {
    let org = path.id("org", "organization_id")?;
    caller.authorize(org, Scope::Manage)?;
    let provider = secret_provider(&path)?;
    if state.store.delete_secret(org, provider.slug()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "No {} secret is set for this organization.",
            provider.slug()
        )))
    }
}

/// A token as listed: never the token itself.
#[derive(Serialize)]
struct TokenView {
    id: String,
    name: String,
    scopes: Vec<String>,
    created_at: String,
}

impl From<TokenRecord> for TokenView {
    fn from(t: TokenRecord) -> Self {
        Self {
            id: t.id,
            name: t.name,
            scopes: t.scopes,
            created_at: t.created_at,
        }
    }
}

/// `{"name": "ci", "scopes": ["deploy"]}` (scopes default to both).
fn parse_token_body(doc: &Value) -> ApiResult<(String, Vec<String>)> {
    let Some(obj) = doc.as_object() else {
        return Err(ApiError::malformed(
            "The body must be a JSON object: {\"name\": \"...\", \"scopes\": [...]}.",
        ));
    };
    let mut errors: Vec<FieldError> = obj
        .keys()
        .filter(|k| !matches!(k.as_str(), "name" | "scopes"))
        .map(|k| FieldError::new(k.as_str(), "is not a known field"))
        .collect();
    let name = match obj.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 100 && !s.chars().any(char::is_control) => {
            s.clone()
        }
        Some(Value::String(_)) => {
            errors.push(FieldError::new(
                "name",
                "must be 1 to 100 bytes of text without control characters",
            ));
            String::new()
        }
        None => {
            errors.push(FieldError::new("name", "is required"));
            String::new()
        }
        Some(_) => {
            errors.push(FieldError::new("name", "must be a string"));
            String::new()
        }
    };
    let mut scopes = Vec::new();
    match obj.get("scopes") {
        None | Some(Value::Null) => scopes = SCOPES.iter().map(|s| (*s).to_owned()).collect(),
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) if SCOPES.contains(&s) => {
                        if !scopes.iter().any(|have| have == s) {
                            scopes.push(s.to_owned());
                        }
                    }
                    _ => errors.push(FieldError::new(
                        format!("scopes[{i}]"),
                        format!("must be one of {}", SCOPES.join(", ")),
                    )),
                }
            }
        }
        Some(_) => errors.push(FieldError::new(
            "scopes",
            format!("must be a non-empty array of {}", SCOPES.join(", ")),
        )),
    }
    if errors.is_empty() {
        Ok((name, scopes))
    } else {
        Err(ApiError::validation(errors))
    }
}

async fn create_token(
    caller: Caller,
    State(state): State<AppState>,
    path: PathParams,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let org = path.id("org", "organization_id")?;
    caller.require_admin()?;
    let bytes = read_body(&headers, body, SETTINGS_BODY_LIMIT).await?;
    let doc = json_body(&headers, &bytes, &["application/json"])?;
    let (name, scopes) = parse_token_body(&doc)?;
    let (id, token) = new_token();
    let record = TokenRecord {
        organization_id: org.to_owned(),
        id,
        name,
        scopes,
        hash: sha256_hex(token.as_bytes()),
        created_at: now_rfc3339(),
    };
    state.store.create_token(&record).await?;
    let view = TokenView::from(record);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": view.id, "name": view.name, "scopes": view.scopes,
            "created_at": view.created_at, "token": token,
        })),
    )
        .into_response())
}

async fn list_tokens(
    caller: Caller,
    State(state): State<AppState>,
    path: PathParams,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let org = path.id("org", "organization_id")?;
    caller.require_admin()?;
    let params = ListParams::parse(&query_map(query.as_deref()), org, "tokens")?;
    let page = state
        .store
        .list_tokens(org, params.after.as_deref(), params.limit)
        .await?;
    Ok(Json(ListBody {
        next_cursor: page.last_key.map(|k| encode_cursor(org, "tokens", &k)),
        items: page.items.into_iter().map(TokenView::from).collect(),
    })
    .into_response())
}

async fn delete_token(caller: Caller, State(state): State<AppState>, path: PathParams) -> ApiResult<StatusCode> {
    let org = path.id("org", "organization_id")?;
    let token_id = path.id("token_id", "token_id")?;
    caller.require_admin()?;
    if state.store.delete_token(org, token_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "There is no token {token_id} in this organization."
        )))
    }
}

async fn list_deployments(
    caller: Caller,
    State(state): State<AppState>,
    path: PathParams,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let org = path.id("org", "organization_id")?;
    caller.authorize(org, Scope::Manage)?;
    let query = query_map(query.as_deref());
    let service_id = match query.get("service_id").filter(|s| !s.is_empty()) {
        Some(id) => {
            super::extract::check_id("service_id", id)?;
            Some(id.as_str())
        }
        None => None,
    };
    let scope = format!("deployments?service_id={}", service_id.unwrap_or(""));
    let params = ListParams::parse(&query, org, &scope)?;
    let page = state
        .store
        .list_deployments(org, service_id, params.after.as_deref(), params.limit)
        .await?;
    Ok(Json(ListBody {
        next_cursor: page.last_key.map(|k| encode_cursor(org, &scope, &k)),
        items: page.items,
    })
    .into_response())
}
