//! The `dispatcher` Lambda function's work (SPEC "Deploy targets and the dispatcher", AWS):
//! a batch of the deployment queue's messages (SQS FIFO, through an event source mapping with
//! `ReportBatchItemFailures`), each one attempt at its deployment with
//! [`Dispatcher::attempt`], as the standalone server's dispatcher makes them.
//!
//! - Order: a batch's message groups (one per service) are handled side by side, each group's
//!   messages one after the other; on the first message of a group that is not done, that
//!   message and every later one of its group are reported as failed, so SQS hands them over
//!   again in order (`autodeploy_core::target::fifo`).
//! - Retries ride on SQS: a deployment whose attempt will be retried is reported as failed,
//!   and its group's reported messages are hidden until its `next_attempt_at`
//!   (`ChangeMessageVisibility`; the queue's visibility timeout when that call fails). What
//!   exhausts its receives goes to the dead-letter queue.
//! - A deployment of a service without a deploy target is forwarded, unchanged (same body,
//!   message group and deduplication id), to the pull queue, for outside engines, and stays
//!   `QUEUED`.
//! - Each invocation prints one EMF line ([`crate::metrics::emit_dispatch`]) and logs one line
//!   per deployment; message bodies are never logged.

use autodeploy_core::deployment::{DeploymentRequest, DeploymentStatus};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use autodeploy_core::target::delivery::{ATTEMPT_TIMEOUT, RetryPolicy, parse_age};
use autodeploy_core::target::fifo;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
use futures::future::join_all;

use super::dynamo::{DynamoStore, STALE_ATTEMPT_SECS};
use super::{
    QUEUE_URL_ENV, Roots, TABLE_ENV, describe_sdk_error, load_config, optional_env, required_env, targets_allow_private,
};
use crate::dispatch::send::{Sender, SenderConfig};
use crate::dispatch::{Delivery, Dispatcher};
use crate::metrics::DispatchTally;
use crate::store::{AttemptStart, StoreError};
use crate::util::now_unix;

/// The URL of the FIFO queue deployments of services without a target are forwarded to
/// (the template's `PullQueue`).
pub const PULL_QUEUE_URL_ENV: &str = "AUTODEPLOY_PULL_QUEUE_URL";
/// Attempts on a target before a deployment fails (default 10).
pub const MAX_ATTEMPTS_ENV: &str = "AUTODEPLOY_MAX_ATTEMPTS";
/// How long a deployment is retried (default `24h`).
pub const MAX_DELIVERY_AGE_ENV: &str = "AUTODEPLOY_MAX_DELIVERY_AGE";

/// The time an attempt may take (its timeout) and its records: no attempt starts with less
/// than this left of the invocation.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(ATTEMPT_TIMEOUT.as_secs() + 10);

/// The longest SQS hides a message (12 hours).
const MAX_VISIBILITY_SECS: i64 = 12 * 60 * 60;

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Handled {
    /// Attempted: delivered, or failed for good.
    Done(Delivery),
    /// Superseded, or nothing left to do (taken already, final, unknown).
    Dropped { superseded: bool },
    /// Forwarded to the pull queue.
    Forwarded,
    /// To be handed over again, at `next_attempt_unix` when known.
    Again { next_attempt_unix: Option<i64> },
    /// Waiting for a retry that is not due (the message came back early): handed over again
    /// at `next_attempt_unix`, nothing attempted.
    NotDue { next_attempt_unix: i64 },
}

impl Handled {
    /// `Some(when)` for a message to hand over again (`when` unknown: the queue's visibility
    /// timeout), `None` for one that is done.
    fn handed_back(&self) -> Option<Option<i64>> {
        match self {
            Handled::Again { next_attempt_unix } => Some(*next_attempt_unix),
            Handled::NotDue { next_attempt_unix } => Some(Some(*next_attempt_unix)),
            _ => None,
        }
    }
}

/// Why the function could not start; the message names what to set.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherSetupError {
    #[error("{0}")]
    Environment(String),
    #[error("the dispatcher's HTTP client: {0}")]
    Sender(#[from] crate::dispatch::send::SenderError),
}

