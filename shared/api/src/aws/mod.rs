//! The AWS adapters used by the Lambda functions: the store on DynamoDB, the deployment queue
//! on SQS FIFO and the admin token in Secrets Manager.
//!
//! Clients are built once per process from the standard SDK environment (region, credentials,
//! `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL_SQS` for local
//! endpoints), so a warm Lambda reuses its connections.

mod admin_secret;
#[cfg(feature = "aws-dispatcher")]
pub mod dispatcher;
mod dynamo;
mod https;
pub mod lambda_events;
mod sqs;

use std::error::Error;
use std::sync::Arc;

use aws_config::environment::{EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider};
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::store::TenantLimits;

pub use admin_secret::{SecretsManagerAdminToken, admin_token_from_config};
pub use dynamo::{
    DynamoStore, IMAGE_RECORDS_PER_TRANSACTION, LayoutUpgrade, MARKS_PER_TRANSACTION, MAX_TRANSACTION_ITEMS,
    PUSH_RECORDS_PER_TRANSACTION, STALE_ATTEMPT_SECS, TRANSACTION_CONCURRENCY, Transition,
};
pub use https::{Roots, compiled_roots, encode_compiled_roots, https_client, https_client_trusting};
pub use sqs::SqsQueue;

/// The DynamoDB table holding every record (the template's `Table`).
pub const TABLE_ENV: &str = "AUTODEPLOY_TABLE";
/// The URL of the SQS FIFO queue deployment requests go to.
pub const QUEUE_URL_ENV: &str = "AUTODEPLOY_QUEUE_URL";
/// The admin token itself, for local runs; wins over the secret.
pub const ADMIN_TOKEN_ENV: &str = "AUTODEPLOY_ADMIN_TOKEN";
/// ARN (or name) of the Secrets Manager secret holding the admin token, when deployed.
pub const ADMIN_TOKEN_SECRET_ENV: &str = "AUTODEPLOY_ADMIN_TOKEN_SECRET_ARN";
/// Services one organization may hold (SPEC "Bounded tenants"); read by `settings`, the
/// function that writes services.
pub const MAX_SERVICES_ENV: &str = "AUTODEPLOY_MAX_SERVICES";
/// `true` lets deploy targets be private addresses or plain `http` (on-premises engines,
/// tests); read by `settings` (targets' writes) and `dispatcher` (their sends).
pub const TARGETS_ALLOW_PRIVATE_ENV: &str = "AUTODEPLOY_TARGETS_ALLOW_PRIVATE";

/// What a Lambda function needs to reach its state, built once at start-up.
pub struct AwsBackend {
    /// The loaded SDK configuration, for building further clients (the admin token's).
    pub config: SdkConfig,
    pub store: Arc<DynamoStore>,
    pub queue: Arc<SqsQueue>,
}

/// Load the SDK environment and build the store and queue named by `AUTODEPLOY_TABLE` and
/// `AUTODEPLOY_QUEUE_URL`. The error is a sentence for the operator.
pub async fn from_env() -> Result<AwsBackend, String> {
    let table = required_env(TABLE_ENV)?;
    let queue_url = required_env(QUEUE_URL_ENV)?;
    let config = load_config().await?;
    Ok(AwsBackend {
        store: Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), table)),
        queue: Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&config), queue_url)),
        config,
    })
}

/// The state of the `settings` function, whose routes send no deployments (a redeploy is
/// recorded `PENDING`, for the relay): the store named by
/// `AUTODEPLOY_TABLE`, the admin token source and the limits per organization
/// (`AUTODEPLOY_MAX_SERVICES`), and no queue ([`crate::store::NoQueue`]), so it neither needs
/// `AUTODEPLOY_QUEUE_URL` nor creates an SQS client at init.
pub async fn app_state_without_queue_from_env() -> Result<crate::web::AppState, String> {
    let table = required_env(TABLE_ENV)?;
    let limits = tenant_limits(optional_env(MAX_SERVICES_ENV))?;
    let config = load_config().await?;
    let allow_private = targets_allow_private()?;
    let admin = admin_token_from_config(&config)?;
    Ok(crate::web::AppState::new(
        Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), table)),
        Arc::new(crate::store::NoQueue),
        admin,
    )
    .with_limits(limits)
    .allowing_private_targets(allow_private))
}

