//! A verified git delivery: match its pushes, record and send one deployment per service
//! that takes it, exactly once, and report what happened.

use std::collections::HashMap;
use std::sync::Arc;

use autodeploy_core::delivery::HistoryDraft;
use autodeploy_core::deployment::{DeploymentRequest, Trigger};
use autodeploy_core::matching::{SkipReason, is_replay, push_mark};
use autodeploy_core::plan::{ServiceView, delivery_keys, plan_push, planning_work};
use autodeploy_core::provider::GitProvider;
use autodeploy_core::push::Push;
use serde::Serialize;

use super::history::{DeliveryContext, DeliverySummary, draft_of};
use super::{DeployError, Deployer, EntryStatus, Ignored, Queued, Reached, Skipped};
use crate::pipeline::Outcome;
use crate::store::{Batch, Candidate, DeliveryKey, Guard, StoreError, StoredService};
use crate::util::{new_deployment_id, now_rfc3339, now_unix};

impl ServiceView for StoredService {
    fn service(&self) -> &autodeploy_core::model::Service {
        &self.service
    }
}

/// What a queued entry says of its push: the branch and the commit.
#[derive(Debug, Clone, Serialize)]
pub struct Commit {
    pub branch: String,
    pub commit_sha: String,
}

/// What a skipped entry says of its push: the branch, and in a delivery that updates several
/// branches its commit too (the answer's top-level `commit_sha` is the first push's).
#[derive(Debug, Clone, Serialize)]
pub struct OnBranch {
    pub branch: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_sha: Option<String>,
}

impl OnBranch {
    fn of(push: &Push, several: bool) -> Self {
        Self {
            branch: push.branch.clone(),
            commit_sha: several.then(|| push.after.clone()),
        }
    }
}

/// A deployment queued (or, in a dry run, that would be).
pub type QueuedEntry = Queued<Commit>;

pub type SkippedEntry = Skipped<OnBranch>;

/// SPEC's push response.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    pub delivery_id: Option<String>,
    pub provider: GitProvider,
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub commit_sha: Option<String>,
    pub files: Option<&'static str>,
    /// `message` is for the person reading the provider's delivery log.
    #[serde(flatten)]
    pub reached: Reached<Commit, OnBranch>,
}

impl PushReport {
    pub fn new(provider: GitProvider, delivery_id: Option<String>, dry_run: bool) -> Self {
        Self {
            delivery_id,
            provider,
            repository: None,
            branch: None,
            commit_sha: None,
            files: None,
            reached: Reached::new(dry_run),
        }
    }

    /// Nothing to look at: answered 200 with `ignored` set, and `message` saying why.
    pub fn ignored(mut self, reason: Ignored) -> Self {
        self.reached.ignored = Some(reason);
        self.reached.message = Some(reason.sentence().to_owned());
        self
    }

    /// Whether anything was queued: a 202 then.
    pub fn queued_any(&self) -> bool {
        self.reached.queued_any()
    }
}

/// A verified delivery of git provider `provider` to organization `org`.
pub struct PushDelivery<'a> {
    pub org: &'a str,
    pub provider: GitProvider,
    pub delivery_id: Option<String>,
    pub pushes: Vec<Push>,
    pub dry_run: bool,
    /// The delivery's account, recorded in the same write as its deployments.
    pub history: Option<&'a DeliveryContext>,
}

/// How long a processed delivery id is remembered (SPEC "Once only": 3 days).
pub const DELIVERY_RETENTION_SECS: i64 = 3 * 24 * 60 * 60;

/// Whether the delivery id was processed before (then the delivery is answered
/// `DUPLICATE_DELIVERY` and nothing else is looked at). Not looked up when the store checks
/// it in the write that records the delivery, which then answers the same: a delivery reads
/// one thing less, and only a copy of one processed does the matching again. A dry run,
/// which records nothing, always looks it up.
pub async fn seen_before(
    deployer: &Deployer,
    org: &str,
    provider: GitProvider,
    delivery_id: Option<&str>,
    dry_run: bool,
) -> Result<bool, DeployError> {
    match delivery_id {
        Some(_) if !dry_run && deployer.store.remembers_deliveries_in_record() => Ok(false),
        Some(id) => Ok(deployer
            .store
            .delivery_seen(org, provider.slug(), id, now_unix())
            .await?),
        None => Ok(false),
    }
}

