//! Where the operator's admin token comes from.

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::store::StoreResult;

/// Yields the SHA-256 of the admin token. Implementations may fetch it lazily (Secrets
/// Manager) and cache it; callers compare digests in constant time.
#[async_trait]
pub trait AdminTokenSource: Send + Sync {
    async fn admin_token_sha256(&self) -> StoreResult<[u8; 32]>;
}

/// An admin token known at start-up (`AUTODEPLOY_ADMIN_TOKEN`). Only its digest is kept.
pub struct StaticAdminToken([u8; 32]);

impl StaticAdminToken {
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

#[async_trait]
impl AdminTokenSource for StaticAdminToken {
    async fn admin_token_sha256(&self) -> StoreResult<[u8; 32]> {
        Ok(self.0)
    }
}

/// For a function whose routes take no token (`push-webhook`: the git webhooks): no admin token is
/// configured, so none is read and no token is the admin's. The digest is random, drawn at
/// start-up: no token hashes to it.
pub struct NoAdminToken([u8; 32]);

impl NoAdminToken {
    pub fn new() -> Self {
        Self(rand::random())
    }
}

impl Default for NoAdminToken {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl AdminTokenSource for NoAdminToken {
    async fn admin_token_sha256(&self) -> StoreResult<[u8; 32]> {
        Ok(self.0)
    }
}
