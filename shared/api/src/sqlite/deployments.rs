//! The deployment log, which is also the queue: recording deployments with their guards, and
//! reading them back.

use std::collections::HashSet;

use async_trait::async_trait;
use autodeploy_core::delivery::CandidateFate;
use autodeploy_core::deployment::{DeploymentRecord, DeploymentRequest, DeploymentResult, DeploymentStatus};
use autodeploy_core::matching::is_replay;
use rusqlite::{Connection, OptionalExtension, params};

use super::services::ServiceRow;
use super::{SqliteStore, collect, execute, from_json, page, row_by_id, to_json, unavailable};
use crate::store::{
    Batch, Candidate, DeliveryKey, DeploymentLog, DeploymentQuery, Guard, PUSH_MARK_RETENTION_SECS, Page, PageRequest,
    RecordOutcome, Refusable, StoreError, StoreResult,
};
use crate::util::now_unix;

pub(super) const DEPLOYMENT_COLUMNS: &str = "data, status, attempts, last_error, updated_at, next_attempt_unix, result";

type DeploymentRow = (String, String, u32, Option<String>, String, Option<i64>, Option<String>);

pub(super) fn deployment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeploymentRow> {
    DeploymentRow::try_from(r)
}

pub(super) fn deployment_record(
    (data, status, attempts, last_error, updated_at, next_attempt_unix, result): DeploymentRow,
) -> StoreResult<DeploymentRecord> {
    let status = DeploymentStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown deployment status {status}")))?;
    Ok(DeploymentRecord {
        request: from_json(&data)?,
        status,
        attempts,
        last_error,
        updated_at,
        next_attempt_at: next_attempt_unix.map(rfc3339),
        result: result.as_deref().map(from_json).transpose()?,
    })
}

/// The deployment `id` of `org`, if there is one.
pub(super) fn deployment_by_id(conn: &Connection, org: &str, id: &str) -> StoreResult<Option<DeploymentRecord>> {
    let select = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments");
    row_by_id(conn, &select, (org, id), deployment_row, deployment_record)
}

/// The deployment at `seq` in the log, which the caller knows is there.
pub(super) fn deployment_at(conn: &Connection, seq: i64) -> StoreResult<DeploymentRecord> {
    conn.query_row(
        &format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE seq = ?1"),
        params![seq],
        deployment_row,
    )
    .map_err(unavailable)
    .and_then(deployment_record)
}

pub(super) use crate::util::unix_rfc3339 as rfc3339;

/// Whether the service queued the push whose stored mark ([`super::stored_mark`]) is `?3`
/// after a time.
pub(super) const PUSH_QUEUED_SINCE: &str = "SELECT EXISTS (SELECT 1 FROM push_marks
    WHERE org = ?1 AND service_id = ?2 AND mark = ?3 AND queued_unix > ?4)";
/// A push's stored mark, unless the service has it already (then nothing changes).
pub(super) const ADD_PUSH_MARK: &str =
    "INSERT INTO push_marks (org, service_id, mark, queued_unix) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING";
pub(super) const RENEW_PUSH_MARK: &str =
    "UPDATE push_marks SET queued_unix = ?4 WHERE org = ?1 AND service_id = ?2 AND mark = ?3";
pub(super) const SET_LAST_PUSH: &str = "UPDATE services SET last_push = ?3 WHERE org = ?1 AND id = ?2";
/// A delivery id, unless `?5` is a time at which it is remembered already and not expired
/// (then nothing changes).
pub(super) const REMEMBER_DELIVERY: &str =
    "INSERT INTO deliveries (org, provider, id, expires_at) VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (org, provider, id) DO UPDATE SET expires_at = excluded.expires_at
        WHERE ?5 IS NULL OR deliveries.expires_at <= ?5";

/// What a guard let through: nothing (`None`, nothing written), or the deployment of a service
/// that has a deploy target (`Some(true)`, work for the dispatcher) or not.
type Guarded = Option<bool>;

