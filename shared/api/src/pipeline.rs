//! Recording and sending deployments: SPEC's "Nothing recorded is lost".
//!
//! A deployment is recorded first, atomically with its guard (the deployment log is the
//! outbox), then sent, then marked `QUEUED`. A queue that does not answer leaves it `PENDING`
//! for the relay; only a failed record makes the request fail, and then nothing of that
//! service was written, so a redelivery starts clean for it.

use std::collections::HashSet;

use autodeploy_core::deployment::{DeploymentRequest, DeploymentStatus};

use crate::store::{Batch, DeploymentQueue, RecordOutcome, Store, StoreError};
use crate::util::deployment_ids_before;

/// How long a request may hold a deployment `PENDING` before it is sent or left for the relay:
/// longer than the timeout of any function that records deployments (10 s). A deployment pending for longer is stranded (the
/// queue failed it, or its process died), and a newer deployment of its service waits behind it
/// (see [`record_and_send`]); a younger one may be in flight, and waiting behind it would only
/// delay concurrent pushes to the same service.
pub const IN_FLIGHT_HORIZON: std::time::Duration = std::time::Duration::from_secs(15);

/// What became of each candidate, in the candidates' order.
#[derive(Debug)]
pub enum Outcome {
    Recorded(DeploymentStatus),
    GuardFailed,
    /// The store did not answer: nothing was written for this candidate.
    Failed(StoreError),
}

/// Record every candidate of `batch` (guard and record in one write each) and remember its
/// delivery with them, then send the recorded ones that are still pending, but for those whose service has a
/// deployment left `PENDING` longer than `in_flight_horizon` ago ([`IN_FLIGHT_HORIZON`]): the
/// relay sends those after it. Returns one outcome per candidate; `Err` when the store did not
/// answer at all (nothing was written).
pub async fn record_and_send(
    store: &dyn Store,
    queue: &dyn DeploymentQueue,
    batch: Batch<'_>,
    in_flight_horizon: std::time::Duration,
) -> Result<Vec<Outcome>, StoreError> {
    let candidates = std::sync::Arc::clone(&batch.candidates);
    if candidates.is_empty() && batch.delivery.is_none() && batch.history.is_none() {
        return Ok(Vec::new());
    }
    let mut outcomes: Vec<Outcome> = store
        .record_deployments(batch)
        .await?
        .into_iter()
        .map(|result| match result {
            Ok(RecordOutcome::Recorded(status)) => Outcome::Recorded(status),
            Ok(RecordOutcome::GuardFailed) => Outcome::GuardFailed,
            Err(err) => Outcome::Failed(err),
        })
        .collect();

    let mut pending: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, Outcome::Recorded(DeploymentStatus::Pending)))
        .map(|(i, _)| i)
        .collect();
    if pending.is_empty() || !queue.sends() {
        return Ok(outcomes);
    }
    // A service whose older deployment is still PENDING because the queue failed it (not one
    // that a concurrent request is sending right now) gets this one sent by the relay too,
    // after that one: sent now, it would overtake it.
    let recorded: Vec<DeploymentRequest> = pending.iter().map(|&i| candidates[i].request.clone()).collect();
    let stranded_before = deployment_ids_before(in_flight_horizon);
    let held = match store.held_behind_pending(&recorded, &stranded_before).await {
        Ok(held) => held,
        Err(err) => {
            tracing::warn!(error = %err, "could not look for older pending deployments; these wait for the relay");
            recorded.iter().map(|r| r.deployment_id.clone()).collect()
        }
    };
    if !held.is_empty() {
        tracing::info!(
            held = held.len(),
            "deployments left PENDING behind older ones of the same services; the relay sends them in order"
        );
    }
    pending.retain(|&i| !held.contains(&candidates[i].request.deployment_id));
    if pending.is_empty() {
        return Ok(outcomes);
    }
    let requests: Vec<DeploymentRequest> = pending.iter().map(|&i| candidates[i].request.clone()).collect();
    let sent = send_and_mark(store, queue, &requests).await;
    for (&i, request) in pending.iter().zip(&requests) {
        if sent.contains(request.deployment_id.as_str()) {
            outcomes[i] = Outcome::Recorded(DeploymentStatus::Queued);
        }
    }
    Ok(outcomes)
}

/// Send `requests` and mark those the queue accepted as `QUEUED`. Returns the ids marked.
/// A failure to mark leaves a sent deployment `PENDING`: the relay sends it again with the
/// same deployment id, which FIFO deduplication and consumers drop.
async fn send_and_mark<'a>(
    store: &dyn Store,
    queue: &dyn DeploymentQueue,
    requests: &'a [DeploymentRequest],
) -> HashSet<&'a str> {
    let results = queue.send(requests).await;
    let mut accepted: Vec<&DeploymentRequest> = Vec::new();
    for (request, result) in requests.iter().zip(results) {
        match result {
            Ok(()) => accepted.push(request),
            Err(err) => tracing::warn!(
                deployment_id = %request.deployment_id,
                error = %err,
                "queue did not take the deployment; it stays PENDING for the relay"
            ),
        }
    }
    let mut marked = HashSet::new();
    // mark_queued works per organization.
    let mut orgs: Vec<&str> = accepted.iter().map(|r| r.organization_id.as_str()).collect();
    orgs.sort_unstable();
    orgs.dedup();
    for org in orgs {
        let ids: Vec<String> = accepted
            .iter()
            .filter(|r| r.organization_id == org)
            .map(|r| r.deployment_id.clone())
            .collect();
        match store.mark_queued(org, &ids).await {
            Ok(()) => {
                for r in accepted.iter().filter(|r| r.organization_id == org) {
                    marked.insert(r.deployment_id.as_str());
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "sent deployments could not be marked QUEUED; the relay will resend them")
            }
        }
    }
    marked
}

/// What one relay run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RelayReport {
    pub pending: usize,
    pub sent: usize,
}

/// Send deployments left `PENDING` (the queue did not answer when they were recorded), oldest
/// first, in batches, until none are left or the queue stops taking them.
pub async fn relay_pending(
    store: &dyn Store,
    queue: &dyn DeploymentQueue,
    batch: usize,
) -> Result<RelayReport, StoreError> {
    let mut report = RelayReport::default();
    loop {
        let pending = store.pending_deployments(batch).await?;
        if pending.is_empty() {
            return Ok(report);
        }
        report.pending += pending.len();
        let requests: Vec<DeploymentRequest> = pending.into_iter().map(|r| r.request).collect();
        let marked = send_and_mark(store, queue, &requests).await.len();
        report.sent += marked;
        if marked < requests.len() {
            // The queue (or the store) is still failing: try again on the next run.
            return Ok(report);
        }
    }
}
