//! Deploy targets, and the dispatcher's side of the deployment log: taking the work of
//! services with a target, and recording each attempt's end.

use async_trait::async_trait;
use autodeploy_core::deployment::{DeploymentRecord, DeploymentStatus};
use autodeploy_core::target::{TargetSpec, TargetType};
use rusqlite::{Connection, OptionalExtension, params};

use super::deployments::{deployment_at, deployment_by_id, rfc3339};
use super::lifecycle::{
    DISPATCH_LEASE, NEXT_DISPATCH_RETRY, NONE_IN_PROGRESS, NOW_FOR_PULL, OPEN_OF_SERVICE, Taker, cancel_if_deleted,
    recorded_after, supersede_older, take,
};
use super::services::{ServiceKey, current_etag};
use super::{SqliteStore, from_json, page_by_id, row_by_id, to_json, unavailable};
use crate::store::{
    AttemptEnd, AttemptStart, Dispatching, Expected, LeaseRequest, Leased, Outlook, Page, PageRequest, Refusable,
    Refusal, StoreError, StoreResult, StoredTarget, TARGET_USERS_NAMED, TargetStore,
};
use crate::util::now_unix;

type TargetRow = (String, String, String, i64, String, String, String);

fn target_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TargetRow> {
    TargetRow::try_from(r)
}

fn stored_target(
    (organization_id, id, etag, version, spec, created_at, updated_at): TargetRow,
    store: &SqliteStore,
) -> StoreResult<StoredTarget> {
    let spec: TargetSpec = from_json(&store.unseal(spec)?)?;
    Ok(StoredTarget {
        id,
        organization_id,
        spec,
        etag,
        version: u64::try_from(version).unwrap_or(0),
        created_at,
        updated_at,
    })
}

const TARGET_COLUMNS: &str = "org, id, etag, version, spec, created_at, updated_at";

#[async_trait]
impl TargetStore for SqliteStore {
    async fn put_target(&self, target: &StoredTarget, expected: Expected) -> Refusable<()> {
        let woken = target.organization_id.as_str();
        let target = target.clone();
        let spec = self.seal(&to_json(&target.spec)?)?;
        let refused = self
            .write(move |conn| {
                let current = current_etag(conn, "targets", &target.organization_id, &target.id)?;
                let holds = match (&expected, current) {
                    (Expected::Absent, None) => true,
                    (Expected::Etag(want), Some(have)) => *want == have,
                    _ => false,
                };
                if !holds {
                    return Err(StoreError::PreconditionFailed);
                }
                // Checked in this write, as a service's write checks the target it names in its own.
                let kind = target.spec.target_type();
                if kind.requires_external_id() {
                    let unfit = services_unfit_for(conn, &target.organization_id, &target.id, kind)?;
                    if !unfit.is_empty() {
                        return Ok(Err(Refusal::target_type_unfit(kind, &unfit)));
                    }
                }
                // Created, or replaced keeping its creation time.
                conn.execute(
                    &format!(
                        "INSERT INTO targets ({TARGET_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                         ON CONFLICT (org, id) DO UPDATE SET etag = excluded.etag, version = excluded.version,
                            spec = excluded.spec, updated_at = excluded.updated_at"
                    ),
                    params![
                        target.organization_id,
                        target.id,
                        target.etag,
                        i64::try_from(target.version).unwrap_or(i64::MAX),
                        spec,
                        target.created_at,
                        target.updated_at
                    ],
                )
                .map_err(unavailable)?;
                // A target replaced (its URL fixed, say) ends the waits its previous form set: the
                // deployments of the services naming it waiting for a retry are tried now.
                if matches!(expected, Expected::Etag(_)) {
                    conn.prepare_cached(
                        "UPDATE deployments SET next_attempt_unix = NULL
                         WHERE org = ?1 AND status = 'QUEUED' AND next_attempt_unix IS NOT NULL
                           AND service_id IN (SELECT id FROM services WHERE org = ?1 AND target_id = ?2)",
                    )
                    .and_then(|mut stmt| stmt.execute(params![target.organization_id, target.id]))
                    .map_err(unavailable)?;
                }
                Ok(Ok(()))
            })
            .await?;
        if refused.is_ok() {
            self.work_changed(woken);
        }
        Ok(refused)
    }

    async fn get_target(&self, org: &str, id: &str) -> StoreResult<Option<StoredTarget>> {
        let select = format!("SELECT {TARGET_COLUMNS} FROM targets");
        let target = |row| stored_target(row, self);
        self.read(|conn| row_by_id(conn, &select, (org, id), target_row, target))
    }

    async fn count_targets(&self, org: &str, up_to: u32) -> StoreResult<u32> {
        self.read(|conn| {
            conn.prepare_cached("SELECT count(*) FROM (SELECT 1 FROM targets WHERE org = ?1 LIMIT ?2)")
                .and_then(|mut stmt| stmt.query_row(params![org, up_to], |r| r.get(0)))
                .map_err(unavailable)
        })
    }

