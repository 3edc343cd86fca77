//! Recording a request's deployments, and marking them `QUEUED`, many at a time.
//!
//! A push that matches a thousand services must be recorded, sent and marked well inside a
//! provider's 10 s, by a function with a fraction of a vCPU. Each service's guard and record
//! stay one atomic unit, but up to [`MAX_TRANSACTION_ITEMS`] actions of several services go in
//! one `TransactWriteItems`, several at once: a thousand services take about thirty
//! transactions instead of a thousand. A transaction is all or nothing, so when the condition
//! of one service's action fails, that service gets its answer (already queued, a re-apply to
//! try, gone) and the others are sent again without it.

use std::collections::HashMap;

use super::*;

/// Actions in one `TransactWriteItems` at most (DynamoDB's limit).
pub const MAX_TRANSACTION_ITEMS: usize = 100;
/// Transactions of one request in flight at once: a thousand services are four rounds of
/// eight, and a small function opens no more connections than that.
pub const TRANSACTION_CONCURRENCY: usize = 8;
/// Services of a git push recorded per transaction (three actions each: the service's guard,
/// the push's mark, the deployment).
pub const PUSH_RECORDS_PER_TRANSACTION: usize = MAX_TRANSACTION_ITEMS / PUSH_ACTIONS;
/// Services of an image tag recorded per transaction (two actions each: the service's
/// guarded update, the deployment).
pub const IMAGE_RECORDS_PER_TRANSACTION: usize = MAX_TRANSACTION_ITEMS / IMAGE_ACTIONS;
/// Deployments marked `QUEUED` per transaction (one action each).
pub const MARKS_PER_TRANSACTION: usize = MAX_TRANSACTION_ITEMS;
const PUSH_ACTIONS: usize = 3;
const IMAGE_ACTIONS: usize = 2;

/// How far a candidate has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// A push whose mark the service has not queued within its retention, or an image tag.
    Fresh,
    /// A push whose mark the service queued before: it records only as a re-apply (its
    /// `before` is the service's current commit).
    Reapply,
}

/// What the failed condition of one of a candidate's actions means for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The guard does not hold: nothing to record.
    GuardFailed,
    /// The push's mark is known: try again as a re-apply.
    Reapply,
    /// A deployment with this id exists already (ids are never reused).
    Exists,
}

/// A candidate on its way, with its place in the request.
#[derive(Clone, Copy)]
struct Entry<'a> {
    index: usize,
    candidate: &'a Candidate,
    stage: Stage,
}

type Outcome = (usize, StoreResult<RecordOutcome>);

