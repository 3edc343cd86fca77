//! The deployment request: the queue message the deployment engine consumes, and the
//! deployment log entry that doubles as the outbox.

use serde::{Deserialize, Serialize};

use crate::model::{Service, ServiceKind};
use crate::provider::GitProvider;
use crate::registry::ImageSourceKind;

pub const SCHEMA: &str = "autodeploy.deployment-request.v1";

/// What made a deployment happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Trigger {
    GitPush {
        provider: GitProvider,
        repository: String,
        branch: String,
        before: String,
        commit_sha: String,
        delivery_id: Option<String>,
        pusher: Option<String>,
    },
    ImageTag {
        source: ImageSourceKind,
        registry: String,
        image_name: String,
        previous_tag: Option<String>,
        tag: String,
    },
}

/// SPEC "Deployment request (queue message)".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRequest {
    pub schema: String,
    pub deployment_id: String,
    pub organization_id: String,
    pub environment_id: String,
    pub service_id: String,
    pub service_kind: ServiceKind,
    pub git_commit_id: Option<String>,
    pub image_tag: Option<String>,
    pub trigger: Trigger,
    pub requested_at: String,
}

impl DeploymentRequest {
    /// Deployment `deployment_id` of `service` (of organization `org`) for `trigger`: the
    /// commit it names, or the image tag.
    pub fn new(deployment_id: String, org: &str, service: &Service, trigger: Trigger, requested_at: &str) -> Self {
        let (git_commit_id, image_tag) = match &trigger {
            Trigger::GitPush { commit_sha, .. } => (Some(commit_sha.clone()), None),
            Trigger::ImageTag { tag, .. } => (None, Some(tag.clone())),
        };
        Self {
            schema: SCHEMA.to_owned(),
            deployment_id,
            organization_id: org.to_owned(),
            environment_id: service.spec.environment_id.clone(),
            service_id: service.id.clone(),
            service_kind: service.spec.kind,
            git_commit_id,
            image_tag,
            trigger,
            requested_at: requested_at.to_owned(),
        }
    }

    /// The SQS FIFO message group: one service's deployments stay in order.
    pub fn message_group(&self) -> String {
        format!("{}/{}", self.organization_id, self.service_id)
    }
}

/// Where a recorded deployment stands (SPEC "Deployment lifecycle").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentStatus {
    /// Recorded; not yet on the queue (the queue did not answer).
    Pending,
    /// On the queue, waiting for a consumer or for the dispatcher.
    Queued,
    /// Leased by a consumer, or being delivered to its target.
    InProgress,
    /// Acknowledged by a consumer, or accepted by the target.
    Delivered,
    /// Refused for good, or every attempt failed.
    Failed,
    /// A newer deployment of the same service was queued before this one was taken.
    Superseded,
}

impl DeploymentStatus {
    pub const ALL: [DeploymentStatus; 6] = [
        DeploymentStatus::Pending,
        DeploymentStatus::Queued,
        DeploymentStatus::InProgress,
        DeploymentStatus::Delivered,
        DeploymentStatus::Failed,
        DeploymentStatus::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Pending => "PENDING",
            DeploymentStatus::Queued => "QUEUED",
            DeploymentStatus::InProgress => "IN_PROGRESS",
            DeploymentStatus::Delivered => "DELIVERED",
            DeploymentStatus::Failed => "FAILED",
            DeploymentStatus::Superseded => "SUPERSEDED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// `DELIVERED`, `FAILED` and `SUPERSEDED` never change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeploymentStatus::Delivered | DeploymentStatus::Failed | DeploymentStatus::Superseded
        )
    }

    /// Still to be taken: recorded or on the queue.
    pub fn is_waiting(self) -> bool {
        matches!(self, DeploymentStatus::Pending | DeploymentStatus::Queued)
    }
}

/// What an engine reported about the real deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResultStatus {
    Succeeded,
    Failed,
}

/// `POST …/deployments/{id}/result`, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentResult {
    pub status: ResultStatus,
    pub message: String,
    pub url: Option<String>,
    pub reported_at: String,
}

impl DeploymentResult {
    /// Whether `other` reports the same thing (a repeat of the same report is accepted).
    pub fn same_report(&self, other: &DeploymentResult) -> bool {
        self.status == other.status && self.message == other.message && self.url == other.url
    }
}

/// A deployment log entry: the request as queued, plus where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    #[serde(flatten)]
    pub request: DeploymentRequest,
    pub status: DeploymentStatus,
    /// Times the deployment was offered to a consumer or tried on its target.
    pub attempts: u32,
    /// Why the last attempt failed, as a sentence (never a secret).
    pub last_error: Option<String>,
    pub updated_at: String,
    /// When a retry is due, while the deployment waits for one.
    pub next_attempt_at: Option<String>,
    pub result: Option<DeploymentResult>,
}