    async fn list_targets(&self, org: &str, page: PageRequest<'_>) -> StoreResult<Page<StoredTarget>> {
        let select = format!("SELECT {TARGET_COLUMNS} FROM targets");
        let target = |row| stored_target(row, self);
        self.read(|conn| page_by_id(conn, &select, (org, page), target_row, target, |t| t.id.clone()))
    }

    async fn delete_target(&self, org: &str, id: &str, expected: Option<&str>) -> Refusable<bool> {
        let (org, id, expected) = (org.to_owned(), id.to_owned(), expected.map(str::to_owned));
        self.write(move |conn| {
            // The condition, in the write that deletes (as a service's deletion checks it).
            if let Some(want) = &expected
                && current_etag(conn, "targets", &org, &id)?.as_ref() != Some(want)
            {
                return Err(StoreError::PreconditionFailed);
            }
            let users: Vec<String> = {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "{} ORDER BY id LIMIT {}",
                        ServiceKey::Target.select("id"),
                        TARGET_USERS_NAMED + 1
                    ))
                    .map_err(unavailable)?;
                let rows = stmt
                    .query_map(params![org, id], |r| r.get::<_, String>(0))
                    .map_err(unavailable)?;
                rows.collect::<Result<_, _>>().map_err(unavailable)?
            };
            if !users.is_empty() {
                return Ok(Err(Refusal::target_in_use(&users)));
            }
            let n = conn
                .execute("DELETE FROM targets WHERE org = ?1 AND id = ?2", params![org, id])
                .map_err(unavailable)?;
            Ok(Ok(n > 0))
        })
        .await
    }
}

/// The ids, in id order, of the services of `org` naming target `id` whose `external_id` a
/// target of type `kind` does not take.
fn services_unfit_for(conn: &Connection, org: &str, id: &str, kind: TargetType) -> StoreResult<Vec<String>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "{} ORDER BY id",
            ServiceKey::Target.select("id, json_extract(data, '$.deploy_target.external_id')")
        ))
        .map_err(unavailable)?;
    let rows = stmt
        .query_map(params![org, id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })
        .map_err(unavailable)?;
    let mut unfit = Vec::new();
    for row in rows {
        let (service, external_id) = row.map_err(unavailable)?;
        if !kind.accepts_external_id(external_id.as_deref()) {
            unfit.push(service);
        }
    }
    Ok(unfit)
}

