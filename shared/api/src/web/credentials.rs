//! `…/webhook-secrets/{provider}` and `…/tokens`: what git providers, registries and API
//! callers authenticate with. Secrets are write-only; tokens are shown once and stored as
//! SHA-256 digests.

use autodeploy_core::body::{Document, Fields};
use autodeploy_core::delivery::DeliverySource;
use autodeploy_core::provider::SecretProvider;
use axum::Json;
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use http::StatusCode;
use serde::Serialize;
use serde_json::json;

use super::AppState;
use super::auth::{Admin, Manage, PathId, SCOPES, Scope};
use super::error::{ApiError, ApiResult};
use super::extract::{NoQuery, PathParams, QueryParams, Valid};
use super::list::ListParams;
use crate::store::{DeliveryFilter, ListQuery, PageRequest, SecretRecord, TokenRecord};
use crate::util::{new_token, now_rfc3339, sha256_hex};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/organization/{org}/webhook-secrets/{provider}",
            get(get_secret).put(put_secret).delete(delete_secret),
        )
        .route("/organization/{org}/tokens", get(list_tokens).post(create_token))
        .route("/organization/{org}/tokens/{token_id}", delete(delete_token))
}

const MAX_TOKEN_NAME: usize = 100;

fn secret_provider(path: &PathParams) -> ApiResult<SecretProvider> {
    SecretProvider::from_slug(path.raw("provider")).ok_or_else(|| {
        ApiError::invalid_field(
            "provider",
            format!("must be one of {}", SecretProvider::all_slugs().join(", ")),
        )
    })
}

/// `{"secret": "…"}`; errors describe the rule, never the value.
struct SecretBody {
    secret: String,
}

impl Document for SecretBody {
    const SHAPE: &'static str = "{\"secret\": \"…\"}";

    fn read(fields: &mut Fields<'_>) -> Option<Self> {
        Some(Self {
            secret: fields.required("secret")?,
        })
    }
}

async fn put_secret(
    Manage { caller, state, org, .. }: Manage,
    _: NoQuery,
    path: PathParams,
    Valid(body): Valid<SecretBody>,
) -> ApiResult<StatusCode> {
    let provider = secret_provider(&path)?;
    provider
        .validate_secret(&body.secret)
        .map_err(|message| ApiError::invalid_field("secret", message))?;
    let record = SecretRecord {
        secret: body.secret,
        set_at: now_rfc3339(),
    };
    state.store.put_secret(&org, provider.slug(), &record).await?;
    caller.audit(&org, &format!("webhook secret {}", provider.slug()), None);
    Ok(StatusCode::NO_CONTENT)
}

async fn get_secret(Manage { state, org, .. }: Manage, _: NoQuery, path: PathParams) -> ApiResult<Response> {
    let provider = secret_provider(&path)?;
    let record = state.store.get_secret(&org, provider.slug()).await?;
    // Is the webhook wired correctly? What its last delivery came to says at a glance.
    let source = DeliverySource::parse(provider.slug());
    let last = match source {
        Some(source) => {
            let query = ListQuery {
                filter: DeliveryFilter {
                    source: Some(source),
                    outcome: None,
                },
                page: PageRequest::first(1),
            };
            state.store.list_deliveries(&org, &query).await?.items.pop()
        }
        None => None,
    };
    Ok(Json(json!({
        "provider": provider.slug(),
        "configured": record.is_some(),
        "set_at": record.map(|r| r.set_at),
        "last_delivery_at": last.as_ref().map(|d| d.received_at.clone()),
        "last_outcome": last.map(|d| d.outcome),
    }))
    .into_response())
}

async fn delete_secret(request: Manage, _: NoQuery, path: PathParams) -> ApiResult<StatusCode> {
    let provider = secret_provider(&path)?;
    if request.state.store.delete_secret(&request.org, provider.slug()).await? {
        request.audit(&format!("webhook secret {}", provider.slug()), None);
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

/// `{"name": "ci", "scopes": ["deploy"]}` (scopes default to deploy and manage).
struct TokenBody {
    name: String,
    scopes: Vec<String>,
}

impl Document for TokenBody {
    const SHAPE: &'static str = "{\"name\": \"…\", \"scopes\": [\"deploy\", \"manage\", \"consume\"]}";

    fn read(fields: &mut Fields<'_>) -> Option<Self> {
        let name: Option<String> = fields.required("name");
        if let Some(name) = &name
            && (name.trim().is_empty() || name.len() > MAX_TOKEN_NAME || name.chars().any(char::is_control))
        {
            fields.error(
                "name",
                format!("must be 1 to {MAX_TOKEN_NAME} bytes of text, not only spaces, without control characters"),
            );
        }
        let scopes = match fields.optional::<Vec<String>>("scopes") {
            None if fields.has_error("scopes") => None,
            None => Some(Scope::DEFAULT.iter().map(|s| s.as_str().to_owned()).collect()),
            Some(given) if given.is_empty() => {
                fields.error("scopes", format!("must be a non-empty array of {}", SCOPES.join(", ")));
                None
            }
            Some(given) => {
                let mut scopes: Vec<String> = Vec::new();
                for (i, scope) in given.iter().enumerate() {
                    if !SCOPES.contains(&scope.as_str()) {
                        fields.error(&format!("scopes[{i}]"), format!("must be one of {}", SCOPES.join(", ")));
                    } else if !scopes.contains(scope) {
                        scopes.push(scope.clone());
                    }
                }
                Some(scopes)
            }
        };
        Some(Self {
            name: name?,
            scopes: scopes?,
        })
    }
}

async fn create_token(
    Admin { caller, state, org, .. }: Admin,
    _: NoQuery,
    Valid(body): Valid<TokenBody>,
) -> ApiResult<Response> {
    let (id, token) = new_token();
    let record = TokenRecord {
        organization_id: org,
        id,
        name: body.name,
        scopes: body.scopes,
        hash: sha256_hex(token.as_bytes()),
        created_at: now_rfc3339(),
    };
    state.store.create_token(&record).await?;
    caller.audit(&record.organization_id, &format!("token {}", record.id), None);
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

async fn list_tokens(Admin { state, org, .. }: Admin, query: QueryParams) -> ApiResult<Response> {
    let list = ListParams::parse(&query, &org, "tokens", &[])?;
    let page = state.store.list_tokens(&org, list.page()).await?;
    Ok(list.answer(page, TokenView::from))
}

/// The API token the path names.
struct TokenId(String);

impl PathId for TokenId {
    fn read(path: &PathParams) -> ApiResult<Self> {
        Ok(Self(path.id("token_id", "token_id")?.to_owned()))
    }
}

async fn delete_token(request: Admin<TokenId>, _: NoQuery) -> ApiResult<StatusCode> {
    let TokenId(token_id) = &request.id;
    if request.state.store.delete_token(&request.org, token_id).await? {
        request.audit(&format!("token {token_id}"), None);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "There is no token {token_id} in this organization."
        )))
    }
}
