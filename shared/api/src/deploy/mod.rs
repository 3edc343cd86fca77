//! The use cases that turn an announcement into deployments: a git delivery
//! ([`push::deploy_pushes`]) and a new image tag ([`image::deploy_image`]). Each takes parsed,
//! verified input and returns a report (SPEC's response body) or a [`DeployError`]; the HTTP
//! handlers and the ECR event handler only extract, call and render.

pub mod consume;
pub mod history;
pub mod image;
pub mod push;
pub mod redeploy;

use std::sync::Arc;
use std::time::Duration;

use autodeploy_core::matching::SkipReason;
use serde::Serialize;

use crate::metrics::Tally;
use crate::pipeline::{Outcome, record_and_send};
use crate::store::{Batch, DeploymentQueue, Store, StoreError};
use crate::turns::WriteTurns;

/// What a use case needs: where deployments are recorded and sent.
#[derive(Clone)]
pub struct Deployer {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn DeploymentQueue>,
    /// See [`crate::pipeline::IN_FLIGHT_HORIZON`].
    pub in_flight_horizon: Duration,
    /// Writes of one record take turns in this process (settings writes share them).
    pub turns: Arc<WriteTurns>,
}

impl Deployer {
    /// Record and send a request's deployments, remembering its delivery and the delivery's
    /// history with them.
    pub async fn record(&self, batch: Batch<'_>) -> Result<Vec<Outcome>, StoreError> {
        record_and_send(self.store.as_ref(), self.queue.as_ref(), batch, self.in_flight_horizon).await
    }
}

/// Why a delivery could not be processed. Client mistakes are caught before a use case runs;
/// what remains is the store's.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeployError {
    /// Nothing (more) was recorded; a retry starts clean for what failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The services kept changing under the request (many concurrent writers).
    #[error("the matching services are being changed by many requests at once; retry shortly")]
    Contention,
}

/// SPEC's `ignored` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Ignored {
    TagPush,
    BranchDeleted,
    Ping,
    UnsupportedEvent,
    DuplicateDelivery,
}

impl Ignored {
    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::TagPush => "TAG_PUSH",
            Ignored::BranchDeleted => "BRANCH_DELETED",
            Ignored::Ping => "PING",
            Ignored::UnsupportedEvent => "UNSUPPORTED_EVENT",
            Ignored::DuplicateDelivery => "DUPLICATE_DELIVERY",
        }
    }

    /// Why a git delivery ignored for this reason deploys nothing: its answer's `message`, and
    /// its history entry's reason.
    pub fn sentence(self) -> &'static str {
        match self {
            Ignored::TagPush => "A tag was pushed or deleted: only branch pushes deploy.",
            Ignored::BranchDeleted => "A branch deletion deploys nothing.",
            Ignored::Ping => "A ping: the provider is checking the webhook.",
            Ignored::UnsupportedEvent => "Not a push event: only pushes deploy.",
            Ignored::DuplicateDelivery => "This delivery was processed before; a redelivery deploys nothing.",
        }
    }
}

impl From<autodeploy_core::push::IgnoredReason> for Ignored {
    fn from(reason: autodeploy_core::push::IgnoredReason) -> Self {
        use autodeploy_core::push::IgnoredReason;
        match reason {
            IgnoredReason::TagPush => Ignored::TagPush,
            IgnoredReason::BranchDeleted => Ignored::BranchDeleted,
            IgnoredReason::Ping => Ignored::Ping,
            IgnoredReason::UnsupportedEvent => Ignored::UnsupportedEvent,
        }
    }
}

/// An entry of a report's `queued`: a deployment queued (or, in a dry run, that would be),
/// and what the announcement says of it (`D`: the commit, or the tag).
#[derive(Debug, Clone, Serialize)]
pub struct Queued<D> {
    pub service_id: String,
    pub deployment_id: Option<String>,
    #[serde(flatten)]
    pub detail: D,
    pub status: EntryStatus,
}

/// An entry of a report's `skipped`: a service the announcement reached that does not take
/// it, why, and what the announcement says of it (`D`).
#[derive(Debug, Clone, Serialize)]
pub struct Skipped<D> {
    pub service_id: String,
    pub reason: SkipReason,
    #[serde(flatten)]
    pub detail: D,
}

/// What every report says after naming its announcement: SPEC's `queued`, `skipped`,
/// `ignored`, `message` and `dry_run`, the same for a git delivery and an image tag.
#[derive(Debug, Clone, Serialize)]
pub struct Reached<Q, S> {
    pub queued: Vec<Queued<Q>>,
    pub skipped: Vec<Skipped<S>>,
    pub ignored: Option<Ignored>,
    /// Why nothing was queued or skipped, or why the announcement was ignored.
    pub message: Option<String>,
    pub dry_run: bool,
}

impl<Q, S> Reached<Q, S> {
    pub fn new(dry_run: bool) -> Self {
        Self {
            queued: Vec::new(),
            skipped: Vec::new(),
            ignored: None,
            message: None,
            dry_run,
        }
    }

    /// Whether anything was queued (not merely would be, in a dry run): a 202 then.
    /// The skipped entries as the deliveries history names them.
    pub fn skipped_services(&self) -> Vec<autodeploy_core::delivery::SkippedService> {
        self.skipped
            .iter()
            .map(|s| autodeploy_core::delivery::SkippedService {
                service_id: s.service_id.clone(),
                reason: s.reason.as_str().to_owned(),
            })
            .collect()
    }

    pub fn queued_any(&self) -> bool {
        !self.dry_run && !self.queued.is_empty()
    }

    /// Entries in service id order, whatever order lookups and retries produced them in.
    pub fn sort(&mut self) {
        self.queued.sort_by(|a, b| a.service_id.cmp(&b.service_id));
        self.skipped.sort_by(|a, b| a.service_id.cmp(&b.service_id));
    }

    /// What the metrics count of it.
    pub fn tally(&self) -> Tally {
        Tally {
            ignored: self.ignored.map(Ignored::as_str),
            dry_run: self.dry_run,
            ..Tally::of(self.queued.iter().map(|q| q.status.as_str()), self.skipped.len())
        }
    }
}

/// The `status` of an entry of `queued`: where the deployment stands, or `DRY_RUN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EntryStatus {
    Queued,
    Pending,
    DryRun,
}

impl EntryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryStatus::Queued => "QUEUED",
            EntryStatus::Pending => "PENDING",
            EntryStatus::DryRun => "DRY_RUN",
        }
    }

    fn of(status: autodeploy_core::deployment::DeploymentStatus) -> Self {
        match status {
            autodeploy_core::deployment::DeploymentStatus::Pending => EntryStatus::Pending,
            _ => EntryStatus::Queued,
        }
    }
}
