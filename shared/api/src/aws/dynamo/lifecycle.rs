//! A deployment's status on DynamoDB (SPEC "Deployment lifecycle"): every change is one
//! conditional write from the statuses it may leave, so concurrent writers (the request that
//! queued it, the relay, the dispatcher, an engine's report) can only move it forward, and a
//! final status (`DELIVERED`, `FAILED`, `SUPERSEDED`) never changes again. Each status keeps
//! the deployment for its own time ([`retention`]): TTL prunes finished ones after 30 days.

use super::*;
use crate::store::{AttemptEnd, AttemptStart, Dispatching};

/// How long a deployment stays in the table once it reaches `status`, in seconds (TTL on
/// `expires_at`); `None` while it must not go away on its own (recorded, not yet sent; being
/// delivered).
pub(super) fn retention(status: DeploymentStatus) -> Option<i64> {
    match status {
        DeploymentStatus::Pending | DeploymentStatus::InProgress => None,
        DeploymentStatus::Queued => Some(QUEUED_RETENTION_SECS),
        DeploymentStatus::Delivered | DeploymentStatus::Failed | DeploymentStatus::Superseded => {
            Some(FINISHED_RETENTION_SECS)
        }
    }
}

/// The update that moves a deployment to `to`: its status, `updated_at` and expiry (by
/// [`retention`]), out of the pending index (the relay's), plus the attributes in `set` and
/// `remove`, and one more attempt with `attempt`.
pub(super) fn status_update(
    e: &mut Expr,
    to: DeploymentStatus,
    set: Vec<(&str, AttributeValue)>,
    remove: &[&str],
    attempt: bool,
) -> String {
    let now = crate::util::now_unix();
    let mut sets = vec![
        e.equals(STATUS, "to", s(to.as_str())),
        e.equals(UPDATED_AT, "updated", s(crate::util::now_rfc3339())),
    ];
    let mut removes = vec![e.name(GSI2PK), e.name(GSI2SK)];
    match retention(to) {
        Some(secs) => sets.push(e.equals(EXPIRES_AT, "expires", n(now + secs))),
        None => removes.push(e.name(EXPIRES_AT)),
    }
    for (name, value) in set {
        sets.push(e.equals(name, name, value));
    }
    removes.extend(remove.iter().map(|name| e.name(name)));
    let mut update = format!("SET {} REMOVE {}", sets.join(", "), removes.join(", "));
    if attempt {
        update.push_str(&format!(" ADD {} {}", e.name(ATTEMPTS), e.value("one", n(1))));
    }
    update
}

/// A change of a deployment's status, as the dispatcher makes them (an engine's report is
/// [`DeploymentLog::report_result`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// An attempt starts: `IN_PROGRESS`, one more attempt. From `QUEUED`; from `PENDING` too,
    /// since the queue may hand the message over before the request that sent it has marked
    /// it `QUEUED` (that mark then finds it further and leaves it); and from `IN_PROGRESS`,
    /// when the queue hands it over again after an attempt that never finished (a crash).
    Begin,
    /// The attempt failed and will be retried: `QUEUED` again, waiting until
    /// `next_attempt_at`, so that a newer deployment can still supersede it.
    Retry { error: String, next_attempt_at: String },
    /// The target accepted it.
    Delivered,
    /// The target refused it for good, or every attempt failed.
    Failed { error: String },
    /// A newer deployment of its service was taken first; it is never delivered.
    Superseded,
    /// The service has no deploy target any more: `QUEUED` again, for pull consumers, with
    /// `note` as its `last_error`.
    Release { note: String },
}

