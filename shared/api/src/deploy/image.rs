//! A new image tag, announced by CI, a registry webhook or an ECR event: redeploy every
//! service of the organization that runs the image and takes the tag.

use std::collections::BTreeSet;
use std::sync::Arc;

use autodeploy_core::delivery::nothing_deployed;
use autodeploy_core::deployment::{DeploymentRequest, Trigger};
use autodeploy_core::image::ImageName;
use autodeploy_core::matching::{ImageTarget, SkipReason, decide_image, tag_policy_refusal};
use autodeploy_core::model::Service;
use autodeploy_core::registry::{ImageSourceKind, NamedImage};
use serde::Serialize;

use super::history::{DeliveryContext, DeliverySummary, draft_of};
use super::{DeployError, Deployer, EntryStatus, Ignored, Queued, Reached, Skipped};
use crate::pipeline::Outcome;
use crate::store::{Batch, Candidate, DeliveryKey, Guard, StoreError, StoredService};
use crate::turns::retry_pause;
use crate::util::{new_deployment_id, new_etag, now_rfc3339};

/// Tries per service when its record loses a race (the service changed since it was read, in
/// another process or by a settings write): after a random pause, read again and decide again.
const RECORD_ATTEMPTS: usize = 8;

/// What a queued entry says of the new tag: it, and the tag the service ran before.
#[derive(Debug, Clone, Serialize)]
pub struct TagChange {
    pub tag: String,
    pub previous_tag: String,
}

/// A deployment queued (or, in a dry run, that would be) for a new tag.
pub type ImageQueuedEntry = Queued<TagChange>;

pub type ImageSkippedEntry = Skipped<()>;

/// The image-tag response: shaped as the push response (`queued`, `skipped`, `ignored`,
/// `message`, `dry_run`), naming the image as it was matched (normalized).
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub source: ImageSourceKind,
    /// The registry host the notification named; `null` for a bare name (any registry).
    pub registry: Option<String>,
    pub image_name: Option<String>,
    pub tag: Option<String>,
    #[serde(flatten)]
    pub reached: Reached<TagChange, ()>,
    /// The services whose tag policy refused the tag, and why (` Service api: 2.0.0 is outside
    /// the SEMVER range >=1.2.0 <2.`): in `message` when nothing is queued, and in the
    /// deliveries history in any case.
    #[serde(skip)]
    pub refusals: String,
}

impl ImageReport {
    pub fn new(source: ImageSourceKind, dry_run: bool) -> Self {
        Self {
            source,
            registry: None,
            image_name: None,
            tag: None,
            reached: Reached::new(dry_run),
            refusals: String::new(),
        }
    }

    /// The notification announces nothing to deploy; `message` says why.
    pub fn ignored(source: ImageSourceKind, dry_run: bool, reason: Ignored, message: &str) -> Self {
        let mut report = Self::new(source, dry_run);
        report.reached.ignored = Some(reason);
        report.reached.message = Some(message.to_owned());
        report
    }

    /// A registry notification that announces nothing to deploy, naming the image it names
    /// (its answer and its history then tell which image was not deployed).
    pub fn ignored_notification(
        source: ImageSourceKind,
        dry_run: bool,
        reason: &str,
        image: Option<NamedImage>,
    ) -> Self {
        let report = Self::ignored(source, dry_run, Ignored::UnsupportedEvent, reason);
        match image {
            Some(NamedImage { registry, path, tag }) => report.naming(registry, path, tag),
            None => report,
        }
    }

    /// This report, naming the image and tag a notification announced.
    pub fn naming(mut self, registry: String, path: String, tag: Option<String>) -> Self {
        self.registry = Some(registry);
        self.image_name = Some(path);
        self.tag = tag;
        self
    }

    /// The answer to a notification processed before (a registry webhook's body seen again).
    pub fn replayed(source: ImageSourceKind, dry_run: bool) -> Self {
        Self::ignored(
            source,
            dry_run,
            Ignored::DuplicateDelivery,
            "This notification was processed before; a replay deploys nothing.",
        )
    }

