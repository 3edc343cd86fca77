//! The admin token from Secrets Manager: fetched on first use (a cold start that never needs
//! it pays nothing, not even the client's creation) and kept as a digest for the life of the
//! process.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use aws_config::SdkConfig;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::{ADMIN_TOKEN_ENV, ADMIN_TOKEN_SECRET_ENV, describe_sdk_error, optional_env};
use crate::admin::{AdminTokenSource, StaticAdminToken};
use crate::store::{StoreError, StoreResult};

/// Reads the secret's string value once and caches its SHA-256. A failed fetch is not cached:
/// the next request tries again. A rotated secret is seen by new Lambda instances.
pub struct SecretsManagerAdminToken {
    config: SdkConfig,
    /// Built on the first fetch: `image-tag` serves ECR events and registry webhooks, which
    /// take no token, without ever creating it (a client's construction is init time).
    client: OnceLock<aws_sdk_secretsmanager::Client>,
    secret_id: String,
    digest: OnceCell<[u8; 32]>,
}

impl SecretsManagerAdminToken {
    /// `secret_id` is the secret's ARN or name, read with a client on `config`.
    pub fn new(config: &SdkConfig, secret_id: impl Into<String>) -> Self {
        Self {
            config: config.clone(),
            client: OnceLock::new(),
            secret_id: secret_id.into(),
            digest: OnceCell::new(),
        }
    }

    async fn fetch(&self) -> StoreResult<[u8; 32]> {
        let client = self
            .client
            .get_or_init(|| aws_sdk_secretsmanager::Client::new(&self.config));
        let out = client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(describe_sdk_error("reading the admin token secret", &e)))?;
        let token = out.secret_string().map(str::trim).unwrap_or_default();
        // An empty token would let an empty credential in: refuse it rather than cache it.
        if token.is_empty() {
            return Err(StoreError::Unavailable(
                "the admin token secret has no string value".to_owned(),
            ));
        }
        Ok(Sha256::digest(token.as_bytes()).into())
    }
}

#[async_trait]
impl AdminTokenSource for SecretsManagerAdminToken {
    async fn admin_token_sha256(&self) -> StoreResult<Option<[u8; 32]>> {
        self.digest.get_or_try_init(|| self.fetch()).await.copied().map(Some)
    }
}

/// `AUTODEPLOY_ADMIN_TOKEN` when set, else the secret named by
/// `AUTODEPLOY_ADMIN_TOKEN_SECRET_ARN`, read with a client on `config` when first needed.
pub fn admin_token_from_config(config: &SdkConfig) -> Result<Arc<dyn AdminTokenSource>, String> {
    if let Some(token) = optional_env(ADMIN_TOKEN_ENV) {
        return Ok(Arc::new(StaticAdminToken::new(&token)));
    }
    Ok(Arc::new(SecretsManagerAdminToken::new(config, secret_id()?)))
}

fn secret_id() -> Result<String, String> {
    optional_env(ADMIN_TOKEN_SECRET_ENV)
        .ok_or_else(|| format!("no admin token: set {ADMIN_TOKEN_ENV} or {ADMIN_TOKEN_SECRET_ENV}"))
}