impl Transition {
    /// The statuses it may leave.
    pub fn from(&self) -> &'static [DeploymentStatus] {
        use DeploymentStatus::{InProgress, Pending, Queued};
        match self {
            Transition::Begin => &[Pending, Queued, InProgress],
            Transition::Retry { .. }
            | Transition::Delivered
            | Transition::Failed { .. }
            | Transition::Release { .. } => &[InProgress],
            Transition::Superseded => &[Pending, Queued],
        }
    }

    /// The status it reaches.
    pub fn to(&self) -> DeploymentStatus {
        match self {
            Transition::Begin => DeploymentStatus::InProgress,
            Transition::Retry { .. } | Transition::Release { .. } => DeploymentStatus::Queued,
            Transition::Delivered => DeploymentStatus::Delivered,
            Transition::Failed { .. } => DeploymentStatus::Failed,
            Transition::Superseded => DeploymentStatus::Superseded,
        }
    }

    /// The update and its condition.
    fn write(&self, e: &mut Expr) -> (String, String) {
        let (set, remove): (Vec<(&str, AttributeValue)>, &[&str]) = match self {
            Transition::Begin => (Vec::new(), &[NEXT_ATTEMPT_AT]),
            Transition::Retry { error, next_attempt_at } => {
                (vec![(LAST_ERROR, s(error)), (NEXT_ATTEMPT_AT, s(next_attempt_at))], &[])
            }
            Transition::Failed { error } => (vec![(LAST_ERROR, s(error))], &[NEXT_ATTEMPT_AT]),
            Transition::Release { note } => (vec![(LAST_ERROR, s(note))], &[NEXT_ATTEMPT_AT]),
            // Delivered: what went wrong on the way is no longer the deployment's story.
            Transition::Delivered => (Vec::new(), &[NEXT_ATTEMPT_AT, LAST_ERROR]),
            Transition::Superseded => (Vec::new(), &[NEXT_ATTEMPT_AT]),
        };
        let update = status_update(e, self.to(), set, remove, *self == Transition::Begin);
        let from: Vec<String> = self
            .from()
            .iter()
            .map(|status| e.value(&format!("from_{}", status.as_str()), s(status.as_str())))
            .collect();
        let condition = if *self == Transition::Begin {
            // An attempt in progress begins again only once it cannot still be running: the
            // queue hands its message over again after its visibility timeout, well after the
            // function that took it timed out; a duplicate start meanwhile is refused.
            let stale = crate::util::unix_rfc3339(crate::util::now_unix() - STALE_ATTEMPT_SECS);
            format!(
                "{status} IN ({}, {}) OR ({status} = {} AND {} < {})",
                from[0],
                from[1],
                from[2],
                e.name(UPDATED_AT),
                e.value("stale", s(stale)),
                status = e.name(STATUS)
            )
        } else {
            format!("{} IN ({})", e.name(STATUS), from.join(", "))
        };
        (update, condition)
    }

    fn refusal(&self, current: DeploymentStatus) -> Refusal {
        let from: Vec<&str> = self.from().iter().map(|s| s.as_str()).collect();
        Refusal::Conflict(format!(
            "The deployment is {}: only a {} deployment can become {}.",
            current.as_str(),
            from.join(" or "),
            self.to().as_str()
        ))
    }
}

/// How long an attempt in progress may still be running: the `dispatcher` function's timeout
/// (template), below the deployment queue's visibility timeout, after which the queue hands
/// an unfinished attempt's message over again.
pub const STALE_ATTEMPT_SECS: i64 = 120;

/// Deployments superseded in the same transaction as the one taken, at most (the rest, in
/// transactions of their own right after).
const SUPERSEDED_AT_ONCE: usize = 99;

impl DynamoStore {
    /// Apply `transition` to deployment `id` of `org` if its status allows it; the deployment
    /// as it then is.
    pub async fn transition(&self, org: &str, id: &str, transition: &Transition) -> Refusable<DeploymentRecord> {
        let mut e = Expr::default();
        let (update, condition) = transition.write(&mut e);
        match self
            .update_if(deployment_key(org, id), &update, &condition, &e, "transition")
            .await?
        {
            Some(item) => deployment_from_item(&item).map(Ok),
            None => self.refused(org, id, transition).await,
        }
    }