    /// Whether anything was queued: a 202 then.
    pub fn queued_any(&self) -> bool {
        self.reached.queued_any()
    }
}

/// The name of an image source, as the responses and metrics write it.
pub fn source_name(source: ImageSourceKind) -> &'static str {
    match source {
        ImageSourceKind::Api => "API",
        ImageSourceKind::DockerHub => "DOCKER_HUB",
        ImageSourceKind::GithubPackages => "GITHUB_PACKAGES",
        ImageSourceKind::Ecr => "ECR",
    }
}

/// An announced tag of an image, for organization `org`.
pub struct ImageAnnouncement<'a> {
    pub org: &'a str,
    pub target: ImageTarget,
    pub image: &'a ImageName,
    pub tag: &'a str,
    pub source: ImageSourceKind,
    pub dry_run: bool,
    /// The notification to remember with what it records, so that a replay of it is known.
    pub remember: Option<DeliveryKey>,
    /// The delivery's account, recorded in the same write as its deployments.
    pub history: Option<&'a DeliveryContext>,
}

/// Services of `org` that use `image` under any of its lookup paths, each once, by id.
async fn services_using(deployer: &Deployer, org: &str, image: &ImageName) -> Result<Vec<StoredService>, DeployError> {
    let mut seen = BTreeSet::new();
    let mut services = Vec::new();
    for path in image.lookup_paths() {
        for stored in deployer.store.services_by_image_path(org, &path).await? {
            if seen.insert(stored.service.id.clone()) {
                services.push(stored);
            }
        }
    }
    Ok(services)
}

/// A deployment of `tag` for `stored`, guarded so that it is recorded only if the service is
/// unchanged since it was read, in the same write that makes `tag` its current tag.
fn candidate(
    org: &str,
    stored: &StoredService,
    tag: &str,
    source: ImageSourceKind,
    requested_at: &str,
) -> Option<Candidate> {
    let service = &stored.service;
    let current = service.spec.image.as_ref()?;
    let (registry, path) = service.image_key()?;
    let mut spec = service.spec.clone();
    if let Some(image) = spec.image.as_mut() {
        image.tag = tag.to_owned();
    }
    let updated = StoredService {
        service: Service {
            spec,
            version: service.version + 1,
            updated_at: requested_at.to_owned(),
            ..service.clone()
        },
        etag: new_etag(),
        last_push: stored.last_push.clone(),
    };
    Some(Candidate {
        request: DeploymentRequest::new(
            new_deployment_id(),
            org,
            service,
            Trigger::ImageTag {
                source,
                registry,
                image_name: path,
                previous_tag: Some(current.tag.clone()),
                tag: tag.to_owned(),
            },
            requested_at,
        ),
        guard: Guard::ServiceUnchanged {
            expected: stored.etag.clone(),
            updated: Box::new(updated),
        },
    })
}