impl DynamoStore {
    /// Record every candidate, many per transaction and several transactions at once; one
    /// result per candidate, in order.
    pub(super) async fn record_all(&self, candidates: &[Candidate]) -> Vec<StoreResult<RecordOutcome>> {
        let mut results: Vec<Option<StoreResult<RecordOutcome>>> = candidates.iter().map(|_| None).collect();
        for round in rounds(candidates) {
            let groups = groups(round, candidates);
            // The futures are built before the stream so that the trait's future stays `Send`.
            let writes: Vec<_> = groups.into_iter().map(|group| self.record_group(group)).collect();
            let written: Vec<Vec<Outcome>> = futures::stream::iter(writes)
                .buffer_unordered(TRANSACTION_CONCURRENCY)
                .collect()
                .await;
            for (index, outcome) in written.into_iter().flatten() {
                results[index] = Some(outcome);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Unavailable("a deployment was not recorded".to_owned()))))
            .collect()
    }

    /// Write one group: the whole group in one transaction, then again without the candidates
    /// whose conditions failed (each decided by what failed), until it is written or empty.
    /// A group that keeps being cancelled by conflicts or throttling is written one candidate
    /// at a time, so that a busy service does not hold the others back.
    async fn record_group(&self, group: Vec<Entry<'_>>) -> Vec<Outcome> {
        let mut done: Vec<Outcome> = Vec::with_capacity(group.len());
        let mut work: Vec<Vec<Entry<'_>>> = vec![group];
        while let Some(mut todo) = work.pop() {
            let mut retries = 0;
            while !todo.is_empty() {
                let mut actions = Vec::new();
                // For each action: which entry of `todo` it belongs to, and what its failure means.
                let mut owners: Vec<(usize, Verdict)> = Vec::new();
                let mut unbuildable = Vec::new();
                for (position, entry) in todo.iter().enumerate() {
                    match self.record_actions(entry.candidate, entry.stage) {
                        Ok(list) => {
                            for (action, verdict) in list {
                                actions.push(action);
                                owners.push((position, verdict));
                            }
                        }
                        Err(err) => unbuildable.push((position, err)),
                    }
                }
                if !unbuildable.is_empty() {
                    let failed: HashMap<usize, StoreError> = unbuildable.into_iter().collect();
                    todo = settle(
                        todo,
                        |position, entry| failed.get(&position).map(|err| Settled::Done(Err(err.clone()), entry)),
                        &mut done,
                    );
                    continue;
                }
                match self.transact_once(actions, "record_deployments").await {
                    Ok(Attempt::Written) => {
                        let status = RecordOutcome::Recorded(DeploymentStatus::Pending);
                        done.extend(todo.drain(..).map(|e| (e.index, Ok(status))));
                    }
                    Ok(Attempt::ConditionsFailed(failed)) => {
                        // A candidate's first failed action decides for it.
                        let mut verdicts: HashMap<usize, Verdict> = HashMap::new();
                        for action in failed {
                            if let Some(&(position, verdict)) = owners.get(action) {
                                verdicts.entry(position).or_insert(verdict);
                            }
                        }
                        if verdicts.is_empty() {
                            let err = StoreError::Unavailable(
                                "record_deployments: a transaction was cancelled on an unknown action".to_owned(),
                            );
                            done.extend(todo.drain(..).map(|e| (e.index, Err(err.clone()))));
                            continue;
                        }
                        todo = settle(
                            todo,
                            |position, entry| {
                                verdicts.get(&position).map(|verdict| match (verdict, entry.stage) {
                                    (Verdict::Reapply, Stage::Fresh) => Settled::Again(Entry {
                                        stage: Stage::Reapply,
                                        ..entry
                                    }),
                                    (Verdict::GuardFailed, _) | (Verdict::Reapply, Stage::Reapply) => {
                                        Settled::Done(Ok(RecordOutcome::GuardFailed), entry)
                                    }
                                    (Verdict::Exists, _) => Settled::Done(Err(StoreError::PreconditionFailed), entry),
                                })
                            },
                            &mut done,
                        );
                    }
                    Ok(Attempt::Retryable(reason)) => {
                        retries += 1;
                        if retries < CONFLICT_ATTEMPTS {
                            backoff(retries).await;
                        } else if todo.len() > 1 {
                            work.extend(todo.drain(..).map(|entry| vec![entry]));
                        } else {
                            let err = kept_failing("record_deployments", &reason);
                            done.extend(todo.drain(..).map(|e| (e.index, Err(err.clone()))));
                        }
                    }
                    // Nothing was written for any of them.
                    Err(err) => done.extend(todo.drain(..).map(|e| (e.index, Err(err.clone())))),
                }
            }
        }
        done
    }

    /// The actions that record `candidate` at `stage`, each with what a failure of its
    /// condition means.
    fn record_actions(&self, candidate: &Candidate, stage: Stage) -> StoreResult<Vec<(TransactWriteItem, Verdict)>> {
        let request = &candidate.request;
        let org = &request.organization_id;
        match &candidate.guard {
            Guard::Push { mark, before } => {
                let after = mark.split_once("..").map_or("", |(_, after)| after);
                let mut e = Expr::default();
                let update = format!(
                    "SET {}, {}",
                    e.equals(LAST_PUSH, "mark", s(mark)),
                    e.equals(CURRENT_COMMIT, "after", s(after))
                );
                let mut condition = format!("attribute_exists({})", e.name(PK));
                if stage == Stage::Fresh {
                    // A service the first release wrote has its last push and no mark items:
                    // that push sent again is queued already, as the first release held.
                    condition.push_str(&format!(
                        " AND (attribute_exists({}) OR attribute_not_exists({}) OR {} <> {})",
                        e.name(CURRENT_COMMIT),
                        e.name(LAST_PUSH),
                        e.name(LAST_PUSH),
                        e.value("mark", s(mark))
                    ));
                }
                if stage == Stage::Reapply {
                    // The last push queued, pushed again, is no re-apply even when it moves
                    // nothing (`before` = `after` = the current commit).
                    condition.push_str(&format!(
                        " AND {} = {} AND (attribute_not_exists({}) OR {} <> {})",
                        e.name(CURRENT_COMMIT),
                        e.value("before", s(before)),
                        e.name(LAST_PUSH),
                        e.name(LAST_PUSH),
                        e.value("mark", s(mark))
                    ));
                }
                Ok(vec![
                    self.service_guard(org, &request.service_id, update, condition, &e)?,
                    (
                        self.push_mark_put(org, &request.service_id, mark, stage == Stage::Fresh)?,
                        Verdict::Reapply,
                    ),
                    (self.deployment_put(request)?, Verdict::Exists),
                ])
            }
            Guard::StillAsRead { etag, last_push, again } => {
                // The service remembers the deployment last made again: a second request for
                // the same one, which read the service before the first wrote, fails.
                let mut e = Expr::default();
                let update = format!("SET {}", e.equals(MADE_AGAIN, "again", s(again)));
                let last_push = match last_push {
                    Some(mark) => e.equals(LAST_PUSH, "last_push", s(mark)),
                    None => format!("attribute_not_exists({})", e.name(LAST_PUSH)),
                };
                let condition = format!(
                    "{} AND {last_push} AND (attribute_not_exists({made_again}) OR {made_again} <> {})",
                    e.equals(ETAG, "etag", s(etag)),
                    e.value("again", s(again)),
                    made_again = e.name(MADE_AGAIN),
                );
                Ok(vec![
                    self.service_guard(org, &request.service_id, update, condition, &e)?,
                    (self.deployment_put(request)?, Verdict::Exists),
                ])
            }
            Guard::ServiceUnchanged { expected, updated } => {
                let service = &updated.service;
                let mut e = Expr::default();
                let update = service_update(service, &updated.etag, &mut e)?;
                let condition = e.equals(ETAG, "expected", s(expected));
                Ok(vec![
                    self.service_guard(&service.organization_id, &service.id, update, condition, &e)?,
                    (self.deployment_put(request)?, Verdict::Exists),
                ])
            }
        }
    }

    /// The update of the service's item under the guard's condition: the action whose failure
    /// is the guard's.
    fn service_guard(
        &self,
        org: &str,
        service_id: &str,
        update: String,
        condition: String,
        e: &Expr,
    ) -> StoreResult<(TransactWriteItem, Verdict)> {
        let action = self.action(Write::Update(service_key(org, service_id), update), Some(condition), e)?;
        Ok((action, Verdict::GuardFailed))
    }

    /// The deployment's item, `PENDING` until the queue takes it.
    fn deployment_put(&self, request: &DeploymentRequest) -> StoreResult<TransactWriteItem> {
        let org = &request.organization_id;
        let data = serde_json::to_string(request)
            .map_err(|e| StoreError::Unavailable(format!("record_deployment: encoding the request: {e}")))?;
        let id = &request.deployment_id;
        let mut item = deployment_key(org, id);
        item.insert(GSI1PK.to_owned(), s(deployments_of_service(org, &request.service_id)));
        item.insert(GSI1SK.to_owned(), s(id));
        item.insert(GSI2PK.to_owned(), s(PENDING));
        item.insert(GSI2SK.to_owned(), s(id));
        item.insert(DATA.to_owned(), s(data));
        item.insert(STATUS.to_owned(), s(DeploymentStatus::Pending.as_str()));
        item.insert(UPDATED_AT.to_owned(), s(&request.requested_at));
        let mut e = Expr::default();
        let condition = format!("attribute_not_exists({})", e.name(PK));
        self.action(Write::Put(item), Some(condition), &e)
    }

    /// The push's mark on the service, remembered for the replay rule until it expires;
    /// with `fresh`, only when the service has not queued that mark within its retention.
    fn push_mark_put(&self, org: &str, service_id: &str, mark: &str, fresh: bool) -> StoreResult<TransactWriteItem> {
        let now = crate::util::now_unix();
        let mut item = key(org_pk(org), push_mark_sk(service_id, mark));
        item.insert(EXPIRES_AT.to_owned(), n(now + PUSH_MARK_RETENTION_SECS));
        if !fresh {
            return self.action(Write::Put(item), None, &Expr::default());
        }
        let mut e = Expr::default();
        // TTL deletes expired items lazily: an expired mark may still be there.
        let condition = format!(
            "attribute_not_exists({}) OR {} < {}",
            e.name(PK),
            e.name(EXPIRES_AT),
            e.value("now", n(now))
        );
        self.action(Write::Put(item), Some(condition), &e)
    }

    /// Mark `ids` `QUEUED`, up to [`MAX_TRANSACTION_ITEMS`] per transaction, several at once.
    /// Only a `PENDING` deployment is marked (statuses only go forward): one that is already
    /// further (the relay and a request both sent it, or a consumer took it in between) or
    /// that does not exist has nothing left to mark, and is left out of its transaction.
    pub(super) async fn mark_all_queued(&self, org: &str, ids: &[String]) -> StoreResult<()> {
        let mut unique: Vec<&str> = ids.iter().map(String::as_str).collect();
        unique.sort_unstable();
        unique.dedup();
        // The futures are built before the stream so that the trait's future stays `Send`.
        let marks: Vec<_> = unique
            .chunks(MARKS_PER_TRANSACTION)
            .map(|chunk| self.mark_group(org, chunk.to_vec()))
            .collect();
        futures::stream::iter(marks)
            .buffer_unordered(TRANSACTION_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn mark_group(&self, org: &str, mut todo: Vec<&str>) -> StoreResult<()> {
        let mut retries = 0;
        while !todo.is_empty() {
            let actions = todo
                .iter()
                .map(|id| self.mark_action(org, id))
                .collect::<StoreResult<Vec<_>>>()?;
            match self.transact_once(actions, "mark_queued").await? {
                Attempt::Written => return Ok(()),
                Attempt::ConditionsFailed(failed) => {
                    let before = todo.len();
                    todo = todo
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| !failed.contains(i))
                        .map(|(_, id)| id)
                        .collect();
                    if todo.len() == before {
                        return Err(StoreError::Unavailable(
                            "mark_queued: a transaction was cancelled on an unknown action".to_owned(),
                        ));
                    }
                }
                Attempt::Retryable(reason) => {
                    retries += 1;
                    if retries >= CONFLICT_ATTEMPTS {
                        return Err(kept_failing("mark_queued", &reason));
                    }
                    backoff(retries).await;
                }
            }
        }
        Ok(())
    }

    /// `PENDING` → `QUEUED`: out of the pending index, kept [`QUEUED_RETENTION_SECS`].
    fn mark_action(&self, org: &str, id: &str) -> StoreResult<TransactWriteItem> {
        let mut e = Expr::default();
        let update = lifecycle::status_update(&mut e, DeploymentStatus::Queued, Vec::new(), &[], false);
        let condition = e.equals(STATUS, "pending", s(DeploymentStatus::Pending.as_str()));
        self.action(Write::Update(deployment_key(org, id), update), Some(condition), &e)
    }
}