fn begin(conn: &Connection, org: &str, id: &str, now: i64) -> StoreResult<AttemptStart> {
    let current: Option<(i64, String, String, Option<i64>)> = conn
        .query_row(
            "SELECT seq, service_id, status, next_attempt_unix FROM deployments WHERE org = ?1 AND id = ?2",
            params![org, id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(unavailable)?;
    let Some((seq, service, status, next_attempt_unix)) = current else {
        return Ok(AttemptStart::NotFound);
    };
    let status = DeploymentStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown deployment status {status}")))?;
    if !status.is_waiting() {
        return Ok(AttemptStart::NotWaiting(status));
    }
    // Latest wins: a newer deployment of the service was recorded (it waits, or was taken and
    // finished: an engine reported it), so this one is never delivered.
    let newer = recorded_after(conn, org, &service, seq)?;
    let stamp = rfc3339(now);
    if newer {
        conn.execute(
            "UPDATE deployments SET status = 'SUPERSEDED', next_attempt_unix = NULL, updated_at = ?3, updated_unix = ?4
             WHERE seq = ?1 AND org = ?2",
            params![seq, org, stamp, now],
        )
        .map_err(unavailable)?;
        return Ok(AttemptStart::Superseded);
    }
    if let Some(next_attempt_unix) = next_attempt_unix.filter(|&at| at > now) {
        return Ok(AttemptStart::NotDue { next_attempt_unix });
    }
    supersede_older(conn, org, &service, seq, now)?;
    conn.execute(
        "UPDATE deployments SET status = 'IN_PROGRESS', attempts = attempts + 1, next_attempt_unix = NULL,
            lease_id = ?2, lease_expires_unix = ?3, updated_at = ?4, updated_unix = ?5
         WHERE seq = ?1",
        params![
            seq,
            format!("{DISPATCH_LEASE}{}", uuid::Uuid::new_v4().simple()),
            now + DISPATCH_LEASE_SECS,
            stamp,
            now
        ],
    )
    .map_err(unavailable)?;
    let record = deployment_at(conn, seq)?;
    Ok(AttemptStart::Started(Box::new(record)))
}

/// How long the dispatcher holds a deployment it is delivering: well past an attempt's
/// timeout. A dispatcher that died holding it gives it back after this (a restart at once).
pub const DISPATCH_LEASE_SECS: i64 = 120;

fn end(conn: &Connection, org: &str, id: &str, end: &AttemptEnd, now: i64) -> StoreResult<Option<DeploymentRecord>> {
    let stamp = rfc3339(now);
    let (status, error, next_attempt): (&str, Option<&str>, Option<i64>) = match end {
        AttemptEnd::Delivered => ("DELIVERED", None, None),
        AttemptEnd::Failed { error } => ("FAILED", Some(error), None),
        AttemptEnd::Retry {
            error,
            next_attempt_unix,
        } => ("QUEUED", Some(error), Some(*next_attempt_unix)),
        AttemptEnd::Release { note } => ("QUEUED", Some(note), None),
    };
    let ended: Option<(String, i64)> = conn
        .prepare_cached(&format!(
            "UPDATE deployments SET status = ?3,
                last_error = CASE WHEN ?3 = 'DELIVERED' THEN NULL ELSE coalesce(?4, last_error) END,
                next_attempt_unix = CASE WHEN {NOW_FOR_PULL} THEN NULL ELSE ?5 END,
                lease_id = NULL, lease_expires_unix = NULL, updated_at = ?6, updated_unix = ?7
             WHERE org = ?1 AND id = ?2 AND status = 'IN_PROGRESS' RETURNING service_id, seq"
        ))
        .and_then(|mut stmt| {
            stmt.query_row(params![org, id, status, error, next_attempt, stamp, now], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(unavailable)?;
    let Some((service, seq)) = ended else {
        return Ok(None);
    };
    // A retry's newer sibling supersedes it when its turn comes (as on DynamoDB).
    if status == "QUEUED" {
        cancel_if_deleted(conn, org, &service, seq, now)?;
    }
    deployment_by_id(conn, org, id)
}

#[async_trait]
impl Dispatching for SqliteStore {
    async fn begin_attempt(&self, org: &str, id: &str) -> StoreResult<AttemptStart> {
        let (org, id) = (org.to_owned(), id.to_owned());
        self.write(move |conn| begin(conn, &org, &id, now_unix())).await
    }

    async fn end_attempt(
        &self,
        org: &str,
        id: &str,
        attempt_end: &AttemptEnd,
    ) -> StoreResult<Option<DeploymentRecord>> {
        let woken = org;
        let (org, id, attempt_end) = (org.to_owned(), id.to_owned(), attempt_end.clone());
        let ended = self
            .write(move |conn| end(conn, &org, &id, &attempt_end, now_unix()))
            .await?;
        // A service's next deployment may be waiting behind this one; a retry falls due later.
        self.work_changed(woken);
        Ok(ended)
    }
}

impl SqliteStore {
    /// The standalone dispatcher's take: the work of up to `max` services with a deploy
    /// target, in every organization, latest wins (see [`crate::store::PullQueue::lease`]).
    pub async fn take_for_dispatch(&self, max: usize) -> StoreResult<Vec<Leased>> {
        let max_attempts = self.inner.max_attempts;
        let request = LeaseRequest {
            max,
            lease_secs: DISPATCH_LEASE_SECS,
        };
        self.write(move |conn| take(conn, None, Taker::Dispatch, request, now_unix(), max_attempts))
            .await
    }

    /// Whether the dispatcher has work now, and when it will otherwise.
    pub fn dispatch_outlook(&self) -> StoreResult<Outlook> {
        let now = now_unix();
        self.read(|conn| {
            // Driven from the services with a target, like the dispatcher's take.
            // The dispatcher asks after every recorded delivery: prepared once per connection.
            let available: bool = conn
                .prepare_cached(&format!(
                    "SELECT EXISTS (SELECT 1 FROM services s WHERE s.target_id IS NOT NULL
                       AND EXISTS (SELECT 1 FROM deployments d WHERE {OPEN_OF_SERVICE} AND d.status = 'QUEUED'
                           AND (d.next_attempt_unix IS NULL OR d.next_attempt_unix <= ?1))
                       AND {NONE_IN_PROGRESS})"
                ))
                .and_then(|mut stmt| stmt.query_row(params![now], |r| r.get(0)))
                .map_err(unavailable)?;
            let next_due: Option<i64> = conn
                .prepare_cached(NEXT_DISPATCH_RETRY)
                .and_then(|mut stmt| stmt.query_row(params![now], |r| r.get(0)))
                .map_err(unavailable)?;
            Ok(Outlook {
                available,
                next_due_unix: next_due,
            })
        })
    }

    /// Give back, at once, the deployments a previous run of the dispatcher held when it
    /// stopped (killed mid-delivery): they are tried again.
    pub async fn release_dispatch_leases(&self) -> StoreResult<usize> {
        self.write(|conn| {
            let now = now_unix();
            let released: Vec<(String, String, i64)> = conn
                .prepare(&format!(
                    "UPDATE deployments SET status = 'QUEUED', lease_id = NULL, lease_expires_unix = NULL,
                        last_error = 'the server stopped during the attempt; it is tried again', updated_at = ?1, updated_unix = ?2
                     WHERE status = 'IN_PROGRESS' AND lease_id LIKE '{DISPATCH_LEASE}%' RETURNING org, service_id, seq"
                ))
                .and_then(|mut stmt| {
                    stmt.query_map(params![rfc3339(now), now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect()
                })
                .map_err(unavailable)?;
            for (org, service, seq) in &released {
                cancel_if_deleted(conn, org, service, *seq, now)?;
            }
            Ok(released.len())
        })
        .await
    }
}