/// Check `guard` and make its write.
fn apply_guard(conn: &Connection, org: &str, service_id: &str, guard: &Guard, now: i64) -> StoreResult<Guarded> {
    match guard {
        Guard::Push { mark, before } => {
            let service: Option<(Option<String>, bool)> = conn
                .prepare_cached("SELECT last_push, target_id IS NOT NULL FROM services WHERE org = ?1 AND id = ?2")
                .and_then(|mut stmt| stmt.query_row(params![org, service_id], |r| Ok((r.get(0)?, r.get(1)?))))
                .optional()
                .map_err(unavailable)?;
            let Some((last_push, to_target)) = service else {
                return Ok(None);
            };
            let stored = super::stored_mark(mark);
            // Most pushes are new to the service: adding the mark is the check.
            if execute(conn, ADD_PUSH_MARK, params![org, service_id, stored, now])? == 0 {
                // Queued before: the replay rule decides, and nothing is written yet.
                let queued_before: bool = conn
                    .prepare_cached(PUSH_QUEUED_SINCE)
                    .and_then(|mut stmt| {
                        stmt.query_row(params![org, service_id, stored, now - PUSH_MARK_RETENTION_SECS], |r| {
                            r.get(0)
                        })
                    })
                    .map_err(unavailable)?;
                if is_replay(mark, before, last_push.as_deref(), queued_before) {
                    return Ok(None);
                }
                execute(conn, RENEW_PUSH_MARK, params![org, service_id, stored, now])?;
            }
            execute(conn, SET_LAST_PUSH, params![org, service_id, mark])?;
            Ok(Some(to_target))
        }
        // In the writer's transaction: nothing newer than `again` can come in between.
        Guard::StillAsRead { etag, last_push, again } => conn
            .prepare_cached(
                "SELECT target_id IS NOT NULL FROM services
                 WHERE org = ?1 AND id = ?2 AND etag = ?3 AND last_push IS ?4
                 AND NOT EXISTS (SELECT 1 FROM deployments
                                 WHERE org = ?1 AND service_id = ?2 AND id > ?5)",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![org, service_id, etag, last_push, again], |r| r.get(0))
                    .optional()
            })
            .map_err(unavailable),
        Guard::ServiceUnchanged { expected, updated } => {
            let row = ServiceRow::of(&updated.service)?;
            let changed = conn
                .execute(
                    "UPDATE services SET etag = ?4, data = ?5, repository = ?6, image_path = ?7,
                     target_id = json_extract(?5, '$.deploy_target.target_id')
                     WHERE org = ?1 AND id = ?2 AND etag = ?3",
                    params![
                        org,
                        service_id,
                        expected,
                        updated.etag,
                        row.data,
                        row.repository,
                        row.image_path
                    ],
                )
                .map_err(unavailable)?;
            Ok((changed == 1).then_some(updated.service.spec.deploy_target.is_some()))
        }
    }
}

pub(super) const INSERT_DEPLOYMENT: &str = "INSERT INTO deployments
    (org, id, service_id, status, data, updated_at, updated_unix) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Insert `request`, `data` being its JSON.
fn insert_deployment(
    conn: &Connection,
    request: &DeploymentRequest,
    data: &str,
    status: DeploymentStatus,
    now: i64,
) -> StoreResult<()> {
    execute(
        conn,
        INSERT_DEPLOYMENT,
        params![
            request.organization_id,
            request.deployment_id,
            request.service_id,
            status.as_str(),
            data,
            rfc3339(now),
            now
        ],
    )?;
    // Checked at every 16th deployment of the service: the bound holds within 15, at a
    // sixteenth of the cost.
    if status == DeploymentStatus::Queued
        && super::lifecycle::bound_check_due(&request.organization_id, &request.service_id)
    {
        super::lifecycle::supersede_beyond_kept(conn, &request.organization_id, &request.service_id, now)?;
    }
    Ok(())
}

/// Remember a processed delivery; with `unless_live_at`, `false` when it was remembered
/// already and not expired at that time (nothing changes then).
pub(super) fn remember(
    conn: &Connection,
    org: &str,
    delivery: &DeliveryKey,
    unless_live_at: Option<i64>,
) -> StoreResult<bool> {
    let changed = execute(
        conn,
        REMEMBER_DELIVERY,
        params![org, delivery.source, delivery.id, delivery.expires_unix, unless_live_at],
    )?;
    Ok(changed == 1)
}

impl SqliteStore {
    /// Every deployment recorded after `after_seq`, in the order they were committed (the
    /// order the queue hands them out), as queue messages: for tests and tools, not an interface.
    pub async fn queued_messages(&self, after_seq: i64, limit: usize) -> StoreResult<Vec<(i64, DeploymentRequest)>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT seq, data FROM deployments WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![after_seq, limit as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(unavailable)?;
            collect(rows, |(seq, data)| Ok((seq, from_json(&data)?)))
        })
    }
}