/// Whether a real delivery of `push` would find it queued already for `stored` (the replay
/// rule), read without writing: for a dry run. The service is read again for its last push
/// when the services found by repository were kept in memory.
async fn is_replayed(deployer: &Deployer, org: &str, stored: &StoredService, push: &Push) -> Result<bool, DeployError> {
    let read_again;
    let stored = if deployer.store.services_kept_in_memory() {
        read_again = deployer.store.get_service(org, &stored.service.id).await?;
        match &read_again {
            Some(stored) => stored,
            None => return Ok(false),
        }
    } else {
        stored
    };
    let mark = push_mark(push);
    let last_push = stored.last_push.as_deref();
    // The last push again needs no read.
    let queued_before = last_push == Some(mark.as_str())
        || deployer
            .store
            .push_queued_before(org, &stored.service.id, &mark)
            .await?;
    Ok(is_replay(&mark, &push.before, last_push, queued_before))
}

/// The most [`planning_work`] a delivery is planned with in place, on the thread that serves
/// it and others: a few milliseconds at most. A long push reaching hundreds of services with
/// long restriction lists costs seconds, which would hold every request that thread serves
/// (and the server's accepting of new connections, when it sits there).
pub const PLANNING_IN_PLACE_UP_TO: usize = 4 * 1024 * 1024;