    /// Latest wins: begin an attempt of `id` and supersede `older` (the same service's
    /// deployments still waiting, older than `id`) in one transaction, or with one conditional
    /// update when `older` is empty. Those of `older` that are no longer waiting (taken,
    /// finished) are left as they are.
    pub async fn take_superseding(&self, org: &str, id: &str, older: &[String]) -> Refusable<DeploymentRecord> {
        if older.is_empty() {
            // Nothing to supersede, the usual case: one conditional update, which answers the
            // deployment as begun. A transaction costs twice the write units and a read after.
            return self.transition(org, id, &Transition::Begin).await;
        }
        let (together, after) = older.split_at(older.len().min(SUPERSEDED_AT_ONCE));
        let mut todo: Vec<&str> = together.iter().map(String::as_str).collect();
        let mut retries = 0;
        loop {
            let mut actions = vec![self.transition_action(org, id, &Transition::Begin)?];
            for older in &todo {
                actions.push(self.transition_action(org, older, &Transition::Superseded)?);
            }
            match self.transact_once(actions, "take_superseding").await? {
                Attempt::Written => break,
                Attempt::ConditionsFailed(failed) if failed.contains(&0) => {
                    return self.refused(org, id, &Transition::Begin).await;
                }
                Attempt::ConditionsFailed(failed) => {
                    todo = todo
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| !failed.contains(&(i + 1)))
                        .map(|(_, id)| id)
                        .collect();
                }
                Attempt::Retryable(reason) => {
                    retries += 1;
                    if retries >= CONFLICT_ATTEMPTS {
                        return Err(kept_failing("take_superseding", &reason));
                    }
                    backoff(retries).await;
                }
            }
        }
        for older in after {
            // Not waiting any more is as good as superseded here.
            self.transition(org, older, &Transition::Superseded).await?.ok();
        }
        match self.get_item(deployment_key(org, id), "take_superseding").await? {
            Some(item) => deployment_from_item(&item).map(Ok),
            None => Ok(Err(Refusal::NotFound)),
        }
    }

    /// The deployments of `service` still waiting (`PENDING` or `QUEUED`), and with
    /// `newer_than` every one recorded after that one whatever its status, newest first. Read
    /// from an index: one recorded within the last second may not show yet. (The filter costs
    /// nothing: a query pays for every item of the service it reads.)
    pub async fn waiting_deployments(
        &self,
        org: &str,
        service: &str,
        newer_than: Option<&str>,
    ) -> StoreResult<Vec<DeploymentRecord>> {
        let mut e = Expr::default();
        let condition = e.equals(GSI1PK, "service", s(deployments_of_service(org, service)));
        let mut filter = format!(
            "{} IN ({}, {})",
            e.name(STATUS),
            e.value("pending", s(DeploymentStatus::Pending.as_str())),
            e.value("queued", s(DeploymentStatus::Queued.as_str()))
        );
        if let Some(id) = newer_than {
            filter.push_str(&format!(" OR {} > {}", e.name(GSI1SK), e.value("id", s(id))));
        }
        let query = self
            .query(Some(Index::Gsi1), condition, &e)
            .filter_expression(filter)
            .scan_index_forward(false);
        let items = self.collect(query, None, "waiting_deployments").await?;
        items.iter().map(deployment_from_item).collect()
    }

    fn transition_action(&self, org: &str, id: &str, transition: &Transition) -> StoreResult<TransactWriteItem> {
        let mut e = Expr::default();
        let (update, condition) = transition.write(&mut e);
        self.action(Write::Update(deployment_key(org, id), update), Some(condition), &e)
    }

    /// Why `transition` of `id` did not apply: read what is there.
    async fn refused(&self, org: &str, id: &str, transition: &Transition) -> Refusable<DeploymentRecord> {
        match self.get_item(deployment_key(org, id), "transition").await? {
            None => Ok(Err(Refusal::NotFound)),
            Some(item) => Ok(Err(transition.refusal(deployment_from_item(&item)?.status))),
        }
    }
}

/// The dispatcher's side (see [`Dispatching`]), on the transitions above. Unlike the
/// standalone server's, an attempt may begin again on an `IN_PROGRESS` deployment: SQS hands
/// a message over again when the attempt that took it never finished (the function crashed or
/// timed out), and its FIFO group holds the service's later messages back meanwhile, so no two
/// attempts of one service overlap.
#[async_trait]
impl Dispatching for DynamoStore {
    async fn begin_attempt(&self, org: &str, id: &str) -> StoreResult<AttemptStart> {
        let Some(current) = self.get_deployment(org, id).await? else {
            return Ok(AttemptStart::NotFound);
        };
        if current.status.is_final() {
            return Ok(AttemptStart::NotWaiting(current.status));
        }
        let (newer, older): (Vec<String>, Vec<String>) = self
            .waiting_deployments(org, &current.request.service_id, Some(id))
            .await?
            .into_iter()
            .map(|other| other.request.deployment_id)
            .filter(|other| other != id)
            .partition(|other| other.as_str() > id);
        // Latest wins: a newer deployment was recorded (it waits, or was taken and finished:
        // an engine reported it), so this one is never delivered. One already in progress
        // (taken before the newer one was recorded) is delivered all the same: the newer one
        // follows it.
        if !newer.is_empty() && current.status.is_waiting() {
            return match self.transition(org, id, &Transition::Superseded).await? {
                Ok(_) => Ok(AttemptStart::Superseded),
                Err(_) => self.not_taken(org, id).await,
            };
        }
        let due = current.next_attempt_at.as_deref().and_then(crate::util::rfc3339_unix);
        if current.status == DeploymentStatus::Queued
            && let Some(next_attempt_unix) = due.filter(|&at| at > crate::util::now_unix())
        {
            return Ok(AttemptStart::NotDue { next_attempt_unix });
        }
        match self.take_superseding(org, id, &older).await? {
            Ok(started) => Ok(AttemptStart::Started(Box::new(started))),
            Err(_) => self.not_taken(org, id).await,
        }
    }

