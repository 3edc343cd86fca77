//! Where the operator's admin token comes from.

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::store::StoreResult;

/// Yields the SHA-256 of the admin token, or `None` where no admin token exists (then no
/// token is the admin's). Implementations may fetch it lazily (Secrets Manager) and cache it;
/// callers compare digests in constant time.
#[async_trait]
pub trait AdminTokenSource: Send + Sync {
    async fn admin_token_sha256(&self) -> StoreResult<Option<[u8; 32]>>;
}

/// An admin token known at start-up (`AUTODEPLOY_ADMIN_TOKEN`). Only its digest is kept.
pub struct StaticAdminToken([u8; 32]);

impl StaticAdminToken {
    /// White space around `token` (an environment file's last newline) is not part of it, as
    /// a request's `Authorization` header cannot carry it; so it is read from Secrets Manager.
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.trim().as_bytes()).into())
    }
}

#[async_trait]
impl AdminTokenSource for StaticAdminToken {
    async fn admin_token_sha256(&self) -> StoreResult<Option<[u8; 32]>> {
        Ok(Some(self.0))
    }
}

/// For a function whose routes take no token (`push-webhook`: the git webhooks): no admin token
/// exists, so none is read and no token is the admin's.
pub struct NoAdminToken;

#[async_trait]
impl AdminTokenSource for NoAdminToken {
    async fn admin_token_sha256(&self) -> StoreResult<Option<[u8; 32]>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn white_space_around_a_static_token_is_not_part_of_it() {
        let digest = |token: &str| Sha256::digest(token.as_bytes()).into();
        let padded = StaticAdminToken::new(" an-admin-token-0123456789\n");
        let want: [u8; 32] = digest("an-admin-token-0123456789");
        assert_eq!(padded.admin_token_sha256().await.ok().flatten(), Some(want));
    }
}