/// Match an announced tag against the services of the organization and record (then send)
/// one deployment per service that takes it. The caller has validated the image and the tag.
///
/// A store failure is an error: services whose record failed have nothing written, and a
/// retry finds the others at the new tag (`SAME_TAG`).
pub async fn deploy_image(
    deployer: &Deployer,
    announcement: ImageAnnouncement<'_>,
) -> Result<ImageReport, DeployError> {
    let ImageAnnouncement {
        org,
        target,
        image,
        tag,
        source,
        dry_run,
        mut remember,
        history,
    } = announcement;
    // Announcements of one image take turns in this process: the second reads the services
    // the first changed, instead of losing their condition to it.
    // Keyed by path alone: an announcement without a registry reaches services of any.
    let _turn = if dry_run {
        None
    } else {
        let path = image.path.strip_prefix("library/").unwrap_or(&image.path);
        Some(
            deployer
                .turns
                .take(format!("image/{org}/{path}"))
                .await
                .map_err(|_| DeployError::Contention)?,
        )
    };
    let mut report = ImageReport::new(source, dry_run);
    report.registry = image.registry.clone();
    report.image_name = Some(image.path.clone());
    report.tag = Some(tag.to_owned());

    let mut deployable: Vec<StoredService> = Vec::new();
    let mut other_kinds = 0usize;
    // Services whose tag policy refused the tag, and why: for the answer's message.
    let mut refusals: Vec<(String, String)> = Vec::new();
    for stored in services_using(deployer, org, image).await? {
        match decide_image(&stored.service, target, image, tag) {
            None => {
                let runs_it = stored.service.image_key().is_some_and(|(r, p)| image.matches(&r, &p));
                other_kinds += usize::from(runs_it);
            }
            Some(Err(reason)) => report
                .reached
                .skipped
                .push(skipped(&stored, reason, tag, &mut refusals)),
            Some(Ok(())) => deployable.push(stored),
        }
    }
    if deployable.is_empty() && report.reached.skipped.is_empty() {
        report.reached.message = Some(nothing_runs(org, target, image, other_kinds));
    }
    report.refusals = spelled_out(&refusals);
    if deployable.is_empty() {
        explain_refusals(&mut report);
    }

    if dry_run {
        report.reached.queued = deployable
            .iter()
            .filter_map(|stored| {
                Some(ImageQueuedEntry {
                    service_id: stored.service.id.clone(),
                    deployment_id: None,
                    detail: TagChange {
                        tag: tag.to_owned(),
                        previous_tag: stored.service.spec.image.as_ref()?.tag.clone(),
                    },
                    status: EntryStatus::DryRun,
                })
            })
            .collect();
        return Ok(sorted(report));
    }

    // The history lists entries in the answer's order: service ids. (A service whose guard
    // fails is decided again, and the record then replaced: no `ALREADY_QUEUED` fate stays.)
    report.reached.sort();
    let mut draft = history.map(|context| draft_of(context, DeliverySummary::from(&report)));
    // Whether a service changed between its read and its write, so that the history written
    // with the first write no longer says what the answer will.
    let mut decided_again = false;
    for attempt in 0..RECORD_ATTEMPTS {
        if deployable.is_empty() {
            break;
        }
        if attempt > 0 {
            tokio::time::sleep(retry_pause(attempt)).await;
        }
        let requested_at = now_rfc3339();
        let candidates: Arc<[Candidate]> = deployable
            .iter()
            .filter_map(|stored| candidate(org, stored, tag, source, &requested_at))
            .collect();
        let batch = Batch::new(org, Arc::clone(&candidates), remember.take(), draft.take());
        let outcomes = match deployer.record(batch).await {
            Err(StoreError::DeliveryProcessed) => return Ok(ImageReport::replayed(source, dry_run)),
            outcomes => outcomes?,
        };
        let mut lost: Vec<&str> = Vec::new();
        for (candidate, outcome) in candidates.iter().zip(outcomes) {
            let request = &candidate.request;
            match outcome {
                Outcome::Recorded(status) => report.reached.queued.push(ImageQueuedEntry {
                    service_id: request.service_id.clone(),
                    deployment_id: Some(request.deployment_id.clone()),
                    detail: TagChange {
                        tag: tag.to_owned(),
                        previous_tag: match &request.trigger {
                            Trigger::ImageTag { previous_tag, .. } => previous_tag.clone().unwrap_or_default(),
                            Trigger::GitPush { .. } => String::new(),
                        },
                    },
                    status: EntryStatus::of(status),
                }),
                Outcome::GuardFailed => lost.push(request.service_id.as_str()),
                Outcome::Failed(err) => return Err(err.into()),
            }
        }
        // The service changed since it was read (most often: the same tag was just recorded
        // by an identical notification). Read it again and decide again.
        let mut next = Vec::new();
        decided_again |= !lost.is_empty();
        for id in lost {
            if let Some(stored) = deployer.store.get_service(org, id).await? {
                match decide_image(&stored.service, target, image, tag) {
                    None => {}
                    Some(Err(reason)) => report
                        .reached
                        .skipped
                        .push(skipped(&stored, reason, tag, &mut refusals)),
                    Some(Ok(())) => next.push(stored),
                }
            }
        }
        deployable = next;
    }
    if !deployable.is_empty() {
        return Err(DeployError::Contention);
    }
    if decided_again {
        // Some services may have been refused meanwhile.
        report.refusals = spelled_out(&refusals);
        if report.reached.queued.is_empty() {
            // The services decided again were all skipped: the answer explains them as one
            // that had nothing deployable from the start (above).
            explain_refusals(&mut report);
        }
    }
    let report = sorted(report);
    if remember.is_some() || draft.is_some() {
        // Nothing was deployable: remember the notification, and record it, on their own.
        match deployer.record(Batch::new(org, Arc::default(), remember, draft)).await {
            Err(StoreError::DeliveryProcessed) => return Ok(ImageReport::replayed(source, dry_run)),
            done => done?,
        };
    } else if let Some(context) = history.filter(|_| decided_again) {
        // The record written with the first write said `ALREADY_QUEUED` of the services that
        // changed meanwhile; it is replaced by what the answer says of them.
        let record = draft_of(context, DeliverySummary::from(&report));
        deployer
            .record(Batch::new(org, Arc::default(), None, Some(record)))
            .await?;
    }
    if let Some(context) = history {
        context.mark_recorded();
    }
    Ok(report)
}

