//! The deployment request: the queue message the deployment engine consumes, and the
//! deployment log entry that doubles as the outbox.

use serde::{Deserialize, Serialize};

use crate::model::ServiceKind;
use crate::provider::GitProvider;
use crate::registry_events::ImageSourceKind;

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
    /// The SQS FIFO message group: one service's deployments stay in order.
    pub fn message_group(&self) -> String {
        format!("{}/{}", self.organization_id, self.service_id)
    }
}

/// Where a recorded deployment stands: recorded only, or handed to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentStatus {
    Pending,
    Queued,
}

impl DeploymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Pending => "PENDING",
            DeploymentStatus::Queued => "QUEUED",
        }
    }
}

/// A deployment log entry: the request as queued, plus its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    #[serde(flatten)]
    pub request: DeploymentRequest,
    pub status: DeploymentStatus,
}