#[async_trait]
impl DeploymentLog for SqliteStore {
    async fn record_deployments(&self, batch: Batch<'_>) -> StoreResult<Vec<StoreResult<RecordOutcome>>> {
        let Batch {
            org,
            candidates: owned,
            delivery,
            history,
        } = batch;
        let org = org.to_owned();
        // Serialized here, on the request's thread: the one writer thread only writes.
        let documents = owned
            .iter()
            .map(|c| to_json(&c.request))
            .collect::<StoreResult<Vec<String>>>()?;
        let (store, written) = (self.clone(), std::sync::Arc::clone(&owned));
        // A guard that writes the service (an image tag's) changes what is kept in memory.
        let changes_services = owned.iter().any(|c| matches!(c.guard, Guard::ServiceUnchanged { .. }));
        let changed_org = org.clone();
        let write = move |conn: &Connection| {
            let now = now_unix();
            // First, in the write: a copy of the delivery committed since the request looked
            // it up (both arrived at once) leaves this one nothing to do.
            if let Some(delivery) = &delivery
                && !remember(conn, &org, delivery, Some(now))?
            {
                return Err(StoreError::DeliveryProcessed);
            }
            let mut outcomes = Vec::with_capacity(owned.len());
            let mut to_dispatch = false;
            for (Candidate { request, guard }, data) in owned.iter().zip(&documents) {
                if request.organization_id != org {
                    return Err(StoreError::Unavailable(
                        "a deployment of another organization".to_owned(),
                    ));
                }
                if let Some(to_target) = apply_guard(conn, &org, &request.service_id, guard, now)? {
                    // The store is the queue: recorded is queued.
                    insert_deployment(conn, request, data, DeploymentStatus::Queued, now)?;
                    outcomes.push(RecordOutcome::Recorded(DeploymentStatus::Queued));
                    to_dispatch |= to_target;
                } else {
                    outcomes.push(RecordOutcome::GuardFailed);
                }
            }
            if let Some(draft) = &history {
                let fates = owned.iter().zip(&outcomes).map(|(c, o)| match o {
                    RecordOutcome::Recorded(_) => CandidateFate::Recorded(&c.request.deployment_id),
                    RecordOutcome::GuardFailed => CandidateFate::AlreadyQueued {
                        service_id: &c.request.service_id,
                    },
                });
                super::history::insert(conn, &draft.complete(fates))?;
            }
            Ok((outcomes, to_dispatch))
        };
        // The wake-ups follow the commit in a task of their own, so that a caller hanging up
        // meanwhile cannot leave committed work unannounced.
        let announced = tokio::spawn(async move {
            let result = store.write(write).await;
            if changes_services {
                store.services_changed(&changed_org);
            }
            let (outcomes, to_dispatch) = result?;
            let recorded: Vec<&DeploymentRequest> = written
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| matches!(o, RecordOutcome::Recorded(_)))
                .map(|(c, _)| &c.request)
                .collect();
            store.recorded(&recorded, to_dispatch);
            Ok::<_, StoreError>(outcomes)
        });
        let outcomes = announced
            .await
            .map_err(|_| StoreError::Unavailable("the write's task ended without an answer".to_owned()))??;
        Ok(outcomes.into_iter().map(Ok).collect())
    }

    async fn get_deployment(&self, org: &str, id: &str) -> StoreResult<Option<DeploymentRecord>> {
        self.read(|conn| deployment_by_id(conn, org, id))
    }

    async fn list_deployments(&self, org: &str, query: &DeploymentQuery<'_>) -> StoreResult<Page<DeploymentRecord>> {
        let (filter, PageRequest { after, limit }) = (&query.filter, query.page);
        // Ids are time-ordered; "after" in newest-first order means a smaller id.
        let before = after.map(str::to_owned).unwrap_or_else(|| "g".repeat(32));
        let status = filter.status.map(DeploymentStatus::as_str);
        // One statement per filter, each served by its own index.
        let (condition, value) = match (&filter.service_id, status) {
            (None, None) => ("", None),
            (Some(service), None) => ("AND service_id = ?4", Some(service.as_str())),
            (None, Some(status)) => ("AND status = ?4", Some(status)),
            (Some(service), Some(_)) => ("AND service_id = ?4 AND status = ?5", Some(service.as_str())),
        };
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE org = ?1 AND id < ?2 {condition}
                     ORDER BY id DESC LIMIT ?3"
                ))
                .map_err(unavailable)?;
            let fetch = (limit + 1) as i64;
            let rows = match (value, filter.service_id.is_some() && status.is_some()) {
                (None, _) => stmt.query_map(params![org, before, fetch], deployment_row),
                (Some(v), false) => stmt.query_map(params![org, before, fetch, v], deployment_row),
                (Some(v), true) => stmt.query_map(params![org, before, fetch, v, status], deployment_row),
            }
            .map_err(unavailable)?;
            let items = collect(rows, deployment_record)?;
            Ok(page(items, limit, |d| d.request.deployment_id.clone()))
        })
    }

    async fn pending_deployments(&self, limit: usize) -> StoreResult<Vec<DeploymentRecord>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE status = 'PENDING' ORDER BY id LIMIT ?1"
                ))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![limit as i64], deployment_row)
                .map_err(unavailable)?;
            collect(rows, deployment_record)
        })
    }

    async fn held_behind_pending(&self, requests: &[DeploymentRequest], before: &str) -> StoreResult<HashSet<String>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM deployments \
                     WHERE org = ?1 AND service_id = ?2 AND id < min(?3, ?4) AND status = 'PENDING')",
                )
                .map_err(unavailable)?;
            let mut held = HashSet::new();
            for r in requests {
                let older: bool = stmt
                    .query_row(
                        params![r.organization_id, r.service_id, r.deployment_id, before],
                        |row| row.get(0),
                    )
                    .map_err(unavailable)?;
                if older {
                    held.insert(r.deployment_id.clone());
                }
            }
            Ok(held)
        })
    }

    async fn report_result(&self, org: &str, id: &str, result: &DeploymentResult) -> Refusable<DeploymentRecord> {
        let woken = org;
        let (org, id, result) = (org.to_owned(), id.to_owned(), result.clone());
        let outcome = self
            .write(move |conn| super::lifecycle::report(conn, &org, &id, &result))
            .await?;
        // A result frees the service for its newer work.
        self.work_changed(woken);
        Ok(outcome)
    }

    async fn mark_queued(&self, org: &str, deployment_ids: &[String]) -> StoreResult<()> {
        let (org, ids) = (org.to_owned(), deployment_ids.to_vec());
        self.write(move |conn| {
            let now = now_unix();
            for id in &ids {
                conn.execute(
                    "UPDATE deployments SET status = 'QUEUED', updated_at = ?3, updated_unix = ?4
                     WHERE org = ?1 AND id = ?2 AND status = 'PENDING'",
                    params![org, id, rfc3339(now), now],
                )
                .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use autodeploy_core::deployment::Trigger;
    use autodeploy_core::model::{Service, parse_service_document};
    use autodeploy_core::provider::GitProvider;
    use serde_json::json;

    use super::*;
    use crate::store::{Expected, ServiceStore, StoredService, TargetStore, TenantLimits};

    async fn put_service(store: &SqliteStore, id: &str, target: Option<&str>) -> Service {
        put_service_of(store, "acme", id, target).await
    }

    async fn put_service_of(store: &SqliteStore, org: &str, id: &str, target: Option<&str>) -> Service {
        let mut doc = json!({"environment_id": "prod", "kind": "APPLICATION", "auto_deploy": true,
            "git_repository": {"provider": "GITHUB", "url": "https://github.com/acme/shop", "branch": "main"}});
        if let Some(target) = target {
            doc["deploy_target"] = json!({"target_id": target});
            // A service names an existing target only.
            let stored = crate::store::StoredTarget {
                id: target.to_owned(),
                organization_id: org.to_owned(),
                spec: autodeploy_core::target::Target::Webhook {
                    url: "https://deploy.example.com/hook".to_owned(),
                    secret: autodeploy_core::target::Secret::new(
                        autodeploy_core::target::signature::webhook_secret_from(&[7; 32]),
                    ),
                },
                etag: format!("etag-{target}"),
                version: 1,
                created_at: String::new(),
                updated_at: String::new(),
            };
            if store.get_target(org, target).await.unwrap().is_none() {
                store.put_target(&stored, Expected::Absent).await.unwrap().unwrap();
            }
        }
        let service = Service {
            id: id.to_owned(),
            organization_id: org.to_owned(),
            spec: parse_service_document(org, id, &doc).unwrap(),
            version: 1,
            created_at: String::new(),
            updated_at: String::new(),
        };
        // Created, or replaced (its destination changed).
        let expected = match store.get_service(org, id).await.unwrap() {
            Some(current) => Expected::Etag(current.etag),
            None => Expected::Absent,
        };
        let stored = StoredService::new(service.clone(), uuid::Uuid::new_v4().simple().to_string());
        store
            .put_service(&stored, expected, TenantLimits::default())
            .await
            .unwrap();
        service
    }

    fn push_to(service: &Service, after: &str) -> Candidate {
        let trigger = Trigger::GitPush {
            provider: GitProvider::Github,
            repository: "github.com/acme/shop".to_owned(),
            branch: "main".to_owned(),
            before: "0".repeat(40),
            commit_sha: after.to_owned(),
            delivery_id: None,
            pusher: None,
        };
        Candidate {
            request: DeploymentRequest::new(
                crate::util::new_deployment_id(),
                &service.organization_id,
                service,
                trigger,
                "2026-12-05T00:00:00Z",
            ),
            guard: Guard::Push {
                mark: format!("{}..{after}", "0".repeat(40)),
                before: "0".repeat(40),
            },
        }
    }

    /// Whether `notify` is woken while `record` runs.
    async fn wakes(notify: std::sync::Arc<tokio::sync::Notify>, record: impl std::future::Future<Output = ()>) -> bool {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        record.await;
        tokio::time::timeout(Duration::from_millis(200), notified).await.is_ok()
    }

    /// A recorded deployment wakes the pull consumers' waiters; the dispatcher's only when it
    /// is for a service with a deploy target, as most on a busy server are not.
    #[tokio::test]
    async fn only_deployments_for_a_target_wake_the_dispatcher() {
        let (_dir, store) = super::super::plans::temp_store();
        let pulled = put_service(&store, "pulled", None).await;
        let dispatched = put_service(&store, "dispatched", Some("hook")).await;
        for (service, to_dispatcher) in [(&pulled, false), (&dispatched, true)] {
            for (notify, woken) in [
                (store.work_notifier("acme"), true),
                (store.dispatch_notifier(), to_dispatcher),
            ] {
                let candidates = [push_to(service, &crate::util::new_deployment_id())];
                let record = async {
                    let outcomes = store
                        .record_deployments(Batch::new("acme", candidates.to_vec().into(), None, None))
                        .await
                        .unwrap();
                    assert!(matches!(outcomes.as_slice(), [Ok(RecordOutcome::Recorded(_))]));
                };
                assert_eq!(wakes(notify, record).await, woken, "{}", service.id);
            }
        }
    }

    /// A recorded deployment wakes its own organization's pull consumers only: the long polls
    /// of every other organization would each look at the database for nothing.
    #[tokio::test]
    async fn a_deployment_wakes_its_own_organizations_consumers_only() {
        let (_dir, store) = super::super::plans::temp_store();
        let elsewhere = put_service_of(&store, "other", "web", None).await;
        let own = put_service(&store, "web", None).await;
        assert!(!wakes(store.work_notifier("acme"), record_one(&store, &elsewhere)).await);
        assert!(wakes(store.work_notifier("acme"), record_one(&store, &own)).await);
    }

    /// However many organizations keep the dispatcher's attempts busy, the last free places
    /// go only to an organization with nothing in flight.
    #[tokio::test]
    async fn the_dispatcher_keeps_places_for_organizations_with_nothing_in_flight() {
        use crate::sqlite::DISPATCH_PLACES_KEPT_FOR_IDLE_ORGANIZATIONS as KEPT;
        let (_dir, store) = super::super::plans::temp_store();
        for org in ["busy", "busier"] {
            for n in 0..70 {
                let service = put_service_of(&store, org, &format!("svc-{n}"), Some("hook")).await;
                record_one(&store, &service).await;
            }
        }
        // 128 places free: both take turns, and leave the kept places.
        let first = store.take_for_dispatch(128).await.unwrap();
        assert_eq!(first.len(), 128 - KEPT);
        let of = |org: &str| first.iter().filter(|l| l.record.request.organization_id == org).count();
        assert_eq!((of("busy"), of("busier")), ((128 - KEPT) / 2, (128 - KEPT) / 2));
        assert!(store.take_for_dispatch(KEPT).await.unwrap().is_empty());

        let quiet = put_service_of(&store, "quiet", "web", Some("hook")).await;
        record_one(&store, &quiet).await;
        let next = store.take_for_dispatch(KEPT).await.unwrap();
        assert_eq!(orgs(&next), ["quiet"]);
    }

    /// The organizations of the deployments a take leased, in order of name.
    fn orgs(taken: &[crate::store::Leased]) -> Vec<String> {
        let mut orgs: Vec<String> = taken.iter().map(|l| l.record.request.organization_id.clone()).collect();
        orgs.sort();
        orgs
    }

    /// One new deployment of `service`, recorded.
    async fn record_one(store: &SqliteStore, service: &Service) {
        let candidates = [push_to(service, &crate::util::new_deployment_id())];
        let batch = Batch::new(&service.organization_id, candidates.to_vec().into(), None, None);
        store.record_deployments(batch).await.unwrap();
    }

    /// One new deployment of `service` (which has a target), taken by the dispatcher: its id.
    async fn taken_by_dispatcher(store: &SqliteStore, service: &Service) -> String {
        record_one(store, service).await;
        let taken = store.take_for_dispatch(10).await.unwrap();
        let [leased] = taken.as_slice() else {
            panic!("{taken:?}")
        };
        leased.record.request.deployment_id.clone()
    }

    /// The dispatcher's attempts are shared between organizations: a free one goes to the
    /// organization with the fewest deliveries in flight, however long another's waited, and
    /// none holds more than its share, so an organization whose targets never answer cannot
    /// queue the others' deliveries behind its own.
    #[tokio::test]
    async fn the_dispatcher_shares_its_attempts_between_organizations() {
        use crate::sqlite::DISPATCH_PLACES_KEPT_FOR_IDLE_ORGANIZATIONS as KEPT;
        use crate::sqlite::DISPATCH_SHARE_OF_ONE_ORGANIZATION as SHARE;
        use crate::store::{AttemptEnd, Dispatching};
        let (_dir, store) = super::super::plans::temp_store();
        // More waiting than its share: with every place free, it takes its share.
        for n in 0..SHARE + 5 {
            let service = put_service_of(&store, "busy", &format!("svc-{n}"), Some("hook")).await;
            record_one(&store, &service).await;
        }
        let first = store.take_for_dispatch(128).await.unwrap();
        assert_eq!(orgs(&first), vec!["busy"; SHARE], "past its share");
        let mut free = 128 - SHARE;

        // One with a delivery in flight and older ones waiting: a newcomer goes first.
        for n in 0..3 {
            let service = put_service_of(&store, "early", &format!("svc-{n}"), Some("hook")).await;
            record_one(&store, &service).await;
        }
        assert_eq!(orgs(&store.take_for_dispatch(KEPT + 1).await.unwrap()), ["early"]);
        free -= 1;
        let quiet = put_service_of(&store, "quiet", "web", Some("hook")).await;
        record_one(&store, &quiet).await;
        let next = store.take_for_dispatch(KEPT + 1).await.unwrap();
        assert_eq!(
            orgs(&next),
            ["quiet"],
            "before the older ones of an organization with one in flight"
        );
        free -= 1;

        // An attempt that ends gives its organization its place back.
        let ended = &first[0].record.request.deployment_id;
        store.end_attempt("busy", ended, &AttemptEnd::Delivered).await.unwrap();
        free += 1;
        let again = store.take_for_dispatch(free).await.unwrap();
        assert_eq!(orgs(&again), ["busy", "early", "early"]);
    }

    /// The end of an attempt the target answered 503, to be retried at `next_attempt_unix`.
    fn retry_at(next_attempt_unix: i64) -> crate::store::AttemptEnd {
        crate::store::AttemptEnd::Retry {
            error: "the target answered 503 Service Unavailable".to_owned(),
            next_attempt_unix,
        }
    }

    /// A deployment the dispatcher was delivering when its service was deleted, and that comes
    /// back to waiting (the target answered 503; the server restarted), is cancelled: never
    /// offered to pull consumers, for whom it was not meant.
    #[tokio::test]
    async fn a_deleted_services_attempt_that_comes_back_is_cancelled() {
        use crate::store::{CANCELLED_SERVICE_DELETED, Dispatching, LeaseRequest, PullQueue};
        let (_dir, store) = super::super::plans::temp_store();
        let dispatched = put_service(&store, "dispatched", Some("hook")).await;
        for comes_back in ["retry", "restart"] {
            let id = taken_by_dispatcher(&store, &dispatched).await;
            store.delete_service("acme", "dispatched", None).await.unwrap();
            match comes_back {
                "retry" => {
                    // What is recorded, as the dispatcher logs it: not the retry asked for.
                    let ended = store.end_attempt("acme", &id, &retry_at(0)).await.unwrap().unwrap();
                    assert_eq!(ended.status, DeploymentStatus::Failed);
                }
                _ => assert_eq!(store.release_dispatch_leases().await.unwrap(), 1),
            }
            let request = LeaseRequest {
                max: 10,
                lease_secs: 60,
            };
            assert!(store.lease("acme", request).await.unwrap().is_empty(), "{comes_back}");
            let record = store.get_deployment("acme", &id).await.unwrap().unwrap();
            assert_eq!(record.status, DeploymentStatus::Failed, "{comes_back}");
            assert_eq!(record.last_error.as_deref(), Some(CANCELLED_SERVICE_DELETED));
            put_service(&store, "dispatched", Some("hook")).await;
        }
    }

    /// A service deleted and created again under the same id is another service: what the
    /// deleted one had in progress is cancelled when it comes back (a consumer's nack, a
    /// target's 503), never offered as the new one's work; the new one's own work is, without
    /// waiting for it.
    #[tokio::test]
    async fn a_recreated_service_does_not_inherit_the_deleted_ones_work() {
        use crate::store::{CANCELLED_SERVICE_DELETED, Dispatching, LeaseRequest, PullQueue};
        let (_dir, store) = super::super::plans::temp_store();
        let request = || LeaseRequest {
            max: 10,
            lease_secs: 60,
        };
        let cancelled = |record: DeploymentRecord| {
            assert_eq!(record.status, DeploymentStatus::Failed);
            assert_eq!(record.last_error.as_deref(), Some(CANCELLED_SERVICE_DELETED));
        };
        // Leased by a consumer, given back once the service was re-created.
        let pulled = put_service(&store, "api", None).await;
        record_one(&store, &pulled).await;
        let [old] = store.lease("acme", request()).await.unwrap().try_into().unwrap();
        let old_id = old.record.request.deployment_id.clone();
        store.delete_service("acme", "api", None).await.unwrap();
        let recreated = put_service(&store, "api", None).await;
        // The new service's work is offered while the old lease is still out: it is another
        // service's, and does not hold the new one back.
        record_one(&store, &recreated).await;
        let [new] = store.lease("acme", request()).await.unwrap().try_into().unwrap();
        assert_ne!(new.record.request.deployment_id, old_id);
        store.nack("acme", &old_id, &old.lease_id, 0).await.unwrap().unwrap();
        cancelled(store.get_deployment("acme", &old_id).await.unwrap().unwrap());

        // Being delivered by the dispatcher, retried once the service was re-created.
        let dispatched = put_service(&store, "web", Some("hook")).await;
        let id = taken_by_dispatcher(&store, &dispatched).await;
        store.delete_service("acme", "web", None).await.unwrap();
        put_service(&store, "web", None).await;
        cancelled(store.end_attempt("acme", &id, &retry_at(0)).await.unwrap().unwrap());
        let leased = store.lease("acme", request()).await.unwrap();
        assert!(
            leased.iter().all(|l| l.record.request.deployment_id != id),
            "{leased:?}"
        );
    }

    /// A deployment waiting for a retry its target asked for (`Retry-After`) is tried at once
    /// when the target is replaced (its URL fixed, say), not after the wait.
    #[tokio::test]
    async fn a_replaced_target_ends_the_wait_its_previous_form_set() {
        use crate::store::Dispatching;
        let (_dir, store) = super::super::plans::temp_store();
        let dispatched = put_service(&store, "dispatched", Some("hook")).await;
        let id = taken_by_dispatcher(&store, &dispatched).await;
        let retry = retry_at(crate::util::now_unix() + 3_600);
        store.end_attempt("acme", &id, &retry).await.unwrap();
        let waiting = store.get_deployment("acme", &id).await.unwrap().unwrap();
        assert!(waiting.next_attempt_at.is_some());
        assert!(store.take_for_dispatch(10).await.unwrap().is_empty());

        let mut target = store.get_target("acme", "hook").await.unwrap().unwrap();
        let previous = std::mem::replace(&mut target.etag, "etag-fixed".to_owned());
        store
            .put_target(&target, Expected::Etag(previous))
            .await
            .unwrap()
            .unwrap();
        let due = store.get_deployment("acme", &id).await.unwrap().unwrap();
        assert_eq!((due.status, due.next_attempt_at), (DeploymentStatus::Queued, None));
        let again = store.take_for_dispatch(10).await.unwrap();
        assert_eq!(again[0].record.request.deployment_id, id);
    }

    /// A service moved to pull consumers while the dispatcher was delivering its deployment: the
    /// wait its target asked for (a 503) does not hold the deployment back from the consumers,
    /// and a consumer's nack (`retry_after_seconds`) recorded once the service has a target
    /// again does not hold it back from the dispatcher.
    #[tokio::test]
    async fn a_retry_recorded_after_the_service_changed_destination_waits_for_nothing() {
        use crate::store::{Dispatching, LeaseRequest, PullQueue};
        let (_dir, store) = super::super::plans::temp_store();
        let dispatched = put_service(&store, "dispatched", Some("hook")).await;
        let id = taken_by_dispatcher(&store, &dispatched).await;
        put_service(&store, "dispatched", None).await;
        let in_an_hour = crate::util::now_unix() + 3_600;
        store.end_attempt("acme", &id, &retry_at(in_an_hour)).await.unwrap();
        let waiting = store.get_deployment("acme", &id).await.unwrap().unwrap();
        assert_eq!(
            (waiting.status, waiting.next_attempt_at),
            (DeploymentStatus::Queued, None)
        );
        let request = LeaseRequest {
            max: 10,
            lease_secs: 60,
        };
        let leased = store.lease("acme", request).await.unwrap();
        let [item] = leased.as_slice() else {
            panic!("{leased:?}")
        };
        assert_eq!(item.record.request.deployment_id, id);

        put_service(&store, "dispatched", Some("hook")).await;
        store.nack("acme", &id, &item.lease_id, 3_600).await.unwrap().unwrap();
        let waiting = store.get_deployment("acme", &id).await.unwrap().unwrap();
        assert_eq!(
            (waiting.status, waiting.next_attempt_at),
            (DeploymentStatus::Queued, None)
        );
        let taken = store.take_for_dispatch(10).await.unwrap();
        assert_eq!(taken.len(), 1, "{taken:?}");

        // Where the destination stayed, the wait stands.
        store.end_attempt("acme", &id, &retry_at(in_an_hour)).await.unwrap();
        let waiting = store.get_deployment("acme", &id).await.unwrap().unwrap();
        assert!(waiting.next_attempt_at.is_some(), "{waiting:?}");
    }

    /// A caller that hangs up once its write is under way (a client gone, a request timed
    /// out) still leaves its committed deployment announced to the consumers and the dispatcher.
    #[tokio::test]
    async fn a_caller_gone_before_the_answer_still_announces_its_deployment() {
        let (_dir, store) = super::super::plans::temp_store();
        let dispatched = put_service(&store, "dispatched", Some("hook")).await;
        for notify in [store.work_notifier("acme"), store.dispatch_notifier()] {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let candidates = [push_to(&dispatched, &crate::util::new_deployment_id())];
            // Polled once, which hands the write to the writer, then dropped.
            let record = store.record_deployments(Batch::new("acme", candidates.to_vec().into(), None, None));
            assert!(futures::FutureExt::now_or_never(record).is_none(), "answered at once");
            let deployment = &candidates[0].request.deployment_id;
            let mut committed = false;
            for _ in 0..200 {
                if store.get_deployment("acme", deployment).await.unwrap().is_some() {
                    committed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(committed, "the write was not made");
            assert!(
                tokio::time::timeout(Duration::from_secs(2), notified).await.is_ok(),
                "the committed deployment was not announced"
            );
        }
    }
}
