//! Who is calling: the operator's admin token, or an organization token with scopes.

use axum::extract::FromRequestParts;
use http::header;
use http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::{ApiError, ApiResult};

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    /// An organization's token: its id and name (for the audit lines), never the token.
    Organization {
        org: String,
        scopes: Vec<String>,
        token_id: String,
        token_name: String,
    },
}

impl Caller {
    /// 403 unless the caller may act on `org` with `scope`.
    pub fn authorize(&self, org: &str, scope: Scope) -> ApiResult<()> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Organization { org: own, scopes, .. } if own == org => {
                if scopes.iter().any(|s| s == scope.as_str()) {
                    Ok(())
                } else {
                    Err(ApiError::forbidden(format!(
                        "This token lacks the {} scope.",
                        scope.as_str()
                    )))
                }
            }
            Caller::Organization { .. } => Err(ApiError::forbidden("This token belongs to another organization.")),
        }
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
        Err(refusal.unwrap_or_else(|| ApiError::forbidden("This token lacks the scope.")))
    }

    pub fn require_admin(&self) -> ApiResult<()> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Organization { .. } => Err(ApiError::forbidden("Only the admin token may manage API tokens.")),
        }
    }
}

/// The token from `Authorization: Token <t>` or `Authorization: Bearer <t>`.
fn presented_token(parts: &Parts) -> ApiResult<&str> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("Send a token: Authorization: Token <token> or Bearer <token>."))?
        .to_str()
        .map_err(|_| ApiError::unauthorized("The Authorization header is not readable."))?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("Use Authorization: Token <token> or Bearer <token>."))?;
    if !(scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer")) {
        return Err(ApiError::unauthorized(
            "Use Authorization: Token <token> or Bearer <token>.",
        ));
    }
    let token = token.trim();
    if token.is_empty() || token.len() > 512 {
        return Err(ApiError::unauthorized("The token is not valid."));
    }
    Ok(token)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = presented_token(parts)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let admin = state.admin.admin_token_sha256().await?;
        if admin.is_some_and(|admin| bool::from(digest.ct_eq(&admin))) {
            return Ok(Caller::Admin);
        }
        // Tokens are stored as SHA-256 digests; looking one up by digest reveals nothing
        // about other tokens.
        match state.store.token_by_hash(&hex::encode(digest)).await? {
            Some(record) => Ok(Caller::Organization {
                org: record.organization_id,
                scopes: record.scopes,
                token_id: record.id,
                token_name: record.name,
            }),
            None => Err(ApiError::unauthorized("The token is not valid.")),
        }
    }
}