/// Move the table named by `AUTODEPLOY_TABLE`, written by the first release, to this release's
/// layout ([`DynamoStore::upgrade_first_release_layout`]), with the SDK environment's
/// credentials: run by hand once after the upgrade (infra/README.md "Upgrading").
pub async fn upgrade_table_from_env() -> Result<LayoutUpgrade, String> {
    let table = required_env(TABLE_ENV)?;
    let config = load_config().await?;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), table);
    store
        .upgrade_first_release_layout()
        .await
        .map_err(|err| format!("the table could not be upgraded: {err}"))
}

/// [`TARGETS_ALLOW_PRIVATE_ENV`]: a switch, read as the server reads it
/// ([`crate::util::parse_switch`]); unset is `false`.
fn targets_allow_private() -> Result<bool, String> {
    match optional_env(TARGETS_ALLOW_PRIVATE_ENV) {
        None => Ok(false),
        Some(value) => crate::util::parse_switch(&value)
            .ok_or_else(|| format!("{TARGETS_ALLOW_PRIVATE_ENV} must be true or false (or 1 / 0, yes / no, on / off)")),
    }
}

/// The limits per organization, with `max_services` (`AUTODEPLOY_MAX_SERVICES`) when set.
fn tenant_limits(max_services: Option<String>) -> Result<TenantLimits, String> {
    let Some(value) = max_services else {
        return Ok(TenantLimits::default());
    };
    match value.trim().parse::<u32>() {
        Ok(services) if services >= 1 => Ok(TenantLimits {
            services,
            ..TenantLimits::default()
        }),
        _ => Err(format!(
            "{MAX_SERVICES_ENV} must be a whole number from 1 to {}",
            u32::MAX
        )),
    }
}

/// Everything a Lambda function's router needs, from the environment: the store, the queue
/// and the admin token source (the token itself, or the secret fetched on first use).
pub async fn app_state_from_env() -> Result<crate::web::AppState, String> {
    let backend = from_env().await?;
    let admin = admin_token_from_config(&backend.config)?;
    Ok(crate::web::AppState::new(backend.store, backend.queue, admin))
}

/// The state of a function whose routes take no token (`push-webhook`: git webhooks are
/// verified with the organization's secrets): the store and queue from the environment, and
/// no admin token, so it neither needs `AUTODEPLOY_ADMIN_TOKEN*` nor ever reads the secret.
pub async fn app_state_without_admin_from_env() -> Result<crate::web::AppState, String> {
    let backend = from_env().await?;
    Ok(crate::web::AppState::new(
        backend.store,
        backend.queue,
        Arc::new(crate::admin::NoAdminToken),
    ))
}

/// JSON log lines on stdout, which CloudWatch Logs indexes field by field. `RUST_LOG` filters
/// (default `info`), except that no dependency ever logs at TRACE, whatever `RUST_LOG` says:
/// at that level `lambda_runtime` logs every raw event (and a Docker Hub notification's path
/// carries the organization's webhook secret) and the AWS SDK logs response bodies (the
/// webhook secrets read from DynamoDB). A second call keeps the first subscriber.
pub fn init_tracing() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let no_trace_but_ours = Targets::new()
        .with_default(LevelFilter::DEBUG)
        .with_target("autodeploy_api", LevelFilter::TRACE)
        .with_target("autodeploy_core", LevelFilter::TRACE);
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(false)
        // Lambda stamps every line itself.
        .without_time()
        .finish()
        .with(no_trace_but_ours);
    // Already set (a test, a second call): keep it.
    let _ = subscriber.try_init();
}

/// The standard SDK configuration: region, credentials and endpoint overrides from the
/// environment, on the shared HTTPS client ([`https_client`]).
pub async fn load_config() -> Result<SdkConfig, String> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https_client()?);
    let shortcuts = ProviderShortcuts::from_env();
    if shortcuts.region_from_env {
        loader = loader.region(EnvironmentVariableRegionProvider::new());
    }
    if shortcuts.credentials_from_env {
        loader = loader.credentials_provider(EnvironmentVariableCredentialsProvider::new());
    }
    Ok(loader.load().await)
}