/// SPEC "Nothing to deploy is explained", for an image.
fn nothing_runs(org: &str, target: ImageTarget, image: &ImageName, other_kinds: usize) -> String {
    let (kind, endpoint) = match target {
        ImageTarget::Container => ("CONTAINER ", Some("/job/deploy")),
        ImageTarget::Job => ("JOB ", Some("/container/deploy")),
        ImageTarget::Registry => ("", None),
    };
    match endpoint {
        Some(other) if other_kinds > 0 => format!(
            "No {kind}service of organization {org} runs {image}; {other_kinds} service(s) of the other kind do: announce it on {other}."
        ),
        // SPEC's own words when no service of either kind runs it.
        _ => format!("No service of organization {org} runs {image}."),
    }
}

/// Tag policy refusals spelled out in a message at most; the others are counted.
const REFUSALS_SPELLED_OUT: usize = 5;

/// Each refusal spelled out (` Service api: 2.0.0 is outside the SEMVER range >=1.2.0 <2.`),
/// at most [`REFUSALS_SPELLED_OUT`], the others counted; empty without refusals.
fn spelled_out(refusals: &[(String, String)]) -> String {
    let mut refusals: Vec<&(String, String)> = refusals.iter().collect();
    refusals.sort();
    let mut text: String = refusals
        .iter()
        .take(REFUSALS_SPELLED_OUT)
        .map(|(service_id, why)| format!(" Service {service_id}: {why}."))
        .collect();
    if refusals.len() > REFUSALS_SPELLED_OUT {
        text.push_str(&format!(
            " {} more refused by their tag policy.",
            refusals.len() - REFUSALS_SPELLED_OUT
        ));
    }
    text
}

/// An answer that queues nothing while tag policies refused the tag says why in `message`:
/// the reasons, then each refusal. The caller knows that nothing is queued; without refusals
/// nothing changes.
fn explain_refusals(report: &mut ImageReport) {
    if report.refusals.is_empty() {
        return;
    }
    let message = nothing_deployed(&report.reached.skipped_services()) + &report.refusals;
    report.reached.message = Some(message);
}

/// The skipped entry of `stored`; a `TAG_POLICY` skip adds why to `refusals`.
fn skipped(
    stored: &StoredService,
    reason: SkipReason,
    tag: &str,
    refusals: &mut Vec<(String, String)>,
) -> ImageSkippedEntry {
    if reason == SkipReason::TagPolicy
        && let Some(why) = tag_policy_refusal(&stored.service, tag)
    {
        refusals.push((stored.service.id.clone(), format!("{tag} {why}")));
    }
    ImageSkippedEntry {
        service_id: stored.service.id.clone(),
        reason,
        detail: (),
    }
}

/// Entries in service id order, whatever order lookups and retries produced them in.
fn sorted(mut report: ImageReport) -> ImageReport {
    report.reached.sort();
    report
}
