//! Who is calling: the operator's admin token, or an organization token with scopes.

use std::marker::PhantomData;

use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use http::header;
use http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{Org, PathParams, QueryParams};
use super::precondition::Precondition;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The image-tag endpoints.
    Deploy,
    /// Everything else under the organization, except tokens.
    Manage,
    /// Leasing, acknowledging and reporting on deployments (pull consumers, engines).
    Consume,
}

impl Scope {
    /// A new token's scopes when it names none.
    pub const DEFAULT: [Scope; 2] = [Scope::Deploy, Scope::Manage];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Deploy => "deploy",
            Scope::Manage => "manage",
            Scope::Consume => "consume",
        }
    }
}

pub const SCOPES: [&str; 3] = ["deploy", "manage", "consume"];

/// Who sent a request, and through which route (for audit lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    who: Who,
    route: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    Admin,
    Organization {
        org: String,
        scopes: Vec<String>,
        token_id: String,
        token_name: String,
        /// The token's SHA-256 (hex), as stored: to tell later whether it still is.
        token_hash: String,
    },
}

impl Caller {
    /// 403 unless the caller may act on `org` with `scope`.
    pub fn authorize(&self, org: &str, scope: Scope) -> ApiResult<()> {
        match &self.who {
            Who::Admin => Ok(()),
            Who::Organization { org: own, scopes, .. } if own == org => {
                if scopes.iter().any(|s| s == scope.as_str()) {
                    Ok(())
                } else {
                    Err(ApiError::forbidden(format!(
                        "This token lacks the {} scope.",
                        scope.as_str()
                    )))
                }
            }
            Who::Organization { .. } => Err(ApiError::forbidden("This token belongs to another organization.")),
        }
    }

    /// The audit line of a settings change: which token (its id and name, never the token),
    /// which route, which resource, and the version it is now at (none once deleted).
    pub fn audit(&self, org: &str, resource: &str, version: Option<u64>) {
        let (token_id, token_name) = match &self.who {
            Who::Admin => ("admin", "admin token"),
            Who::Organization {
                token_id, token_name, ..
            } => (token_id.as_str(), token_name.as_str()),
        };
        tracing::info!(
            target: "autodeploy::audit",
            org,
            route = %self.route,
            resource,
            version,
            token_id,
            token_name,
            "settings changed"
        );
    }

    /// 403 unless the caller may act on `org` with one of `scopes`.
    pub fn authorize_any(&self, org: &str, scopes: &[Scope]) -> ApiResult<()> {
        let mut refusal = None;
        for scope in scopes {
            match self.authorize(org, *scope) {
                Ok(()) => return Ok(()),
                Err(err) => refusal = Some(err),
            }
        }
        match &self.who {
            // The refusal names every scope that would do, not only the last one tried.
            Who::Organization { org: own, .. } if own == org && scopes.len() > 1 => {
                let names: Vec<&str> = scopes.iter().map(|scope| scope.as_str()).collect();
                Err(ApiError::forbidden(format!(
                    "This token has none of the scopes this call accepts: {}.",
                    names.join(", ")
                )))
            }
            _ => Err(refusal.unwrap_or_else(|| ApiError::forbidden("This token lacks the scope."))),
        }
    }

    /// Whether the caller's token is still valid: an organization token may have been
    /// revoked since the request was authorized (a long poll waits up to 20 s).
    pub async fn still_valid(&self, state: &AppState) -> ApiResult<bool> {
        match &self.who {
            Who::Admin => Ok(true),
            Who::Organization { token_hash, .. } => Ok(state.store.token_by_hash(token_hash).await?.is_some()),
        }
    }

    pub fn require_admin(&self) -> ApiResult<()> {
        match self.who {
            Who::Admin => Ok(()),
            Who::Organization { .. } => Err(ApiError::forbidden("Only the admin token may manage API tokens.")),
        }
    }
}

/// The longest token a request may present (an admin token is checked against it at start).
pub const MAX_PRESENTED_TOKEN: usize = 512;