/// The function's state, built once per instance.
pub struct SqsDispatcher {
    dispatcher: Dispatcher,
    sqs: aws_sdk_sqs::Client,
    /// The deployment queue the messages come from.
    queue_url: String,
    /// Where deployments of services without a target go.
    pull_queue_url: String,
}

impl SqsDispatcher {
    pub fn new(dispatcher: Dispatcher, sqs: aws_sdk_sqs::Client, queue_url: String, pull_queue_url: String) -> Self {
        SqsDispatcher {
            dispatcher,
            sqs,
            queue_url,
            pull_queue_url,
        }
    }

    /// From the environment: the table (`AUTODEPLOY_TABLE`), both queues
    /// (`AUTODEPLOY_QUEUE_URL`, [`PULL_QUEUE_URL_ENV`]), the retry policy and whether private
    /// targets are allowed. Targets are reached trusting Mozilla's roots, or the system's when
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` is set (as the SDK's client does).
    pub async fn from_env() -> Result<SqsDispatcher, DispatcherSetupError> {
        let pull_queue_url = required_env(PULL_QUEUE_URL_ENV).map_err(DispatcherSetupError::Environment)?;
        let allow_private = targets_allow_private().map_err(DispatcherSetupError::Environment)?;
        let policy = retry_policy(optional_env(MAX_ATTEMPTS_ENV), optional_env(MAX_DELIVERY_AGE_ENV))
            .map_err(DispatcherSetupError::Environment)?;
        let config = SenderConfig {
            system_roots: Roots::from_env() == Roots::System,
            ..SenderConfig::new(allow_private)
        };
        let sender = Sender::new(config)?;
        let table = required_env(TABLE_ENV).map_err(DispatcherSetupError::Environment)?;
        let queue_url = required_env(QUEUE_URL_ENV).map_err(DispatcherSetupError::Environment)?;
        let config = load_config().await.map_err(DispatcherSetupError::Environment)?;
        // One SQS client, for both queues: the dispatcher never sends through the
        // deployment queue's adapter (`SqsQueue`), so it does not build one.
        Ok(SqsDispatcher::new(
            Dispatcher {
                store: Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), table)),
                sender,
                policy,
            },
            aws_sdk_sqs::Client::new(&config),
            queue_url,
            pull_queue_url,
        ))
    }

    /// Handle a batch: the messages to hand over again, and what became of the others. No
    /// attempt starts when less than [`DEADLINE_MARGIN`] is left before `deadline` (the
    /// invocation's): the messages not tried are handed over again.
    pub async fn handle(&self, event: SqsEvent, deadline: Option<SystemTime>) -> (SqsBatchResponse, DispatchTally) {
        let groups = fifo::by_group(event.records, |m| group_of(m).map(str::to_owned));
        let outcomes = join_all(groups.iter().map(|group| self.handle_group(group, deadline))).await;
        let mut tally = DispatchTally::default();
        let mut failures = Vec::new();
        for (group, handled) in groups.iter().zip(outcomes) {
            let marked: Vec<(&SqsMessage, bool)> = group
                .iter()
                .enumerate()
                .map(|(i, m)| (m, handled.get(i).is_some_and(|h| h.handed_back().is_none())))
                .collect();
            for h in &handled {
                count(&mut tally, h);
            }
            let reported = fifo::reported(&marked);
            let next_attempt = handled.iter().find_map(Handled::handed_back);
            if let Some(Some(at)) = next_attempt {
                self.hide_until(reported.iter().map(|(m, _)| *m), at).await;
            }
            failures.extend(reported.iter().map(|(m, _)| m.message_id.clone().unwrap_or_default()));
        }
        let mut response = SqsBatchResponse::default();
        response.set_failures(failures);
        (response, tally)
    }

    /// A group's messages in order, up to the first that is not done: one outcome per message
    /// handled (the rest were not tried).
    async fn handle_group(&self, group: &[SqsMessage], deadline: Option<SystemTime>) -> Vec<Handled> {
        let mut outcomes = Vec::with_capacity(group.len());
        for message in group {
            if deadline.is_some_and(|d| SystemTime::now() + DEADLINE_MARGIN > d) {
                tracing::warn!(
                    left = group.len() - outcomes.len(),
                    "out of time: the rest is handed over again"
                );
                break;
            }
            let handled = self.handle_message(message).await;
            let again = handled.handed_back().is_some();
            outcomes.push(handled);
            if again {
                break;
            }
        }
        outcomes
    }

    async fn handle_message(&self, message: &SqsMessage) -> Handled {
        let message_id = message.message_id.as_deref().unwrap_or_default();
        let Some(request) = message
            .body
            .as_deref()
            .and_then(|body| serde_json::from_str::<DeploymentRequest>(body).ok())
        else {
            // Left on the queue: its receives run out and the dead-letter queue keeps it.
            tracing::error!(message_id, "a message that is not a deployment request");
            return Handled::Again {
                next_attempt_unix: None,
            };
        };
        match self.dispatch(message, &request).await {
            Ok(handled) => handled,
            Err(err) => {
                tracing::warn!(
                    org = %request.organization_id,
                    deployment_id = %request.deployment_id,
                    error = %err,
                    "the deployment could not be handled; the queue hands it over again"
                );
                Handled::Again {
                    next_attempt_unix: None,
                }
            }
        }
    }

    async fn dispatch(&self, message: &SqsMessage, request: &DeploymentRequest) -> Result<Handled, DispatchError> {
        let store = &self.dispatcher.store;
        let (org, id) = (&request.organization_id, &request.deployment_id);
        let service = store.get_service(org, &request.service_id).await?;
        if service.as_ref().is_some_and(|s| s.service.spec.deploy_target.is_none()) {
            self.forward(message, request).await?;
            return Ok(Handled::Forwarded);
        }
        let record = match store.begin_attempt(org, id).await? {
            AttemptStart::Started(record) => record,
            AttemptStart::Superseded => {
                tracing::info!(org = %org, service_id = %request.service_id, deployment_id = %id, "deployment superseded");
                return Ok(Handled::Dropped { superseded: true });
            }
            AttemptStart::NotWaiting(DeploymentStatus::InProgress) => {
                // Begun by an instance that may still be running it, or died less than the
                // function's timeout ago: handed over again once it cannot be running.
                tracing::info!(deployment_id = %id, "deployment in progress elsewhere; handed over again later");
                return Ok(Handled::Again {
                    next_attempt_unix: Some(crate::util::now_unix() + STALE_ATTEMPT_SECS),
                });
            }
            AttemptStart::NotWaiting(status) => {
                tracing::info!(deployment_id = %id, status = status.as_str(), "deployment not waiting; nothing to do");
                return Ok(Handled::Dropped { superseded: false });
            }
            AttemptStart::NotDue { next_attempt_unix } => {
                // Back before its retry is due (its hiding failed, or the queue's visibility
                // timeout ran out first): hidden again until then, so `Retry-After` holds.
                tracing::info!(deployment_id = %id, next_attempt_unix, "retry not due yet; handed over again then");
                return Ok(Handled::NotDue { next_attempt_unix });
            }
            AttemptStart::NotFound => {
                tracing::warn!(org = %org, deployment_id = %id, "no such deployment; the message is dropped");
                return Ok(Handled::Dropped { superseded: false });
            }
        };
        // The service as read above, a moment before the begin: the attempt does not read it
        // again (a target changed in between is the next deployment's).
        Ok(match self.dispatcher.attempt_for(&record, service).await? {
            Delivery::Retried { next_attempt_unix } => Handled::Again {
                next_attempt_unix: Some(next_attempt_unix),
            },
            Delivery::Released => {
                // No target in the service the attempt used (not the case here: the service
                // read above has one, else the message was forwarded): pull consumers take it.
                self.forward(message, request).await?;
                Handled::Forwarded
            }
            done => Handled::Done(done),
        })
    }

    /// Send the message, unchanged, to the pull queue.
    async fn forward(&self, message: &SqsMessage, request: &DeploymentRequest) -> Result<(), DispatchError> {
        let body = message.body.clone().unwrap_or_default();
        let group = group_of(message)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{}/{}", request.organization_id, request.service_id));
        let dedup = message
            .attributes
            .get("MessageDeduplicationId")
            .cloned()
            .unwrap_or_else(|| request.deployment_id.clone());
        self.sqs
            .send_message()
            .queue_url(&self.pull_queue_url)
            .message_body(body)
            .message_group_id(group)
            .message_deduplication_id(dedup)
            .send()
            .await
            .map_err(|e| DispatchError::Forward(describe_sdk_error("send_message", &e)))?;
        tracing::info!(
            org = %request.organization_id,
            service_id = %request.service_id,
            deployment_id = %request.deployment_id,
            "forwarded to the pull queue: the service has no deploy target"
        );
        Ok(())
    }

    /// Hide `messages` until `next_attempt_unix`, so that the retry comes when it is due
    /// rather than after the queue's visibility timeout. Best effort: on failure the
    /// visibility timeout applies.
    async fn hide_until<'a>(&self, messages: impl Iterator<Item = &'a SqsMessage>, next_attempt_unix: i64) {
        let secs = next_attempt_unix
            .saturating_sub(now_unix())
            .clamp(0, MAX_VISIBILITY_SECS);
        let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = messages
            .enumerate()
            .filter_map(|(i, m)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .receipt_handle(m.receipt_handle.clone()?)
                    .visibility_timeout(i32::try_from(secs).unwrap_or(i32::MAX))
                    .build()
                    .ok()
            })
            .collect();
        if entries.is_empty() {
            return;
        }
        let result = self
            .sqs
            .change_message_visibility_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        match result {
            Ok(out) if out.failed().is_empty() => {}
            Ok(out) => tracing::warn!(
                failed = out.failed().len(),
                "some retries keep the queue's visibility timeout"
            ),
            Err(e) => tracing::warn!(
                error = %describe_sdk_error("change_message_visibility_batch", &e),
                "the retry keeps the queue's visibility timeout"
            ),
        }
    }
}

/// Why a message could not be handled: it is handed over again.
#[derive(Debug, thiserror::Error)]
enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("forwarding to the pull queue: {0}")]
    Forward(String),
}

/// The message's FIFO group.
fn group_of(message: &SqsMessage) -> Option<&str> {
    message.attributes.get("MessageGroupId").map(String::as_str)
}

fn count(tally: &mut DispatchTally, handled: &Handled) {
    let counter = match handled {
        Handled::Done(Delivery::Delivered) => &mut tally.delivered,
        Handled::Done(Delivery::Failed) => &mut tally.failed,
        Handled::Done(_) => return,
        Handled::Dropped { superseded: true } => &mut tally.superseded,
        Handled::Dropped { superseded: false } | Handled::NotDue { .. } => return,
        Handled::Forwarded => &mut tally.forwarded,
        Handled::Again {
            next_attempt_unix: Some(_),
        } => &mut tally.retried,
        Handled::Again {
            next_attempt_unix: None,
        } => &mut tally.errors,
    };
    *counter = counter.saturating_add(1);
}

/// The retry policy from `AUTODEPLOY_MAX_ATTEMPTS` and `AUTODEPLOY_MAX_DELIVERY_AGE`.
fn retry_policy(max_attempts: Option<String>, max_age: Option<String>) -> Result<RetryPolicy, String> {
    let mut policy = RetryPolicy::default();
    if let Some(raw) = max_attempts {
        policy.max_attempts = raw
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| format!("{MAX_ATTEMPTS_ENV} must be a whole number from 1 to 1000"))?;
    }
    if let Some(raw) = max_age {
        policy.max_age = parse_age(&raw).map_err(|e| format!("{MAX_DELIVERY_AGE_ENV}: {e}"))?;
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_comes_from_the_environment() {
        assert_eq!(retry_policy(None, None), Ok(RetryPolicy::default()));
        let policy = retry_policy(Some("3".to_owned()), Some("90m".to_owned()));
        assert_eq!(
            policy,
            Ok(RetryPolicy {
                max_attempts: 3,
                max_age: Duration::from_secs(5400)
            })
        );
        for bad in ["0", "1001", "ten"] {
            let err = retry_policy(Some(bad.to_owned()), None).err();
            assert!(err.is_some_and(|e| e.starts_with(MAX_ATTEMPTS_ENV)), "{bad}");
        }
        let err = retry_policy(None, Some("1w".to_owned())).err();
        assert!(err.is_some_and(|e| e.starts_with(MAX_DELIVERY_AGE_ENV)));
    }
}