/// Which of the SDK's provider chains can be skipped because the environment already answers.
///
/// The default region and credentials chains try the environment first, and when it has the
/// answer they return it without consulting anything else. But building the chains sets up
/// every provider in them: an STS client for web identity, an instance-metadata client, the
/// container provider. On Lambda the runtime always sets `AWS_REGION` and the role's
/// credentials, so that set-up (measured in docs/cold-start.md) was never used. The environment providers alone give the same answer; anywhere else (no
/// variables) the full chains run as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderShortcuts {
    /// `AWS_REGION` or `AWS_DEFAULT_REGION` is set: the region chain would return it.
    pub region_from_env: bool,
    /// `AWS_ACCESS_KEY_ID` and a secret key are set and not blank: the credentials chain
    /// would return them (it moves on only when the environment's are missing or blank).
    pub credentials_from_env: bool,
}

impl ProviderShortcuts {
    /// Decide from `var`, which reads one variable (`None`: not set).
    pub fn from_env_with(var: impl Fn(&str) -> Option<String>) -> ProviderShortcuts {
        let not_blank = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
        ProviderShortcuts {
            region_from_env: var("AWS_REGION").is_some() || var("AWS_DEFAULT_REGION").is_some(),
            credentials_from_env: not_blank("AWS_ACCESS_KEY_ID")
                && (not_blank("AWS_SECRET_ACCESS_KEY") || not_blank("SECRET_ACCESS_KEY")),
        }
    }

    pub fn from_env() -> ProviderShortcuts {
        ProviderShortcuts::from_env_with(|name| std::env::var(name).ok())
    }
}

/// A set, non-empty environment variable, or a message naming it.
fn required_env(name: &str) -> Result<String, String> {
    optional_env(name).ok_or_else(|| format!("{name} is not set"))
}

/// An empty variable counts as unset: an empty table name or token is never meant.
fn optional_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A short description of an SDK failure for `Unavailable` / `QueueError`: the service's
/// error code and message (which name no item values), or the transport failure.
fn describe_sdk_error<E, R>(operation: &str, err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + Error + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            format!(
                "{operation}: {}: {}",
                e.code().unwrap_or("unknown error"),
                e.message().unwrap_or("no message")
            )
        }
        other => format!("{operation}: {}", DisplayErrorContext(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_services_comes_from_the_environment() {
        assert_eq!(tenant_limits(None), Ok(TenantLimits::default()));
        let limits = tenant_limits(Some(" 250 ".to_owned())).map(|l| (l.services, l.services_per_key));
        assert_eq!(limits, Ok((250, TenantLimits::default().services_per_key)));
        for bad in ["0", "-1", "ten", "1.5", "4294967296"] {
            let err = tenant_limits(Some(bad.to_owned())).err();
            assert!(err.is_some_and(|e| e.starts_with(MAX_SERVICES_ENV)), "{bad}");
        }
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn the_chains_are_skipped_only_when_the_environment_answers() {
        // Lambda: the runtime sets the region and the role's credentials.
        let lambda = env(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
        ]);
        let both = ProviderShortcuts {
            region_from_env: true,
            credentials_from_env: true,
        };
        assert_eq!(ProviderShortcuts::from_env_with(lambda), both);
        // The fallbacks the environment provider reads too.
        let fallbacks = env(&[
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("SECRET_ACCESS_KEY", "secret"),
        ]);
        assert_eq!(ProviderShortcuts::from_env_with(fallbacks), both);

        // Nothing in the environment (an instance role, a profile): the full chains.
        let none = ProviderShortcuts {
            region_from_env: false,
            credentials_from_env: false,
        };
        assert_eq!(ProviderShortcuts::from_env_with(env(&[])), none);
        // Half the credentials, or blank ones: the chain would move on, so it must run.
        for partial in [
            env(&[("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")]),
            env(&[("AWS_SECRET_ACCESS_KEY", "secret")]),
            env(&[("AWS_ACCESS_KEY_ID", " "), ("AWS_SECRET_ACCESS_KEY", "secret")]),
            env(&[("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"), ("AWS_SECRET_ACCESS_KEY", "")]),
        ] {
            assert_eq!(ProviderShortcuts::from_env_with(partial), none);
        }
    }
}
