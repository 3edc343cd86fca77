//! Delivering deployments to deploy targets (SPEC "Deploy targets and the dispatcher").
//!
//! The pure parts (the target model, the request of each target type, what an attempt's
//! result means and when to retry) are `autodeploy_core::target`; [`send`] makes the
//! attempts; [`Dispatcher::attempt`] is one attempt at one deployment, from the service's
//! target as it is now to the recorded outcome, run by the standalone server's loop
//! ([`standalone`]); the `dispatcher` Lambda function runs [`Dispatcher::attempt_for`] with the
//! service it read to route the message.

pub mod send;
#[cfg(feature = "sqlite")]
pub mod standalone;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use autodeploy_core::deployment::{DeploymentRecord, DeploymentStatus};
use autodeploy_core::target::delivery::{MIN_RETRY_DELAY, NextStep, RetryPolicy, next_step};
use autodeploy_core::target::request::build_request;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::store::{AttemptEnd, Store, StoreResult, StoredService};
use crate::util::{created_after, now_unix};
use send::Sender;

/// What one attempt came to, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// Tried again at `next_attempt_unix` (or later).
    Retried {
        next_attempt_unix: i64,
    },
    Failed,
    /// The service has no target any more: left for pull consumers.
    Released,
}

/// One attempt at a deployment the caller took (`IN_PROGRESS`).
#[derive(Clone)]
pub struct Dispatcher {
    pub store: Arc<dyn Store>,
    pub sender: Sender,
    pub policy: RetryPolicy,
}

impl Dispatcher {
    /// Deliver `record` to its service's target as it is now, then record how it ended.
    pub async fn attempt(&self, record: &DeploymentRecord) -> StoreResult<Delivery> {
        let request = &record.request;
        let service = self
            .store
            .get_service(&request.organization_id, &request.service_id)
            .await?;
        self.attempt_for(record, service).await
    }