/// What becomes of an entry after a transaction.
enum Settled<'a> {
    Done(StoreResult<RecordOutcome>, Entry<'a>),
    Again(Entry<'a>),
}

/// Apply `decide` (by position in `todo`) to every entry: those it decides go to `done` or
/// back in the returned list, the others stay as they were.
fn settle<'a>(
    todo: Vec<Entry<'a>>,
    decide: impl Fn(usize, Entry<'a>) -> Option<Settled<'a>>,
    done: &mut Vec<Outcome>,
) -> Vec<Entry<'a>> {
    let mut next = Vec::with_capacity(todo.len());
    for (position, entry) in todo.into_iter().enumerate() {
        match decide(position, entry) {
            None => next.push(entry),
            Some(Settled::Again(entry)) => next.push(entry),
            Some(Settled::Done(outcome, entry)) => done.push((entry.index, outcome)),
        }
    }
    next
}

/// The candidates of `round` (indexes into `candidates`) in transactions of at most
/// [`MAX_TRANSACTION_ITEMS`] actions.
fn groups(round: Vec<usize>, candidates: &[Candidate]) -> Vec<Vec<Entry<'_>>> {
    let mut groups: Vec<Vec<Entry<'_>>> = Vec::new();
    let mut items = 0;
    for index in round {
        let candidate = &candidates[index];
        let size = actions_per_candidate(&candidate.guard);
        if groups.is_empty() || items + size > MAX_TRANSACTION_ITEMS {
            groups.push(Vec::new());
            items = 0;
        }
        items += size;
        if let Some(group) = groups.last_mut() {
            group.push(Entry {
                index,
                candidate,
                stage: Stage::Fresh,
            });
        }
    }
    groups
}

