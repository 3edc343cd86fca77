//! Every delivery's account, in one place: what the deliveries history records, what the log
//! line says and what the metrics count, built the same way for every route and outcome.
//!
//! The route layer opens a [`DeliveryContext`] before the handler runs. A use case that writes
//! deployments records the delivery in that same write (and marks the context); for every
//! other answer — ignored, duplicate, refused, failed, dry run — [`finish`] records it after
//! the handler, from the [`DeliverySummary`] the response carries or the error it is.

use std::sync::atomic::{AtomicBool, Ordering};

use autodeploy_core::delivery::{DeliveryOutcome, DeliveryRecord, DeliverySource, HistoryDraft, SkippedService};

use super::image::ImageReport;
use super::push::PushReport;
use super::{Ignored, Reached};
use crate::store::Store;
use crate::util::{new_deployment_id, now_rfc3339};

/// A delivery being answered.
#[derive(Debug)]
pub struct DeliveryContext {
    pub organization_id: String,
    pub source: DeliverySource,
    pub id: String,
    pub received_at: String,
    /// The provider's delivery id, as far as the headers tell.
    pub delivery_id: Option<String>,
    pub dry_run: bool,
    recorded: AtomicBool,
}

impl DeliveryContext {
    pub fn new(org: &str, source: DeliverySource, delivery_id: Option<String>, dry_run: bool) -> Self {
        Self {
            organization_id: org.to_owned(),
            source,
            // Time-ordered, as deployment ids are: the history lists newest first by id.
            id: new_deployment_id(),
            received_at: now_rfc3339(),
            delivery_id,
            dry_run,
            recorded: AtomicBool::new(false),
        }
    }

    /// The delivery was recorded with the request's other writes.
    pub fn mark_recorded(&self) {
        self.recorded.store(true, Ordering::Release);
    }

    pub fn is_recorded(&self) -> bool {
        self.recorded.load(Ordering::Acquire)
    }
}

/// What a delivery announced, as its record names it: a push's repository, branch and
/// commit, or an image and its tag; nothing for a delivery refused before it was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announced {
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub commit_sha: Option<String>,
    pub image: Option<String>,
    pub tag: Option<String>,
}

/// What an answered delivery amounts to: the part of its record its answer decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySummary {
    pub outcome: DeliveryOutcome,
    pub reason: String,
    pub delivery_id: Option<String>,
    pub announced: Announced,
    pub queued: Vec<String>,
    pub skipped: Vec<SkippedService>,
    /// Why services the delivery reached were not deployed, where the skip reasons alone do
    /// not say: in the reason already when the answer's message says it.
    pub skip_details: String,
}

impl DeliverySummary {
    fn new(outcome: DeliveryOutcome, reason: String) -> Self {
        Self {
            outcome,
            reason,
            delivery_id: None,
            announced: Announced::default(),
            queued: Vec::new(),
            skipped: Vec::new(),
            skip_details: String::new(),
        }
    }

    /// A refused or failed delivery: `status` 4xx is `REJECTED`, 5xx `ERROR`.
    pub fn refused(status: u16, reason: &str) -> Self {
        let outcome = if status >= 500 {
            DeliveryOutcome::Error
        } else {
            DeliveryOutcome::Rejected
        };
        Self::new(outcome, reason.to_owned())
    }

    /// What a report's `reached` amounts to; the report adds what it says of the announcement.
    fn answered<Q, S>(reached: &Reached<Q, S>) -> Self {
        let Reached {
            ignored,
            message,
            dry_run,
            ..
        } = reached;
        let message = message.as_deref();
        let would_queue = reached.queued.len();
        let queued: Vec<String> = reached.queued.iter().filter_map(|q| q.deployment_id.clone()).collect();
        let skipped = reached.skipped_services();
        let (outcome, reason) = match *ignored {
            Some(reason) => (
                if reason == Ignored::DuplicateDelivery {
                    DeliveryOutcome::Duplicate
                } else {
                    DeliveryOutcome::Ignored
                },
                message.unwrap_or(reason.sentence()).to_owned(),
            ),
            None if !queued.is_empty() => (
                DeliveryOutcome::Queued,
                format!(
                    "{} deployment{} queued.",
                    queued.len(),
                    if queued.len() == 1 { "" } else { "s" }
                ),
            ),
            None if *dry_run && would_queue > 0 => (
                DeliveryOutcome::NothingToDeploy,
                format!(
                    "Dry run: {would_queue} deployment{} would be queued; nothing was.",
                    if would_queue == 1 { "" } else { "s" }
                ),
            ),
            None => {
                let why = message.map_or_else(|| autodeploy_core::delivery::nothing_deployed(&skipped), str::to_owned);
                // A dry run says so in every reason, as in the one that would have queued.
                let reason = if *dry_run { format!("Dry run: {why}") } else { why };
                (DeliveryOutcome::NothingToDeploy, reason)
            }
        };
        Self {
            queued,
            skipped,
            ..Self::new(outcome, reason)
        }
    }
}