    /// [`Self::attempt`] with the service (`None`: deleted) as the caller read it just before
    /// it took the deployment, which spares reading it again.
    pub async fn attempt_for(
        &self,
        record: &DeploymentRecord,
        service: Option<StoredService>,
    ) -> StoreResult<Delivery> {
        let end = self.deliver(record, service).await?;
        let request = &record.request;
        let ended = self
            .store
            .end_attempt(&request.organization_id, &request.deployment_id, &end)
            .await?;
        // What was recorded, which the service's changes meanwhile may have made other than
        // the attempt's own end: what the log and the metrics tell.
        let delivery = match (&end, ended.as_ref().map(|r| (r.status, r.next_attempt_at.is_some()))) {
            (_, Some((DeploymentStatus::Delivered, _))) => Delivery::Delivered,
            (_, Some((DeploymentStatus::Failed, _))) => Delivery::Failed,
            (_, Some((DeploymentStatus::Queued, false))) => Delivery::Released,
            (AttemptEnd::Delivered, _) => Delivery::Delivered,
            (AttemptEnd::Failed { .. }, _) => Delivery::Failed,
            (AttemptEnd::Retry { next_attempt_unix, .. }, _) => Delivery::Retried {
                next_attempt_unix: *next_attempt_unix,
            },
            (AttemptEnd::Release { .. }, _) => Delivery::Released,
        };
        // None for a delivered one: the log line then has no `error` field at all.
        let error = match (&end, ended.as_ref().and_then(|r| r.last_error.as_deref())) {
            (AttemptEnd::Delivered, _) => None,
            (_, Some(recorded)) => Some(recorded),
            (AttemptEnd::Failed { error } | AttemptEnd::Retry { error, .. }, None) => Some(error.as_str()),
            (AttemptEnd::Release { note }, None) => Some(note.as_str()),
        };
        let (outcome, next_attempt_unix) = match delivery {
            Delivery::Delivered => ("delivered", None),
            Delivery::Retried { next_attempt_unix } => ("retry", Some(next_attempt_unix)),
            Delivery::Failed => ("failed", None),
            Delivery::Released => ("released", None),
        };
        // A deployment that failed for good is what an operator watches for: a warning.
        macro_rules! attempt_event {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    org = %request.organization_id,
                    service_id = %request.service_id,
                    deployment_id = %request.deployment_id,
                    attempt = record.attempts,
                    outcome,
                    next_attempt_unix,
                    error,
                    "deployment attempt"
                )
            };
        }
        if delivery == Delivery::Failed {
            attempt_event!(tracing::Level::WARN);
        } else {
            attempt_event!(tracing::Level::INFO);
        }
        Ok(delivery)
    }

    /// The attempt itself: how it ended, not yet recorded.
    async fn deliver(&self, record: &DeploymentRecord, service: Option<StoredService>) -> StoreResult<AttemptEnd> {
        let request = &record.request;
        let org = &request.organization_id;
        // A service created after the deployment was requested is another one of the same id:
        // the service it was for was deleted meanwhile.
        let service = service.filter(|s| !created_after(&s.service.created_at, &request.requested_at));
        let Some(service) = service else {
            return Ok(AttemptEnd::Failed {
                // As the standalone server says of the waiting ones it cancels.
                error: crate::store::CANCELLED_SERVICE_DELETED.to_owned(),
            });
        };
        let Some(target_ref) = service.service.spec.deploy_target.clone() else {
            return Ok(AttemptEnd::Release {
                note: "the service has no deploy target any more; pull consumers take it".to_owned(),
            });
        };
        let Some(target) = self.store.get_target(org, &target_ref.target_id).await? else {
            return Ok(AttemptEnd::Failed {
                error: format!("the deploy target {} does not exist", target_ref.target_id),
            });
        };
        let now = now_unix();
        let built = build_request(
            &target.spec,
            request,
            target_ref.external_id.as_deref(),
            u64::try_from(now).unwrap_or(0),
        );
        let http_request = match built {
            Ok(http_request) => http_request,
            Err(error) => return Ok(AttemptEnd::Failed { error }),
        };
        let outcome = self.sender.send_to(&target.spec, http_request).await;
        let age = age_of(&request.requested_at);
        Ok(
            match next_step(&outcome, record.attempts, age, &self.policy, rand::random::<f64>()) {
                NextStep::Delivered => AttemptEnd::Delivered,
                NextStep::Failed(error) => AttemptEnd::Failed { error },
                // Counted from the answer (a `Retry-After` is), not from the send.
                NextStep::RetryIn { delay, error } => AttemptEnd::Retry {
                    error,
                    next_attempt_unix: due_unix(SystemTime::now(), delay),
                },
            },
        )
    }
}

/// The Unix second from which a retry `delay` after `now` is due. The schedule is in whole
/// seconds and a deployment is due once the current second reaches it, so the instant is
/// rounded up: a retry is never made sooner than its delay (nor than 1 s).
fn due_unix(now: SystemTime, delay: Duration) -> i64 {
    let due = now.duration_since(UNIX_EPOCH).unwrap_or_default() + delay.max(MIN_RETRY_DELAY);
    let secs = due.as_secs() + u64::from(due.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// How long ago a deployment was recorded (`requested_at`); zero when unreadable.
fn age_of(requested_at: &str) -> Duration {
    OffsetDateTime::parse(requested_at, &Rfc3339)
        .ok()
        .map(|at| OffsetDateTime::now_utc() - at)
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_is_due_no_sooner_than_its_delay() {
        let at = |secs: u64, nanos: u32| UNIX_EPOCH + Duration::new(secs, nanos);
        // Late in a second: the whole delay still lies ahead.
        assert_eq!(due_unix(at(100, 999_000_000), Duration::from_secs(2)), 103);
        assert_eq!(due_unix(at(100, 0), Duration::from_secs(2)), 102);
        assert_eq!(due_unix(at(100, 1), Duration::from_millis(1500)), 102);
        assert_eq!(due_unix(at(100, 500_000_000), Duration::ZERO), 102);
    }
}