/// How many actions record a candidate with `guard`.
fn actions_per_candidate(guard: &Guard) -> usize {
    match guard {
        Guard::Push { .. } => PUSH_ACTIONS,
        Guard::ServiceUnchanged { .. } | Guard::StillAsRead { .. } => IMAGE_ACTIONS,
    }
}

/// The candidates in rounds (indexes into `candidates`, in order) that hold each service at
/// most once: one transaction cannot touch an item twice, and a service's later candidate
/// must see what its earlier one wrote. A request names each service once, so it is one round.
fn rounds(candidates: &[Candidate]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (index, candidate) in candidates.iter().enumerate() {
        let request = &candidate.request;
        let occurrence = seen
            .entry((&request.organization_id, &request.service_id))
            .and_modify(|n| *n += 1)
            .or_insert(0);
        if rounds.len() <= *occurrence {
            rounds.resize_with(*occurrence + 1, Vec::new);
        }
        rounds[*occurrence].push(index);
    }
    rounds
}

#[cfg(test)]
mod tests {
    use autodeploy_core::deployment::{SCHEMA, Trigger};
    use autodeploy_core::model::ServiceKind;
    use autodeploy_core::provider::GitProvider;

    use super::*;

    fn candidate(service: &str) -> Candidate {
        Candidate {
            request: DeploymentRequest {
                schema: SCHEMA.to_owned(),
                deployment_id: crate::util::new_deployment_id(),
                organization_id: "acme".to_owned(),
                environment_id: "production".to_owned(),
                service_id: service.to_owned(),
                service_kind: ServiceKind::Application,
                git_commit_id: Some("b".repeat(40)),
                image_tag: None,
                trigger: Trigger::GitPush {
                    provider: GitProvider::Github,
                    repository: "github.com/acme/shop".to_owned(),
                    branch: "main".to_owned(),
                    before: "a".repeat(40),
                    commit_sha: "b".repeat(40),
                    delivery_id: None,
                    pusher: None,
                },
                requested_at: "2026-01-01T00:00:00Z".to_owned(),
            },
            guard: Guard::Push {
                mark: format!("{}..{}", "a".repeat(40), "b".repeat(40)),
                before: "a".repeat(40),
            },
        }
    }

    #[test]
    fn a_service_named_twice_waits_for_the_next_round() {
        let candidates: Vec<Candidate> = ["a", "b", "a", "c", "a"].iter().map(|s| candidate(s)).collect();
        assert_eq!(rounds(&candidates), vec![vec![0, 1, 3], vec![2], vec![4]]);
    }

    #[test]
    fn transactions_hold_at_most_a_hundred_actions() {
        let candidates: Vec<Candidate> = (0..1000).map(|i| candidate(&format!("s{i}"))).collect();
        let round: Vec<usize> = (0..candidates.len()).collect();
        let groups = groups(round, &candidates);
        // Three actions a push: 33 services a transaction, 31 transactions for 1,000.
        assert_eq!(PUSH_RECORDS_PER_TRANSACTION, 33);
        assert_eq!(groups.len(), 1000usize.div_ceil(PUSH_RECORDS_PER_TRANSACTION));
        assert!(groups.iter().all(|g| g.len() * 3 <= MAX_TRANSACTION_ITEMS));
        let indexes: Vec<usize> = groups.iter().flatten().map(|e| e.index).collect();
        assert_eq!(indexes, (0..1000).collect::<Vec<_>>(), "every candidate once, in order");
    }
}