impl DeploymentRecord {
    /// A deployment just recorded in `status`.
    pub fn new(request: DeploymentRequest, status: DeploymentStatus) -> Self {
        let updated_at = request.requested_at.clone();
        Self {
            request,
            status,
            attempts: 0,
            last_error: None,
            updated_at,
            next_attempt_at: None,
            result: None,
        }
    }
}

/// Plans the sending of `requests` in batches of at most `batch_size`, in their order, as
/// waves: the batches of one wave share no message group, so they may be sent at once, and a
/// batch holding a group that an earlier batch holds sits in a later wave than that batch, so
/// one service's messages still reach the queue in order. A push (one deployment per service)
/// is one wave; the relay's backlog of twelve deployments of one service is two.
/// Each batch is a range of indexes into `requests`.
pub fn batch_waves(requests: &[DeploymentRequest], batch_size: usize) -> Vec<Vec<std::ops::Range<usize>>> {
    let batch_size = batch_size.max(1);
    // For each group, the first wave a later batch holding it may join.
    let mut next_wave: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut waves: Vec<Vec<std::ops::Range<usize>>> = Vec::new();
    for start in (0..requests.len()).step_by(batch_size) {
        let range = start..(start + batch_size).min(requests.len());
        let groups: Vec<String> = requests[range.clone()]
            .iter()
            .map(DeploymentRequest::message_group)
            .collect();
        let wave = groups
            .iter()
            .filter_map(|g| next_wave.get(g))
            .copied()
            .max()
            .unwrap_or(0);
        for group in groups {
            next_wave.insert(group, wave + 1);
        }
        if waves.len() <= wave {
            waves.resize_with(wave + 1, Vec::new);
        }
        waves[wave].push(range);
    }
    waves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(service: &str) -> DeploymentRequest {
        DeploymentRequest {
            schema: SCHEMA.to_owned(),
            deployment_id: format!("d-{service}"),
            organization_id: "org".to_owned(),
            environment_id: "env".to_owned(),
            service_id: service.to_owned(),
            service_kind: ServiceKind::Application,
            git_commit_id: None,
            image_tag: Some("1.0.0".to_owned()),
            trigger: Trigger::ImageTag {
                source: ImageSourceKind::Api,
                registry: "docker.io".to_owned(),
                image_name: "library/nginx".to_owned(),
                previous_tag: None,
                tag: "1.0.0".to_owned(),
            },
            requested_at: "2026-01-01T00:00:00Z".to_owned(),
        }
    }

    fn requests(services: &[&str]) -> Vec<DeploymentRequest> {
        services.iter().map(|s| request(s)).collect()
    }

    #[test]
    fn distinct_services_are_one_wave_of_batches() {
        let names: Vec<String> = (0..25).map(|i| format!("s{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(batch_waves(&requests(&names), 10), vec![vec![0..10, 10..20, 20..25]]);
    }

    #[test]
    fn a_service_in_two_batches_orders_them() {
        // Twelve deployments of one service: the second batch waits for the first.
        let r = requests(&["api"; 12]);
        assert_eq!(batch_waves(&r, 10), vec![vec![0..10], vec![10..12]]);
    }

    #[test]
    fn only_batches_sharing_a_service_wait() {
        // Batches: [a b] [c d] [a e] [f g]: the third shares `a` with the first.
        let r = requests(&["a", "b", "c", "d", "a", "e", "f", "g"]);
        assert_eq!(batch_waves(&r, 2), vec![vec![0..2, 2..4, 6..8], vec![4..6]]);
        // A chain: [a] [a] [a] goes one wave at a time.
        assert_eq!(
            batch_waves(&requests(&["a", "a", "a"]), 1),
            vec![vec![0..1], vec![1..2], vec![2..3]]
        );
    }

    #[test]
    fn a_later_batch_waits_for_the_latest_wave_holding_its_service() {
        // [a] [a] [b] [a b]: `b` is first in wave 0, `a` last in wave 1, so the fourth goes in
        // wave 2.
        let r = requests(&["a", "a", "b", "a", "b"]);
        assert_eq!(batch_waves(&r, 1), vec![vec![0..1, 2..3], vec![1..2, 4..5], vec![3..4]]);
        let r = requests(&["a", "a", "b", "a", "b", "x"]);
        assert_eq!(batch_waves(&r, 2), vec![vec![0..2], vec![2..4], vec![4..6]]);
    }

    #[test]
    fn nothing_to_send_is_no_wave() {
        assert!(batch_waves(&[], 10).is_empty());
        assert_eq!(batch_waves(&requests(&["a"]), 0), vec![vec![0..1]]);
    }
}