/// The token from `Authorization: Token <t>` or `Authorization: Bearer <t>`.
fn presented_token(parts: &Parts) -> ApiResult<&str> {
    let mut sent = parts.headers.get_all(header::AUTHORIZATION).iter();
    let value = sent
        .next()
        .ok_or_else(|| ApiError::token_required("Send a token: Authorization: Token <token> or Bearer <token>."))?;
    // Which one would count is ambiguous (a proxy may have added one): refuse rather than pick.
    if sent.next().is_some() {
        return Err(ApiError::token_required(
            "Send one Authorization header: this request has several.",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| ApiError::token_required("The Authorization header is not readable."))?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| ApiError::token_required("Use Authorization: Token <token> or Bearer <token>."))?;
    if !(scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer")) {
        return Err(ApiError::token_required(
            "Use Authorization: Token <token> or Bearer <token>.",
        ));
    }
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_PRESENTED_TOKEN {
        return Err(ApiError::token_required("The token is not valid."));
    }
    Ok(token)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = presented_token(parts)?;
        let route = match parts.extensions.get::<MatchedPath>() {
            Some(path) => format!("{} {}", parts.method, path.as_str()),
            None => parts.method.to_string(),
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Either order gives the same caller; this one reads the admin token (on AWS, from
        // Secrets Manager) only for a token that is not an organization's, so CI calls with
        // organization tokens do not depend on it.
        if token.starts_with(ORGANIZATION_TOKEN_PREFIX)
            && let Some(caller) = organization_caller(state, &digest, &route).await?
        {
            return Ok(caller);
        }
        let admin = state.admin.admin_token_sha256().await?;
        if admin.is_some_and(|admin| bool::from(digest.ct_eq(&admin))) {
            return Ok(Caller { who: Who::Admin, route });
        }
        if !token.starts_with(ORGANIZATION_TOKEN_PREFIX)
            && let Some(caller) = organization_caller(state, &digest, &route).await?
        {
            return Ok(caller);
        }
        Err(ApiError::token_required("The token is not valid."))
    }
}

/// How every organization token begins (`adt_` and 64 hex characters).
const ORGANIZATION_TOKEN_PREFIX: &str = "adt_";

/// The organization token whose SHA-256 is `digest`, if one is stored. Tokens are stored as
/// digests; looking one up by digest reveals nothing about other tokens.
async fn organization_caller(state: &AppState, digest: &[u8; 32], route: &str) -> ApiResult<Option<Caller>> {
    let token_hash = hex::encode(digest);
    Ok(state.store.token_by_hash(&token_hash).await?.map(|record| Caller {
        who: Who::Organization {
            org: record.organization_id,
            scopes: record.scopes,
            token_id: record.id,
            token_name: record.name,
            token_hash,
        },
        route: route.to_owned(),
    }))
}

/// What a settings route requires of its caller on the organization of the path.
pub trait Access {
    fn check(caller: &Caller, org: &str) -> ApiResult<()>;
}

/// The `manage` scope on the organization.
pub struct ManageScope;

/// The `deploy` scope on the organization (the image-tag endpoints).
pub struct DeployScope;

/// The `consume` scope on the organization (engines and pull consumers).
pub struct ConsumeScope;

/// The operator's admin token (API tokens are the operator's to hand out).
pub struct AdminToken;

impl Access for ManageScope {
    fn check(caller: &Caller, org: &str) -> ApiResult<()> {
        caller.authorize(org, Scope::Manage)
    }
}

impl Access for DeployScope {
    fn check(caller: &Caller, org: &str) -> ApiResult<()> {
        caller.authorize(org, Scope::Deploy)
    }
}

impl Access for ConsumeScope {
    fn check(caller: &Caller, org: &str) -> ApiResult<()> {
        caller.authorize(org, Scope::Consume)
    }
}

impl Access for AdminToken {
    fn check(caller: &Caller, _: &str) -> ApiResult<()> {
        caller.require_admin()
    }
}

/// A request on an organization by a caller `A` allows, checked in this order: the token
/// (401), the organization of the path (400), `id`, what the route names in its path besides
/// (400), then access (403). A route's body is read after it: a caller without access learns
/// nothing from it.
pub struct Authorized<Id, A> {
    pub caller: Caller,
    pub state: AppState,
    pub org: String,
    pub id: Id,
    access: PhantomData<A>,
}

/// A settings request by a caller with the `manage` scope.
pub type Manage<Id = ()> = Authorized<Id, ManageScope>;

/// A request on an organization's API tokens, by the admin token.
pub type Admin<Id = ()> = Authorized<Id, AdminToken>;

/// A request of CI announcing an image, with the `deploy` scope.
pub type Deploy = Authorized<(), DeployScope>;

/// A request of an engine or a pull consumer, with the `consume` scope.
pub type Consume = Authorized<(), ConsumeScope>;

/// What an [`Authorized`] route names in its path besides the organization, read before
/// access is checked.
pub trait PathId: Sized {
    fn read(path: &PathParams) -> ApiResult<Self>;
}

/// A route that names nothing else, or checks what it names after access.
impl PathId for () {
    fn read(_: &PathParams) -> ApiResult<Self> {
        Ok(())
    }
}

impl<Id: PathId, A: Access> FromRequestParts<AppState> for Authorized<Id, A> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let Org(org) = Org::from_request_parts(parts, state).await?;
        let id = Id::read(&PathParams::from_request_parts(parts, state).await?)?;
        A::check(&caller, &org)?;
        Ok(Self {
            caller,
            state: state.clone(),
            org,
            id,
            access: PhantomData,
        })
    }
}

impl<Id, A> Authorized<Id, A> {
    /// The audit line of a change to `resource` of the organization (see [`Caller::audit`]).
    pub fn audit(&self, resource: &str, version: Option<u64>) {
        self.caller.audit(&self.org, resource, version);
    }
}

/// A write to one resource of an organization's settings, by a caller with the `manage`
/// scope: as [`Manage`], then the body `B` and the precondition (`If-Match`,
/// `If-None-Match`).
pub struct ManageWrite<Id, B> {
    pub request: Manage<Id>,
    pub body: B,
    pub precondition: Precondition,
}

impl<Id: PathId + Send, B: FromRequest<AppState, Rejection = ApiError>> FromRequest<AppState> for ManageWrite<Id, B> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let request = Manage::<Id>::from_request_parts(&mut parts, state).await?;
        // A settings write takes no query parameter: `?dry_run=true` would otherwise write.
        QueryParams::parse(parts.uri.query()).only(&[])?;
        let headers = parts.headers.clone();
        let body = B::from_request(Request::from_parts(parts, body), state).await?;
        Ok(Self {
            precondition: Precondition::from_headers(&headers)?,
            request,
            body,
        })
    }
}
