//! The admin token from Secrets Manager: fetched on first use (a cold start that never needs
//! it pays nothing, not even the client's creation) and kept as a digest for at most
//! [`ADMIN_TOKEN_MAX_AGE`], so that a rotated token takes effect in every warm instance.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::SdkConfig;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::{ADMIN_TOKEN_ENV, ADMIN_TOKEN_SECRET_ENV, describe_sdk_error, optional_env};
use crate::admin::{AdminTokenSource, StaticAdminToken};
use crate::store::{StoreError, StoreResult};

/// How long a warm instance trusts the admin token it read: a token rotated in Secrets Manager
/// (`put-secret-value`) replaces the old one everywhere within this long.
pub const ADMIN_TOKEN_MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// Reads the secret's string value when first needed and caches its SHA-256 for at most
/// `ADMIN_TOKEN_MAX_AGE`. A failed fetch is not cached (the next request tries again), and an
/// expired digest is never used instead: an admin request fails (503) while Secrets Manager
/// does not answer, rather than accept a token that may have been rotated away.
pub struct SecretsManagerAdminToken {
    config: SdkConfig,
    /// Built on the first fetch: `image-tag` serves ECR events and registry webhooks, which
    /// take no token, without ever creating it (a client's construction is init time).
    client: OnceLock<aws_sdk_secretsmanager::Client>,
    secret_id: String,
    digest: Expiring<[u8; 32]>,
}

impl SecretsManagerAdminToken {
    /// `secret_id` is the secret's ARN or name, read with a client on `config`.
    pub fn new(config: &SdkConfig, secret_id: impl Into<String>) -> Self {
        Self {
            config: config.clone(),
            client: OnceLock::new(),
            secret_id: secret_id.into(),
            digest: Expiring::new(ADMIN_TOKEN_MAX_AGE, Instant::now),
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
        self.digest.get_or_fetch(|| self.fetch()).await.map(Some)
    }
}

/// A value fetched when needed and kept for at most `max_age`, as told by the clock `now`.
/// Callers arriving while it is fetched wait for that fetch rather than start their own; a
/// failed fetch keeps nothing.
struct Expiring<T> {
    max_age: Duration,
    now: fn() -> Instant,
    /// The value and when its fetch started (so it is never kept longer than `max_age` after
    /// the secret was read).
    slot: Mutex<Option<(T, Instant)>>,
}

impl<T: Copy> Expiring<T> {
    fn new(max_age: Duration, now: fn() -> Instant) -> Self {
        Self {
            max_age,
            now,
            slot: Mutex::new(None),
        }
    }

    async fn get_or_fetch<F, Fut>(&self, fetch: F) -> StoreResult<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let mut slot = self.slot.lock().await;
        let started = (self.now)();
        if let Some((value, fetched)) = *slot
            && started
                .checked_duration_since(fetched)
                .is_some_and(|age| age < self.max_age)
        {
            return Ok(value);
        }
        *slot = None;
        let value = fetch().await?;
        *slot = Some((value, started));
        Ok(value)
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A clock the test moves by hand, shared by every test through a thread-local (the cache
    /// takes a plain function).
    mod clock {
        use std::cell::Cell;
        use std::time::{Duration, Instant};

        thread_local! {
            static START: Instant = Instant::now();
            static OFFSET: Cell<Duration> = const { Cell::new(Duration::ZERO) };
        }

        pub fn now() -> Instant {
            START.with(|start| *start + OFFSET.with(Cell::get))
        }

        pub fn advance(by: Duration) {
            OFFSET.with(|offset| offset.set(offset.get() + by));
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_fetched_token_is_kept_five_minutes_at_most() {
        let cache: Expiring<u32> = Expiring::new(ADMIN_TOKEN_MAX_AGE, clock::now);
        let fetches = AtomicU32::new(0);
        // The secret's value at each fetch: the first, then the rotated one.
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<u32, StoreError>(n)
        };

        assert_eq!(cache.get_or_fetch(fetch).await.ok(), Some(1));
        clock::advance(ADMIN_TOKEN_MAX_AGE - Duration::from_secs(1));
        assert_eq!(cache.get_or_fetch(fetch).await.ok(), Some(1), "still fresh");
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        clock::advance(Duration::from_secs(1));
        assert_eq!(
            cache.get_or_fetch(fetch).await.ok(),
            Some(2),
            "read again: the rotation shows"
        );
        assert_eq!(cache.get_or_fetch(fetch).await.ok(), Some(2));
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_expired_token_is_not_used_when_the_fetch_fails() {
        let cache: Expiring<u32> = Expiring::new(ADMIN_TOKEN_MAX_AGE, clock::now);
        assert_eq!(cache.get_or_fetch(|| async { Ok(7) }).await.ok(), Some(7));
        clock::advance(ADMIN_TOKEN_MAX_AGE);
        let down = || async { Err::<u32, _>(StoreError::Unavailable("Secrets Manager is down".to_owned())) };
        assert!(cache.get_or_fetch(down).await.is_err(), "no stale token");
        assert!(
            cache.get_or_fetch(down).await.is_err(),
            "a failure is not cached either"
        );
        assert_eq!(cache.get_or_fetch(|| async { Ok(8) }).await.ok(), Some(8));
    }
}