    async fn end_attempt(&self, org: &str, id: &str, end: &AttemptEnd) -> StoreResult<Option<DeploymentRecord>> {
        let transition = match end {
            AttemptEnd::Delivered => Transition::Delivered,
            AttemptEnd::Failed { error } => Transition::Failed { error: error.clone() },
            AttemptEnd::Retry {
                error,
                next_attempt_unix,
            } => Transition::Retry {
                error: error.clone(),
                next_attempt_at: crate::util::unix_rfc3339(*next_attempt_unix),
            },
            AttemptEnd::Release { note } => Transition::Release { note: note.clone() },
        };
        match self.transition(org, id, &transition).await? {
            Ok(record) => Ok(Some(record)),
            Err(refusal) => {
                // Not IN_PROGRESS any more (an engine reported on it meanwhile): nothing to record.
                tracing::debug!(deployment_id = id, ?refusal, "the end of an attempt changed nothing");
                Ok(None)
            }
        }
    }
}

impl DynamoStore {
    /// Latest wins once an engine reported on `id`: the deployments of `service` still waiting
    /// that are older than it are never delivered (one no longer waiting is left as it is).
    pub(super) async fn supersede_older(&self, org: &str, service: &str, id: &str) -> StoreResult<()> {
        for waiting in self.waiting_deployments(org, service, None).await? {
            let older = waiting.request.deployment_id;
            if older.as_str() < id {
                self.transition(org, &older, &Transition::Superseded).await?.ok();
            }
        }
        Ok(())
    }

    /// Why an attempt could not begin: the deployment as it now is.
    async fn not_taken(&self, org: &str, id: &str) -> StoreResult<AttemptStart> {
        Ok(match self.get_deployment(org, id).await? {
            Some(record) => AttemptStart::NotWaiting(record.status),
            None => AttemptStart::NotFound,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_deployments_expire_after_30_days_and_work_in_progress_never() {
        assert_eq!(retention(DeploymentStatus::Delivered), Some(30 * 24 * 60 * 60));
        assert_eq!(retention(DeploymentStatus::Failed), Some(30 * 24 * 60 * 60));
        assert_eq!(retention(DeploymentStatus::Superseded), Some(30 * 24 * 60 * 60));
        assert_eq!(retention(DeploymentStatus::Queued), Some(90 * 24 * 60 * 60));
        assert_eq!(retention(DeploymentStatus::Pending), None);
        assert_eq!(retention(DeploymentStatus::InProgress), None);
    }

    #[test]
    fn final_statuses_are_left_by_no_transition() {
        let all = [
            Transition::Begin,
            Transition::Retry {
                error: "503".to_owned(),
                next_attempt_at: "2026-01-01T00:00:05Z".to_owned(),
            },
            Transition::Delivered,
            Transition::Failed {
                error: "410".to_owned(),
            },
            Transition::Superseded,
            Transition::Release {
                note: "no target".to_owned(),
            },
        ];
        for transition in &all {
            assert!(
                transition.from().iter().all(|status| !status.is_final()),
                "{transition:?}"
            );
        }
        // SUPERSEDED only from a waiting deployment; nothing goes back to PENDING.
        assert!(Transition::Superseded.from().iter().all(|s| s.is_waiting()));
        assert!(all.iter().all(|t| t.to() != DeploymentStatus::Pending));
    }

    #[test]
    fn a_transition_writes_only_from_its_statuses() {
        let mut e = Expr::default();
        let (update, condition) = Transition::Failed {
            error: "the target answered 410".to_owned(),
        }
        .write(&mut e);
        assert_eq!(condition, "#status IN (:from_IN_PROGRESS)");
        assert!(update.starts_with("SET #status = :to"), "{update}");
        assert!(update.contains("#expires_at = :expires"), "{update}");
        assert!(update.contains("REMOVE #gsi2pk, #gsi2sk, #next_attempt_at"), "{update}");
        let values = e.values().unwrap_or_default();
        assert_eq!(values.get(":to"), Some(&s("FAILED")));
        assert_eq!(values.get(":last_error"), Some(&s("the target answered 410")));

        let mut e = Expr::default();
        let (update, condition) = Transition::Begin.write(&mut e);
        // From IN_PROGRESS only once the attempt is older than the dispatcher's timeout.
        assert_eq!(
            condition,
            "#status IN (:from_PENDING, :from_QUEUED) OR (#status = :from_IN_PROGRESS AND #updated_at < :stale)"
        );
        let stale = e.values().unwrap_or_default()[":stale"].as_s().unwrap().clone();
        assert!(stale < crate::util::now_rfc3339(), "{stale}");
        assert!(update.ends_with("ADD #attempts :one"), "{update}");
        assert!(update.contains("#expires_at"), "in progress: no expiry: {update}");
        assert!(!update.contains(":expires"), "{update}");
    }
}