impl From<&PushReport> for DeliverySummary {
    fn from(report: &PushReport) -> Self {
        Self {
            delivery_id: report.delivery_id.clone(),
            announced: Announced {
                repository: report.repository.clone(),
                branch: report.branch.clone(),
                commit_sha: report.commit_sha.clone(),
                ..Announced::default()
            },
            ..Self::answered(&report.reached)
        }
    }
}

impl From<&ImageReport> for DeliverySummary {
    fn from(report: &ImageReport) -> Self {
        let image = report.image_name.as_ref().map(|path| match &report.registry {
            Some(registry) => format!("{registry}/{path}"),
            None => path.clone(),
        });
        let mut summary = Self {
            announced: Announced {
                image,
                tag: report.tag.clone(),
                ..Announced::default()
            },
            skip_details: report.refusals.clone(),
            ..Self::answered(&report.reached)
        };
        // An answer that queued nothing says why in its message, refusals included; one that
        // queued something (or would have) says it in the history only.
        if report.reached.message.is_none() {
            summary.reason.push_str(&report.refusals);
        }
        summary
    }
}

/// The delivery's record: its context, completed by its summary and the status answered.
pub fn record_of(context: &DeliveryContext, summary: DeliverySummary, http_status: u16) -> DeliveryRecord {
    let Announced {
        repository,
        branch,
        commit_sha,
        image,
        tag,
    } = summary.announced;
    let delivery_id = summary.delivery_id.or_else(|| context.delivery_id.clone());
    // A refused delivery is not authenticated: its id is kept only when it reads as one, so
    // that no one can write a sentence into an organization's history.
    let delivery_id = match summary.outcome {
        DeliveryOutcome::Rejected => delivery_id.filter(|id| autodeploy_core::delivery::reads_as_an_id(id)),
        _ => delivery_id,
    };
    DeliveryRecord {
        id: context.id.clone(),
        organization_id: context.organization_id.clone(),
        received_at: context.received_at.clone(),
        source: context.source,
        delivery_id,
        http_status,
        outcome: summary.outcome,
        reason: summary.reason,
        repository,
        branch,
        commit_sha,
        image,
        tag,
        queued: summary.queued,
        skipped: summary.skipped,
        dry_run: context.dry_run,
    }
}

/// The draft a use case writes with its deployments: the delivery as far as the plan knows it.
pub fn draft_of(context: &DeliveryContext, summary: DeliverySummary) -> HistoryDraft {
    // Completed by what the write records: a write of candidates says anew why nothing was
    // queued, if so; without candidates the answer's reason stands.
    let keeps_reason = summary.outcome == DeliveryOutcome::NothingToDeploy;
    let skip_details = summary.skip_details.clone();
    let mut record = record_of(context, summary, 0);
    if !keeps_reason {
        record.reason.clear();
    }
    HistoryDraft {
        record,
        slots: Vec::new(),
        skip_details,
    }
}

/// Log one line for the delivery and, unless its use case recorded it already, add it to the
/// history. Never fails the answer: a store that does not take the record is logged.
pub async fn finish(store: &dyn Store, context: &DeliveryContext, summary: &DeliverySummary, http_status: u16) {
    let mut kept = context.is_recorded();
    if !kept {
        match store
            .record_delivery(&record_of(context, summary.clone(), http_status))
            .await
        {
            Ok(recorded) => kept = recorded,
            Err(err) => tracing::warn!(error = %err, "the delivery could not be added to the history"),
        }
    }
    // What the record says, read from where it comes from. Fields the delivery does not have
    // (a git push's image, an image's branch, the reason of one that deployed) are left out
    // rather than logged empty.
    let announced = &summary.announced;
    tracing::info!(
        org = %context.organization_id,
        source = context.source.as_str(),
        delivery_id = summary.delivery_id.as_deref().or(context.delivery_id.as_deref()),
        outcome = summary.outcome.as_str(),
        status = http_status,
        reason = Some(summary.reason.as_str()).filter(|reason| !reason.is_empty()),
        repository = announced.repository.as_deref(),
        branch = announced.branch.as_deref(),
        commit_sha = announced.commit_sha.as_deref(),
        image = announced.image.as_deref(),
        tag = announced.tag.as_deref(),
        queued = summary.queued.len(),
        // The deployments, to go from the log to them (up to 10: a wide push's are in the
        // history, not in one line of the log).
        deployment_ids = (1..=10).contains(&summary.queued.len()).then(|| summary.queued.join(",")),
        skipped = summary.skipped.len(),
        dry_run = context.dry_run,
        in_history = kept,
        "delivery"
    );
}