/// Run `work`, which may take long, without holding the other requests of this thread: on a
/// multi-threaded runtime, tokio hands them to another thread first (`block_in_place`).
/// Elsewhere (a Lambda function, which serves one request at a time; a current-thread
/// runtime) it runs in place.
fn without_holding_other_requests<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|runtime| runtime.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Match every push of the delivery, record and send, and report.
pub async fn deploy_pushes(deployer: &Deployer, delivery: PushDelivery<'_>) -> Result<PushReport, DeployError> {
    let PushDelivery {
        org,
        provider,
        delivery_id,
        pushes,
        dry_run,
        history,
    } = delivery;
    let mut report = PushReport::new(provider, delivery_id.clone(), dry_run);

    // One index query per distinct repository key of the whole delivery.
    let mut by_key: HashMap<String, Arc<[StoredService]>> = HashMap::new();
    let keys = delivery_keys(&pushes);
    for key in keys.distinct() {
        let services = deployer.store.services_by_repository(org, key).await?;
        by_key.insert(key.to_owned(), services);
    }
    let plan = if planning_work(&pushes, &by_key) > PLANNING_IN_PLACE_UP_TO {
        without_holding_other_requests(|| plan_push(&pushes, &keys, &by_key))
    } else {
        plan_push(&pushes, &keys, &by_key)
    };
    if let Some(first) = pushes.first() {
        report.repository = plan.repositories.first().cloned();
        report.branch = Some(first.branch.clone());
        report.commit_sha = Some(first.after.clone());
        report.files = Some(if first.files.is_known() { "KNOWN" } else { "UNKNOWN" });
    }
    report.reached.message = plan.nothing_to_deploy(org, &pushes);

    // A dry run reads what a real delivery's guard checks in its write: the replay rule.
    let mut replays = vec![false; plan.decisions.len()];
    if dry_run {
        for (decision, replay) in plan.decisions.iter().zip(&mut replays) {
            if decision.verdict.is_ok() {
                *replay = is_replayed(deployer, org, decision.stored, &pushes[decision.push]).await?;
            }
        }
    }

    let requested_at = now_rfc3339();
    let several = pushes.len() > 1;
    let mut candidates = Vec::new();
    // Where each candidate stands among the skipped entries, for the history's order.
    let mut slots = Vec::new();
    for (decision, replay) in plan.decisions.iter().zip(replays) {
        let push = &pushes[decision.push];
        let service = &decision.stored.service;
        match decision.verdict {
            Err(reason) => report.reached.skipped.push(SkippedEntry {
                service_id: service.id.clone(),
                reason,
                detail: OnBranch::of(push, several),
            }),
            Ok(()) if replay => report.reached.skipped.push(SkippedEntry {
                service_id: service.id.clone(),
                reason: SkipReason::AlreadyQueued,
                detail: OnBranch::of(push, several),
            }),
            Ok(()) if dry_run => report.reached.queued.push(QueuedEntry {
                service_id: service.id.clone(),
                deployment_id: None,
                detail: Commit {
                    branch: push.branch.clone(),
                    commit_sha: push.after.clone(),
                },
                status: EntryStatus::DryRun,
            }),
            Ok(()) => {
                slots.push(report.reached.skipped.len());
                candidates.push(Candidate {
                    request: DeploymentRequest::new(
                        new_deployment_id(),
                        org,
                        service,
                        Trigger::GitPush {
                            provider,
                            repository: plan.repositories[decision.push].clone(),
                            branch: push.branch.clone(),
                            before: push.before.clone(),
                            commit_sha: push.after.clone(),
                            delivery_id: delivery_id.clone(),
                            pusher: push.pusher.clone(),
                        },
                        &requested_at,
                    ),
                    guard: Guard::Push {
                        mark: push_mark(push),
                        before: push.before.clone(),
                    },
                })
            }
        }
    }
    if dry_run {
        return Ok(report);
    }

    let remember = delivery_id.map(|id| DeliveryKey {
        source: provider.slug().to_owned(),
        id,
        expires_unix: now_unix() + DELIVERY_RETENTION_SECS,
    });
    let draft = history.map(|context| HistoryDraft {
        slots,
        ..draft_of(context, DeliverySummary::from(&report))
    });
    let candidates: Arc<[Candidate]> = candidates.into();
    let outcomes = match deployer
        .record(Batch::new(org, Arc::clone(&candidates), remember, draft))
        .await
    {
        Err(StoreError::DeliveryProcessed) => {
            return Ok(PushReport::new(provider, report.delivery_id, dry_run).ignored(Ignored::DuplicateDelivery));
        }
        outcomes => outcomes?,
    };
    let mut guard_failed = false;
    for (candidate, outcome) in candidates.iter().zip(outcomes) {
        let request = &candidate.request;
        let Trigger::GitPush { branch, commit_sha, .. } = &request.trigger else {
            continue;
        };
        match outcome {
            Outcome::Recorded(status) => report.reached.queued.push(QueuedEntry {
                service_id: request.service_id.clone(),
                deployment_id: Some(request.deployment_id.clone()),
                detail: Commit {
                    branch: branch.clone(),
                    commit_sha: commit_sha.clone(),
                },
                status: EntryStatus::of(status),
            }),
            Outcome::GuardFailed => {
                guard_failed = true;
                report.reached.skipped.push(SkippedEntry {
                    service_id: request.service_id.clone(),
                    reason: SkipReason::AlreadyQueued,
                    detail: OnBranch {
                        branch: branch.clone(),
                        commit_sha: several.then(|| commit_sha.clone()),
                    },
                });
            }
            // Services whose record failed have nothing written; those recorded are sent or
            // pending. A redelivery completes the rest and finds the others ALREADY_QUEUED.
            Outcome::Failed(err) => return Err(err.into()),
        }
    }
    if guard_failed {
        // In the plan's order, as a dry run lists them, not the ALREADY_QUEUED ones last.
        let order: HashMap<(&str, &str), usize> = plan
            .decisions
            .iter()
            .enumerate()
            .map(|(at, d)| ((pushes[d.push].branch.as_str(), d.stored.service.id.as_str()), at))
            .collect();
        let at = |entry: &SkippedEntry| {
            order
                .get(&(entry.detail.branch.as_str(), entry.service_id.as_str()))
                .copied()
        };
        report.reached.skipped.sort_by_key(at);
    }
    // Recorded with the deployments, as the store writes it only when every service was
    // handled; after a failure the route records the error answered instead.
    if let Some(context) = history {
        context.mark_recorded();
    }
    Ok(report)
}
