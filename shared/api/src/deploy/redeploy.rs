//! A finished deployment made again: the same commit or tag, as a new deployment of its
//! service, once its target is fixed after a `FAILED` one, or to run a `DELIVERED` one again.
//! Only the service's newest deployment is made again, and only while the service still runs
//! what it deployed: an older one, or one the service's settings have moved away from, would
//! roll the service back or set it apart from its desired state.

use std::sync::Arc;

use autodeploy_core::deployment::{DeploymentRecord, DeploymentRequest};
use autodeploy_core::redeploy::{id_after, moved_away, not_finished};

use super::{DeployError, Deployer};
use crate::pipeline::Outcome;
use crate::store::{Batch, Candidate, DeploymentFilter, DeploymentQuery, Guard, PageRequest, Refusal};
use crate::util::{created_after, new_deployment_id, now_rfc3339};

/// Make deployment `id` of `org` again. `Err(Refusal)` when it cannot be: unknown, not
/// finished, no longer its service's newest, or its service gone.
pub async fn redeploy(
    deployer: &Deployer,
    org: &str,
    id: &str,
) -> Result<Result<DeploymentRecord, Refusal>, DeployError> {
    let store = deployer.store.as_ref();
    let Some(record) = store.get_deployment(org, id).await? else {
        return Ok(Err(Refusal::NotFound));
    };
    let request = record.request;
    let service_id = request.service_id.clone();
    let service_id = service_id.as_str();
    if let Some(why) = not_finished(record.status) {
        return Ok(Err(Refusal::Conflict(format!(
            "Deployment {id} is {}: {why}. Only a DELIVERED or FAILED deployment is made again.",
            record.status.as_str()
        ))));
    }
    // The service it was for, not one created under the same id since.
    let service = store
        .get_service(org, service_id)
        .await?
        .filter(|s| !created_after(&s.service.created_at, &request.requested_at));
    let Some(service) = service else {
        return Ok(Err(Refusal::Conflict(format!(
            "The service {service_id} of deployment {id} was deleted since: there is nothing to deploy it to."
        ))));
    };
    let newest = store
        .list_deployments(
            org,
            &DeploymentQuery {
                filter: DeploymentFilter {
                    service_id: Some(service_id.to_owned()),
                    status: None,
                },
                page: PageRequest::first(1),
            },
        )
        .await?;
    if let Some(newer) = newest.items.first().filter(|newest| newest.request.deployment_id != id) {
        return Ok(Err(Refusal::Conflict(format!(
            "Deployment {} of service {service_id} is newer than {id}: only a service's newest deployment is made again (an older one would roll it back).",
            newer.request.deployment_id
        ))));
    }
    if let Some(why) = moved_away(&service.service, &request, service.current_commit()) {
        return Ok(Err(Refusal::Conflict(format!(
            "Service {service_id} no longer runs what deployment {id} deployed: {why}. Only a deployment of what the service runs now is made again."
        ))));
    }
    let again = DeploymentRequest {
        // Right after the one it repeats: it never sorts above a deployment recorded after that
        // one (a push or a tag racing this request), which latest wins must prefer.
        deployment_id: id_after(id).unwrap_or_else(new_deployment_id),
        requested_at: now_rfc3339(),
        ..request
    };
    let candidate = Candidate {
        request: again,
        guard: Guard::StillAsRead {
            etag: service.etag,
            last_push: service.last_push,
            again: id.to_owned(),
        },
    };
    let candidates: Arc<[Candidate]> = Arc::from(vec![candidate]);
    let outcomes = deployer
        .record(Batch::new(org, Arc::clone(&candidates), None, None))
        .await?;
    match outcomes.into_iter().next() {
        Some(Outcome::Recorded(status)) => Ok(Ok(DeploymentRecord::new(candidates[0].request.clone(), status))),
        Some(Outcome::Failed(err)) => Err(err.into()),
        Some(Outcome::GuardFailed) | None => Ok(Err(Refusal::Conflict(format!(
            "The service {service_id} changed while deployment {id} was made again (a push, a new tag, a settings write, or another request making it again): look at its deployments again."
        )))),
    }
}
