//! Where each deployment stands after it is queued: leases for pull consumers (and the
//! dispatcher), acknowledgements, releases, expiry, and engines' reports.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use autodeploy_core::deployment::{DeploymentRecord, DeploymentResult};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Notify;

use super::deployments::{deployment_at, deployment_by_id, rfc3339};
use super::{SqliteStore, to_json, unavailable};
use crate::store::{LeaseRequest, Leased, Outlook, PullQueue, Refusable, Refusal, StoreResult};
use crate::util::now_unix;

/// Whose work a take is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Taker {
    /// Pull consumers of one organization: services without a deploy target.
    Pull,
    /// The dispatcher: services with a deploy target, in every organization.
    Dispatch,
}

/// Leases the dispatcher holds start with this, so that a restart can tell them from
/// consumers' and release them at once.
pub(super) const DISPATCH_LEASE: &str = "dispatch-";

impl Taker {
    /// The query of the services whose work a take may lease (`?1` the organization or null,
    /// `?2` now, `?3` how many), in the order of their oldest waiting deployment. Built once:
    /// a take and a long poll's look run after pushes.
    fn candidates(self) -> &'static str {
        static PULL: LazyLock<String> = LazyLock::new(pull_candidates);
        static DISPATCH: LazyLock<String> = LazyLock::new(dispatch_candidates);
        match self {
            Taker::Pull => &PULL,
            Taker::Dispatch => &DISPATCH,
        }
    }
}

/// The most deliveries of one organization the dispatcher has in flight at once: three
/// quarters of its attempts, so that an organization whose targets never answer (each attempt
/// holding its place up to its timeout) leaves the others a quarter of them at all times.
pub const DISPATCH_SHARE_OF_ONE_ORGANIZATION: usize = 96;

/// Places of the dispatcher's free ones that only an organization with nothing in flight may
/// take: however many organizations' targets hang, one that has a deployment waits for no
/// attempt of theirs to time out.
pub const DISPATCH_PLACES_KEPT_FOR_IDLE_ORGANIZATIONS: usize = 16;

/// The services with a deploy target whose work the dispatcher may take, of organization `?1`
/// or of all (`?1` null), as [`Taker::candidates`] says; `?3` is how many places are free. The
/// deployments of the other services, however many wait for pull consumers, are never read.
///
/// Shared fairly between organizations: each service is ranked by how many of its
/// organization's deliveries would then be in flight (those in flight now, `busy`, plus its
/// place among the organization's candidates), the lowest first, and by its oldest waiting
/// deployment within a rank. None takes an organization past
/// [`DISPATCH_SHARE_OF_ONE_ORGANIZATION`], and an organization with a delivery in flight takes
/// none of the last [`DISPATCH_PLACES_KEPT_FOR_IDLE_ORGANIZATIONS`] free places. A free
/// attempt thus goes to the organization with the fewest in flight, not to whichever has
/// waited longest: thousands of some organizations' deployments do not queue another's behind
/// them.
fn dispatch_candidates() -> String {
    format!(
        "WITH busy AS (
           SELECT org, count(*) AS n FROM deployments INDEXED BY deployments_leases
           WHERE status = 'IN_PROGRESS' AND lease_id LIKE '{DISPATCH_LEASE}%' GROUP BY org),
         waiting AS (
           SELECT s.org, s.id, (SELECT min(d.seq) FROM deployments d
               WHERE {OPEN_OF_SERVICE} AND d.status = 'QUEUED'
                 AND (d.next_attempt_unix IS NULL OR d.next_attempt_unix <= ?2)) AS oldest
           FROM services s
           WHERE s.target_id IS NOT NULL AND (?1 IS NULL OR s.org = ?1) AND {NONE_IN_PROGRESS}),
         ranked AS (
           SELECT w.org, w.id, w.oldest, coalesce(b.n, 0)
               + row_number() OVER (PARTITION BY w.org ORDER BY w.oldest) AS in_flight
           FROM waiting w LEFT JOIN busy b ON b.org = w.org
           WHERE w.oldest IS NOT NULL),
         placed AS (
           SELECT org, id, in_flight, row_number() OVER (ORDER BY in_flight, oldest) AS place
           FROM ranked WHERE in_flight <= {DISPATCH_SHARE_OF_ONE_ORGANIZATION})
         SELECT org, id FROM placed
         WHERE place <= ?3 AND (in_flight = 1 OR place <= ?3 - {DISPATCH_PLACES_KEPT_FOR_IDLE_ORGANIZATIONS})
         ORDER BY place"
    )
}

/// The services with open deployments in organization `?1`, as `o`: each is then weighed once,
/// not each of its waiting deployments (thousands, while a consumer is away; a take holds the
/// writer while it reads, and a long poll asks after every push).
const OPEN_SERVICES: &str = "(SELECT DISTINCT d.service_id FROM deployments d
    WHERE d.org = ?1 AND d.status IN ('QUEUED', 'IN_PROGRESS')) o";
/// The oldest deployment of service `o` due at `?2`, through `deployments_open`.
const OLDEST_DUE: &str = "SELECT d.seq FROM deployments d
    WHERE d.org = ?1 AND d.service_id = o.service_id AND d.status IN ('QUEUED', 'IN_PROGRESS')
      AND d.status = 'QUEUED' AND (d.next_attempt_unix IS NULL OR d.next_attempt_unix <= ?2)
    ORDER BY d.seq LIMIT 1";

/// Service `o` sends to pull consumers (a deleted service has no waiting deployment, its
/// waiting ones were cancelled with it, but one released later, a nack or a lease that ran
/// out, is still offered) and has no deployment in progress (`busy_lease` narrows which
/// leases count; one a deleted service of the same id left in progress is another service's).
fn free_for_pull(busy_lease: &str) -> String {
    format!(
        "o.service_id NOT IN (SELECT p.service_id FROM deployments p
             WHERE p.org = ?1 AND p.status = 'IN_PROGRESS' AND p.service_deleted = 0{busy_lease})
         AND NOT EXISTS (SELECT 1 FROM services s
             WHERE s.org = ?1 AND s.id = o.service_id AND s.target_id IS NOT NULL)"
    )
}

/// The services of organization `?1` whose work pull consumers may take (`?2` now, `?3` how
/// many), in the order of their oldest due deployment.
fn pull_candidates() -> String {
    format!(
        "SELECT ?1, service_id FROM (
           SELECT o.service_id, ({OLDEST_DUE}) AS oldest FROM {OPEN_SERVICES} WHERE {})
         WHERE oldest IS NOT NULL ORDER BY oldest LIMIT ?3",
        free_for_pull("")
    )
}

/// Whether organization `?1` has work for pull consumers at `?2`: waiting work of a service
/// with no live lease, or a lease that ran out (a take releases it first). Asked after every
/// push while a consumer waits: built once.
static AVAILABLE_TO_PULL: LazyLock<String> = LazyLock::new(available_to_pull);

fn available_to_pull() -> String {
    format!(
        "SELECT EXISTS (SELECT 1 FROM {OPEN_SERVICES}
             WHERE {} AND EXISTS ({OLDEST_DUE}))
         OR EXISTS (SELECT 1 FROM deployments d
             LEFT JOIN services s ON s.org = d.org AND s.id = d.service_id
             WHERE d.org = ?1 AND d.status = 'IN_PROGRESS' AND s.target_id IS NULL
               AND d.lease_expires_unix <= ?2)",
        free_for_pull(" AND p.lease_expires_unix > ?2")
    )
}

/// The open (waiting or in progress) deployments `d` of the service row `s`, through the
/// partial index `deployments_open`, which SQLite uses only when the query repeats its
/// condition.
pub(super) const OPEN_OF_SERVICE: &str =
    "d.org = s.org AND d.service_id = s.id AND d.status IN ('QUEUED', 'IN_PROGRESS')";

/// The service of the deployment being updated now sends to pull consumers. With
/// [`NOW_FOR_A_TARGET`]: a retry the other destination asked for (a target's backoff, a
/// consumer's nack), recorded after the service changed destination, does not hold it back, as
/// a new destination ends the wait of the retries already waiting.
pub(super) const NOW_FOR_PULL: &str = "EXISTS (SELECT 1 FROM services s
    WHERE s.org = deployments.org AND s.id = deployments.service_id AND s.target_id IS NULL)";
/// The service of the deployment being updated now sends to a deploy target.
pub(super) const NOW_FOR_A_TARGET: &str = "EXISTS (SELECT 1 FROM services s
    WHERE s.org = deployments.org AND s.id = deployments.service_id AND s.target_id IS NOT NULL)";

/// The service row `s` has no deployment in progress (one a deleted service of the same id
/// left in progress is another service's).
pub(super) const NONE_IN_PROGRESS: &str = "NOT EXISTS (SELECT 1 FROM deployments p
    WHERE p.org = s.org AND p.service_id = s.id AND p.status IN ('QUEUED', 'IN_PROGRESS') AND p.status = 'IN_PROGRESS'
      AND p.service_deleted = 0)";

/// The whole second by which at least `secs` seconds will have passed, `now` being the current
/// whole second, already partly gone: a lease's expiry and a nack's retry, kept in whole
/// seconds, are never sooner than asked (at most a second later).
fn at_least_after(now: i64, secs: i64) -> i64 {
    now + secs + 1
}

/// Why a deployment failed after its last allowed offer, whether that offer's lease ran out or
/// its consumer released it: offers are what is counted.
fn offered_too_often(max_attempts: u32) -> String {
    format!("offered {max_attempts} times without being acknowledged")
}

/// Leases that ran out: the deployment waits again, or fails once offered `max_attempts`
/// times. `org` narrows it to one organization.
pub(super) fn expire(conn: &Connection, org: Option<&str>, now: i64, max_attempts: u32) -> StoreResult<usize> {
    let failed = offered_too_often(max_attempts);
    let released: Vec<(String, String, i64, String)> = conn
        .prepare_cached(
            "UPDATE deployments SET
                status = CASE WHEN attempts >= ?3 THEN 'FAILED' ELSE 'QUEUED' END,
                last_error = CASE WHEN attempts >= ?3 THEN ?4
                             ELSE 'the lease expired before the deployment was acknowledged' END,
                lease_id = NULL, lease_expires_unix = NULL, updated_at = ?5, updated_unix = ?2
             WHERE status = 'IN_PROGRESS' AND lease_expires_unix <= ?2 AND (?1 IS NULL OR org = ?1)
             RETURNING org, service_id, seq, status",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![org, now, max_attempts, failed, rfc3339(now)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })
        .map_err(unavailable)?;
    for (org, service, seq, status) in &released {
        if status == "QUEUED" {
            settle_released(conn, org, service, *seq, now)?;
        }
    }
    Ok(released.len())
}

/// A deployment a consumer released (a nack, a lease that ran out): cancelled when its service
/// was deleted meanwhile (see [`cancel_if_deleted`]); and, latest wins, `SUPERSEDED` at once
/// when a newer one of its service was taken (an engine reported it), with whatever else of
/// the service waits from before that one, instead of waiting for a take to find it.
fn settle_released(conn: &Connection, org: &str, service: &str, seq: i64, now: i64) -> StoreResult<()> {
    if cancel_if_deleted(conn, org, service, seq, now)? {
        return Ok(());
    }
    let taken: Option<i64> = conn
        .prepare_cached(
            "SELECT max(seq) FROM deployments WHERE org = ?1 AND service_id = ?2 AND seq > ?3
               AND status NOT IN ('QUEUED', 'PENDING')",
        )
        .and_then(|mut stmt| stmt.query_row(params![org, service, seq], |r| r.get(0)))
        .map_err(unavailable)?;
    match taken {
        Some(taken) => supersede_older(conn, org, service, taken, now),
        None => Ok(()),
    }
}

/// Take up to `max` services' work: for each, its newest waiting deployment becomes
/// `IN_PROGRESS` under a new lease, and its older waiting ones `SUPERSEDED`, in this write;
/// when a newer deployment of the service was taken already, they are all `SUPERSEDED`.
/// Services come in the order of their oldest waiting deployment; a service with a
/// deployment in progress offers nothing.
pub(super) fn take(
    conn: &Connection,
    org: Option<&str>,
    taker: Taker,
    request: LeaseRequest,
    now: i64,
    max_attempts: u32,
) -> StoreResult<Vec<Leased>> {
    expire(conn, org, now, max_attempts)?;
    let services: Vec<(String, String)> = {
        let mut stmt = conn.prepare_cached(taker.candidates()).map_err(unavailable)?;
        let rows = stmt
            .query_map(params![org, now, request.max as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(unavailable)?;
        rows.collect::<Result<_, _>>().map_err(unavailable)?
    };
    let expires = at_least_after(now, request.lease_secs);
    let mut leased = Vec::with_capacity(services.len());
    for (org, service) in services {
        let newest: Option<i64> = conn
            .prepare_cached(NEWEST_WAITING)
            .and_then(|mut stmt| stmt.query_row(params![org, service], |r| r.get(0)).optional())
            .map_err(unavailable)?;
        let Some(seq) = newest else { continue };
        // Latest wins: a deployment that came back (a lease ran out, a nack, a retry) after a
        // newer one of its service was taken and finished (an engine reported it) is never
        // offered again, nor is anything older.
        if recorded_after(conn, &org, &service, seq)? {
            supersede_older(conn, &org, &service, seq + 1, now)?;
            continue;
        }
        let lease_id = match taker {
            Taker::Pull => uuid::Uuid::new_v4().simple().to_string(),
            Taker::Dispatch => format!("{DISPATCH_LEASE}{}", uuid::Uuid::new_v4().simple()),
        };
        conn.execute(
            "UPDATE deployments SET status = 'IN_PROGRESS', lease_id = ?2, lease_expires_unix = ?3,
                attempts = attempts + 1, next_attempt_unix = NULL, updated_at = ?4, updated_unix = ?5
             WHERE seq = ?1",
            params![seq, lease_id, expires, rfc3339(now), now],
        )
        .map_err(unavailable)?;
        supersede_older(conn, &org, &service, seq, now)?;
        let record = deployment_at(conn, seq)?;
        leased.push(Leased {
            attempt: record.attempts,
            record,
            lease_id,
            lease_expires_at: rfc3339(expires),
        });
    }
    Ok(leased)
}

/// The newest `QUEUED` deployment of service `?2` of `?1`, read through `deployments_open`
/// (with `status = 'QUEUED'` alone, the planner read every waiting deployment of the
/// organization for each service a take leased).
const NEWEST_WAITING: &str = "SELECT seq FROM deployments
    WHERE org = ?1 AND service_id = ?2 AND status IN ('QUEUED', 'IN_PROGRESS') AND status = 'QUEUED'
    ORDER BY seq DESC LIMIT 1";

/// Whether a deployment of `service` was recorded after the one at `seq`, whatever became of
/// it: latest wins, so the one at `seq` is never delivered.
pub(super) fn recorded_after(conn: &Connection, org: &str, service: &str, seq: i64) -> StoreResult<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM deployments WHERE org = ?1 AND service_id = ?2 AND seq > ?3)")
        .and_then(|mut stmt| stmt.query_row(params![org, service, seq], |r| r.get(0)))
        .map_err(unavailable)
}

/// A deployment (`seq`) back to waiting whose service was deleted while it was in progress (its
/// deletion cancelled what waited then): cancelled too, as it would otherwise go to pull
/// consumers, whatever it was meant for — with whatever else of the service waits when the
/// service is gone, alone when one of the same id was created since. Whether it was.
pub(super) fn cancel_if_deleted(conn: &Connection, org: &str, service: &str, seq: i64, now: i64) -> StoreResult<bool> {
    let exists: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM services WHERE org = ?1 AND id = ?2)")
        .and_then(|mut stmt| stmt.query_row(params![org, service], |r| r.get(0)))
        .map_err(unavailable)?;
    if !exists {
        cancel_waiting(conn, org, service, now)?;
        return Ok(true);
    }
    // A service of the same id created since is another service: only this one is cancelled.
    let cancelled = conn
        .prepare_cached(
            "UPDATE deployments SET status = 'FAILED', next_attempt_unix = NULL, last_error = ?2,
                updated_at = ?3, updated_unix = ?4
             WHERE seq = ?1 AND status = 'QUEUED' AND service_deleted = 1",
        )
        .and_then(|mut stmt| stmt.execute(params![seq, crate::store::CANCELLED_SERVICE_DELETED, rfc3339(now), now]))
        .map_err(unavailable)?;
    Ok(cancelled > 0)
}

/// The deployments of service `service` in progress as it is deleted: left to their consumer
/// or the dispatcher, and cancelled if they come back to waiting ([`cancel_if_deleted`]).
pub(super) fn mark_in_progress_deleted(conn: &Connection, org: &str, service: &str) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE deployments SET service_deleted = 1
         WHERE org = ?1 AND service_id = ?2 AND status IN ('QUEUED', 'IN_PROGRESS') AND status = 'IN_PROGRESS'",
    )
    .and_then(|mut stmt| stmt.execute(params![org, service]))
    .map_err(unavailable)?;
    Ok(())
}

/// The deployments of service `service` still waiting, `FAILED` as cancelled: its service
/// was deleted.
pub(super) fn cancel_waiting(conn: &Connection, org: &str, service: &str, now: i64) -> StoreResult<()> {
    for waiting in WAITING_OF_SERVICE {
        conn.prepare_cached(&format!(
            "UPDATE deployments SET status = 'FAILED', next_attempt_unix = NULL, last_error = ?5,
                updated_at = ?3, updated_unix = ?4
             WHERE {waiting}"
        ))
        .and_then(|mut stmt| {
            stmt.execute(params![
                org,
                service,
                rfc3339(now),
                now,
                crate::store::CANCELLED_SERVICE_DELETED
            ])
        })
        .map_err(unavailable)?;
    }
    Ok(())
}

/// The waiting deployments of service `?2` of `?1`: `QUEUED` ones through `deployments_open`,
/// and `PENDING` ones (which a database of an earlier release may hold) through
/// `deployments_by_status`; each a condition of its own, so that a statement reads what it may
/// change and never the service's whole history (with one `status IN ('QUEUED', 'PENDING')`,
/// the planner walked every deployment of the service).
pub(super) const WAITING_OF_SERVICE: [&str; 2] = [
    "org = ?1 AND service_id = ?2 AND status IN ('QUEUED', 'IN_PROGRESS') AND status = 'QUEUED'",
    "status = 'PENDING' AND org = ?1 AND service_id = ?2",
];

/// The waiting deployments of a service kept as they are: older ones, which the next take
/// would supersede anyway (latest wins), are superseded as newer ones are recorded (checked at
/// every 16th of the service's, so up to 15 more may wait), so that a take never has a pile to
/// supersede in its write (100,000 held every write for over half a second).
pub const WAITING_KEPT_PER_SERVICE: i64 = 100;

/// A service's bound is checked at every this many of its waiting deployments recorded.
const WAITING_CHECKED_EVERY: u8 = 16;

/// Services whose deployments the writer counts at most (then it forgets them all, and checks
/// each at its next deployment).
const COUNTED_SERVICES: usize = 100_000;

/// By organization and service: the waiting deployments recorded since the service's bound
/// was last checked; and how many services are counted.
type RecordedSinceCheck = (HashMap<String, HashMap<String, u8>>, usize);

thread_local! {
    /// Counted by the thread that records: the writer.
    static RECORDED_SINCE_CHECK: RefCell<RecordedSinceCheck> = RefCell::default();
}

/// Whether recording a waiting deployment of `service` checks its bound: at the first this
/// thread records, then at every [`WAITING_CHECKED_EVERY`]th. Counted per service: a count
/// over all deployments checked the same services every time when a push recorded several in
/// a fixed order, and never the others. Counted as run, not as committed: a batch the writer
/// runs again after one of its writes failed counts its deployments twice, so a check it
/// rolled back comes up to [`WAITING_CHECKED_EVERY`] deployments late.
pub(super) fn bound_check_due(org: &str, service: &str) -> bool {
    RECORDED_SINCE_CHECK.with_borrow_mut(|(by_org, counted)| {
        if let Some(since) = by_org.get_mut(org).and_then(|of_org| of_org.get_mut(service)) {
            *since += 1;
            if *since < WAITING_CHECKED_EVERY {
                return false;
            }
            *since = 0;
            return true;
        }
        if *counted >= COUNTED_SERVICES {
            by_org.clear();
            *counted = 0;
        }
        by_org.entry(org.to_owned()).or_default().insert(service.to_owned(), 0);
        *counted += 1;
        true
    })
}

/// The `?3`-th newest waiting deployment of service `?2` of `?1`, through `deployments_open`
/// (`WAITING_OF_SERVICE[0]`'s condition), newest first.
const OLDEST_KEPT_WAITING: &str = "SELECT seq FROM deployments
    WHERE org = ?1 AND service_id = ?2 AND status IN ('QUEUED', 'IN_PROGRESS') AND status = 'QUEUED'
    ORDER BY seq DESC LIMIT 1 OFFSET ?3";

/// Supersede the waiting deployments of `service` older than its newest
/// [`WAITING_KEPT_PER_SERVICE`].
pub(super) fn supersede_beyond_kept(conn: &Connection, org: &str, service: &str, now: i64) -> StoreResult<()> {
    let oldest_kept: Option<i64> = conn
        .prepare_cached(OLDEST_KEPT_WAITING)
        .and_then(|mut stmt| {
            stmt.query_row(params![org, service, WAITING_KEPT_PER_SERVICE - 1], |r| r.get(0))
                .optional()
        })
        .map_err(unavailable)?;
    match oldest_kept {
        Some(seq) => supersede_older(conn, org, service, seq, now),
        None => Ok(()),
    }
}

/// Latest wins: the deployments of `service` still waiting that were recorded before `seq`
/// are never delivered. Each keeps the `last_error` of its last attempt, if it had one: why it
/// was waiting again when it was superseded.
pub(super) fn supersede_older(conn: &Connection, org: &str, service: &str, seq: i64, now: i64) -> StoreResult<()> {
    for sql in SUPERSEDE_OLDER.iter() {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute(params![org, service, seq, rfc3339(now), now]))
            .map_err(unavailable)?;
    }
    Ok(())
}

/// For each condition of [`WAITING_OF_SERVICE`], the statement that supersedes the
/// deployments of service `?2` of `?1` waiting under it that were recorded before `?3`.
static SUPERSEDE_OLDER: LazyLock<[String; 2]> = LazyLock::new(|| {
    WAITING_OF_SERVICE.map(|waiting| {
        format!(
            "UPDATE deployments SET status = 'SUPERSEDED', next_attempt_unix = NULL, updated_at = ?4, updated_unix = ?5
             WHERE {waiting} AND seq < ?3"
        )
    })
});

/// What a statement on a live lease came to: `done` when it changed the deployment, else why
/// it did not.
fn on_live_lease<T>(conn: &Connection, (org, id): (&str, &str), changed: usize, done: T) -> Refusable<T> {
    if changed == 1 {
        Ok(Ok(done))
    } else {
        Ok(Err(refusal(conn, org, id)?))
    }
}

/// Why a lease operation found nothing to change: the deployment is unknown (404), or the
/// lease is not its live one (409), said as the deployment stands.
fn refusal(conn: &Connection, org: &str, id: &str) -> StoreResult<Refusal> {
    let status: Option<(String, bool)> = conn
        .query_row(
            "SELECT status, result IS NOT NULL FROM deployments WHERE org = ?1 AND id = ?2",
            params![org, id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(unavailable)?;
    Ok(match status {
        None => Refusal::NotFound,
        Some((status, true)) => Refusal::Conflict(format!(
            "The deployment is {status}: its engine reported its result, which ended it, so its lease can be neither given back nor extended (an ack within the lease is answered as done)."
        )),
        Some((status, false)) if matches!(status.as_str(), "DELIVERED" | "FAILED" | "SUPERSEDED") => {
            Refusal::Conflict(format!("The deployment is {status}: it is leased no more."))
        }
        Some(_) => Refusal::Conflict(
            "That lease_id is not the deployment's live lease: it expired, was released, or was never issued."
                .to_owned(),
        ),
    })
}

/// Whether the deployment was reported (`DELIVERED` by its engine) while under this lease,
/// which has not run out: a report ends the deployment, not the consumer's lease, so the
/// consumer's ack that follows it is answered as done.
fn reported_under(conn: &Connection, (org, id): (&str, &str), lease_id: &str, now: i64) -> StoreResult<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM deployments WHERE org = ?1 AND id = ?2 AND status = 'DELIVERED'
             AND result IS NOT NULL AND lease_id = ?3 AND lease_expires_unix > ?4)",
        params![org, id, lease_id, now],
        |r| r.get(0),
    )
    .map_err(unavailable)
}

/// When the dispatcher's next retry is due, after `?1`: read from the retries waiting (one per
/// service at most, latest wins), each once, rather than from every service with a target
/// through its organization's retries (each organization's retries read once per service).
pub(super) const NEXT_DISPATCH_RETRY: &str = "SELECT min(d.next_attempt_unix) FROM deployments d
    WHERE d.status = 'QUEUED' AND d.next_attempt_unix > ?1
      AND EXISTS (SELECT 1 FROM services s WHERE s.org = d.org AND s.id = d.service_id AND s.target_id IS NOT NULL)";

/// When an organization's next lease runs out or its next retry is due, after `?2`.
const NEXT_DUE: &str = "SELECT min(t) FROM (
    SELECT min(lease_expires_unix) AS t FROM deployments
        WHERE org = ?1 AND status = 'IN_PROGRESS' AND lease_expires_unix > ?2
    UNION ALL
    SELECT min(next_attempt_unix) FROM deployments
        WHERE org = ?1 AND status = 'QUEUED' AND next_attempt_unix > ?2)";

/// The condition of a live lease, for the statements below (`?1` org, `?2` id, `?3` lease,
/// `?4` now).
const LIVE_LEASE: &str =
    "org = ?1 AND id = ?2 AND status = 'IN_PROGRESS' AND lease_id = ?3 AND lease_expires_unix > ?4";

/// Record an engine's report (see [`crate::store::DeploymentLog::report_result`]).
pub(super) fn report(conn: &Connection, org: &str, id: &str, result: &DeploymentResult) -> Refusable<DeploymentRecord> {
    let Some(current) = deployment_by_id(conn, org, id)? else {
        return Ok(Err(Refusal::NotFound));
    };
    if let Some(reported) = &current.result {
        return Ok(if reported.same_report(result) {
            Ok(current)
        } else {
            Err(Refusal::Conflict(
                "A different result was already reported for this deployment.".to_owned(),
            ))
        });
    }
    use autodeploy_core::deployment::DeploymentStatus::{Delivered, InProgress, Queued};
    if !matches!(current.status, Queued | InProgress | Delivered) {
        return Ok(Err(Refusal::Conflict(format!(
            "The deployment is {}: only a QUEUED, IN_PROGRESS or DELIVERED deployment takes a result.",
            current.status.as_str()
        ))));
    }
    let now = now_unix();
    let seq: i64 = conn
        .query_row(
            // The lease is kept (see `reported_under`); every statement on leases reads only
            // deployments IN_PROGRESS.
            "UPDATE deployments SET status = 'DELIVERED', result = ?3,
                next_attempt_unix = NULL, updated_at = ?4, updated_unix = ?5
             WHERE org = ?1 AND id = ?2 RETURNING seq",
            params![org, id, to_json(result)?, rfc3339(now), now],
            |r| r.get(0),
        )
        .map_err(unavailable)?;
    // The engine took this deployment: the older ones of its service are never delivered.
    supersede_older(conn, org, &current.request.service_id, seq, now)?;
    Ok(Ok(DeploymentRecord {
        status: Delivered,
        result: Some(result.clone()),
        updated_at: rfc3339(now),
        next_attempt_at: None,
        ..current
    }))
}

#[async_trait]
impl PullQueue for SqliteStore {
    async fn lease(&self, org: &str, request: LeaseRequest) -> StoreResult<Vec<Leased>> {
        let org = org.to_owned();
        let max_attempts = self.inner.max_attempts;
        self.write(move |conn| take(conn, Some(&org), Taker::Pull, request, now_unix(), max_attempts))
            .await
    }

    async fn outlook(&self, org: &str) -> StoreResult<Outlook> {
        let now = now_unix();
        self.read(|conn| {
            let available: bool = conn
                .prepare_cached(&AVAILABLE_TO_PULL)
                .and_then(|mut stmt| stmt.query_row(params![org, now], |r| r.get(0)))
                .map_err(unavailable)?;
            let next_due: Option<i64> = conn
                .query_row(NEXT_DUE, params![org, now], |r| r.get(0))
                .map_err(unavailable)?;
            Ok(Outlook {
                available,
                next_due_unix: next_due,
            })
        })
    }

    async fn ack(&self, org: &str, id: &str, lease_id: &str) -> Refusable<()> {
        let woken = org;
        let (org, id, lease_id) = (org.to_owned(), id.to_owned(), lease_id.to_owned());
        let outcome = self
            .write(move |conn| {
                let now = now_unix();
                let changed = conn
                    .execute(
                        &format!(
                            "UPDATE deployments SET status = 'DELIVERED', lease_id = NULL, lease_expires_unix = NULL,
                                last_error = NULL, updated_at = ?5, updated_unix = ?4 WHERE {LIVE_LEASE}"
                        ),
                        params![org, id, lease_id, now, rfc3339(now)],
                    )
                    .map_err(unavailable)?;
                if changed == 0 && reported_under(conn, (&org, &id), &lease_id, now)? {
                    return Ok(Ok(()));
                }
                on_live_lease(conn, (&org, &id), changed, ())
            })
            .await?;
        // The service may have newer work waiting behind this one.
        self.work_changed(woken);
        Ok(outcome)
    }

    async fn nack(&self, org: &str, id: &str, lease_id: &str, retry_after_secs: i64) -> Refusable<()> {
        let woken = org;
        let (org, id, lease_id) = (org.to_owned(), id.to_owned(), lease_id.to_owned());
        let max_attempts = self.inner.max_attempts;
        let outcome = self
            .write(move |conn| {
                let now = now_unix();
                let retry_at = (retry_after_secs > 0).then(|| at_least_after(now, retry_after_secs));
                let failed = offered_too_often(max_attempts);
                let released: Option<(String, i64, String)> = conn
                    .prepare_cached(&format!(
                        "UPDATE deployments SET
                            status = CASE WHEN attempts >= ?6 THEN 'FAILED' ELSE 'QUEUED' END,
                            last_error = CASE WHEN attempts >= ?6 THEN ?8 ELSE 'released by the consumer' END,
                            next_attempt_unix = CASE WHEN attempts >= ?6 OR {NOW_FOR_A_TARGET} THEN NULL ELSE ?7 END,
                            lease_id = NULL, lease_expires_unix = NULL, updated_at = ?5, updated_unix = ?4
                         WHERE {LIVE_LEASE} RETURNING service_id, seq, status"
                    ))
                    .and_then(|mut stmt| {
                        stmt.query_row(
                            params![org, id, lease_id, now, rfc3339(now), max_attempts, retry_at, failed],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                        )
                        .optional()
                    })
                    .map_err(unavailable)?;
                if let Some((service, seq, status)) = &released
                    && status == "QUEUED"
                {
                    settle_released(conn, &org, service, *seq, now)?;
                }
                on_live_lease(conn, (&org, &id), usize::from(released.is_some()), ())
            })
            .await?;
        self.work_changed(woken);
        Ok(outcome)
    }

    async fn extend(&self, org: &str, id: &str, lease_id: &str, lease_secs: i64) -> Refusable<String> {
        let (org, id, lease_id) = (org.to_owned(), id.to_owned(), lease_id.to_owned());
        self.write(move |conn| {
            let now = now_unix();
            let expires = at_least_after(now, lease_secs);
            let changed = conn
                .execute(
                    &format!(
                        "UPDATE deployments SET lease_expires_unix = ?5, updated_at = ?6, updated_unix = ?4 WHERE {LIVE_LEASE}"
                    ),
                    params![org, id, lease_id, now, expires, rfc3339(now)],
                )
                .map_err(unavailable)?;
            on_live_lease(conn, (&org, &id), changed, rfc3339(expires))
        })
        .await
    }

    fn notifier(&self, org: &str) -> Arc<Notify> {
        self.work_notifier(org)
    }
}

#[cfg(test)]
mod tests {
    use super::super::plans::{migrated, query_plan};
    use super::*;

    /// A take, and a long poll's look for work, read open deployments only: the finished
    /// ones, most of a long log, are never scanned (without statistics, the planner scanned
    /// the whole log for a pull take). For pull consumers, the services with open deployments
    /// are read, those in progress through their status, and each one's oldest due deployment.
    #[test]
    fn a_take_reads_open_deployments_only() {
        let conn = migrated();
        let plans = [
            (
                "dispatch take",
                query_plan(&conn, Taker::Dispatch.candidates(), params!["acme", 1, 10]),
            ),
            (
                "pull take",
                query_plan(&conn, Taker::Pull.candidates(), params!["acme", 1, 10]),
            ),
            (
                "pull outlook",
                query_plan(&conn, &AVAILABLE_TO_PULL, params!["acme", 1]),
            ),
        ];
        for (name, plan) in &plans {
            let deployments: Vec<&String> = plan
                .iter()
                .filter(|step| step.contains(" d ") || step.contains(" p "))
                .collect();
            assert!(!deployments.is_empty(), "{name}: {plan:#?}");
            for step in deployments {
                assert!(
                    step.starts_with("SEARCH")
                        && (step.contains("INDEX deployments_open (org=?")
                            || step.contains("INDEX deployments_by_status (org=? AND status=?)")),
                    "{name}: {plan:#?}"
                );
            }
        }
        for (name, plan) in &plans[1..] {
            for seek in [
                "SEARCH d USING INDEX deployments_open (org=?)",
                "SEARCH d USING INDEX deployments_open (org=? AND service_id=?)",
                "SEARCH p USING INDEX deployments_by_status (org=? AND status=?)",
            ] {
                // Through the index alone (`COVERING INDEX`) or the index and the rows.
                assert!(
                    plan.iter()
                        .any(|step| step.replacen("COVERING INDEX", "INDEX", 1).starts_with(seek)),
                    "{name}, {seek}: {plan:#?}"
                );
            }
        }
    }

    /// A take finds each service's newest waiting deployment in the service's open ones.
    #[test]
    fn the_newest_waiting_deployment_is_read_among_the_services_open_ones() {
        let conn = migrated();
        let plan = query_plan(&conn, NEWEST_WAITING, params!["acme", "api"]);
        assert!(
            matches!(plan.as_slice(), [step]
                if step.starts_with("SEARCH") && step.contains("INDEX deployments_open (org=? AND service_id=?)")),
            "{plan:#?}"
        );
    }

    /// When the next retry is due is read through the index of retries, which holds only
    /// the deployments that have one.
    #[test]
    fn the_next_retry_is_found_through_its_index() {
        let conn = migrated();
        let plan = query_plan(&conn, NEXT_DUE, params!["acme", 10]);
        assert!(
            plan.iter().any(|step| step.starts_with("SEARCH")
                && step.contains("INDEX deployments_retries (org=? AND next_attempt_unix>?)")),
            "{plan:#?}"
        );
    }

    /// The dispatcher's next retry is read from the index of retries, each once.
    #[test]
    fn the_dispatchers_next_retry_is_read_from_the_retries() {
        let conn = migrated();
        let plan = query_plan(&conn, NEXT_DISPATCH_RETRY, params![10]);
        assert_eq!(
            plan,
            [
                "SEARCH d USING INDEX deployments_retries",
                "SEARCH s EXISTS USING PRIMARY KEY (org=? AND id=?)"
            ],
            "{plan:#?}"
        );
    }

    /// The statements that keep a service's waiting deployments bounded run at every
    /// sixteenth deployment of a service: taken from the cache, they are not prepared again,
    /// though their table has partial indexes.
    #[test]
    fn the_bound_on_waiting_deployments_is_kept_without_preparing_again() {
        let conn = migrated();
        for (service, seq) in [("api", 10), ("web", 20), ("worker", 30)] {
            supersede_beyond_kept(&conn, "acme", service, 1_000).unwrap();
            supersede_older(&conn, "acme", service, seq, 1_000).unwrap();
        }
        let mut statements = vec![OLDEST_KEPT_WAITING];
        statements.extend(SUPERSEDE_OLDER.iter().map(String::as_str));
        for sql in statements {
            let stmt = conn.prepare_cached(sql).unwrap();
            assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0, "{sql}");
        }
    }

    /// Superseding a service's older waiting deployments reads them through the index of
    /// their status, not the service's whole history.
    #[test]
    fn waiting_deployments_of_a_service_are_read_through_their_status_index() {
        let conn = migrated();
        for (waiting, index) in WAITING_OF_SERVICE.iter().zip([
            "INDEX deployments_open (org=? AND service_id=? AND seq<?)",
            "INDEX deployments_by_status (org=? AND status=?)",
        ]) {
            let sql = format!("UPDATE deployments SET status = 'SUPERSEDED' WHERE {waiting} AND seq < ?3");
            let plan = query_plan(&conn, &sql, params!["acme", "api", 10]);
            assert!(
                matches!(plan.as_slice(), [step] if step.starts_with("SEARCH") && step.contains(index)),
                "{waiting}: {plan:#?}"
            );
        }
        // The oldest of a service's kept waiting deployments, found in the same index, newest
        // first, without sorting, and counted there alone: the deployments' rows are not read.
        let plan = query_plan(&conn, OLDEST_KEPT_WAITING, params!["acme", "api", 99]);
        assert!(
            matches!(plan.as_slice(), [step] if step.starts_with("SEARCH")
                && step.contains("COVERING INDEX deployments_open (org=? AND service_id=?)")),
            "{plan:#?}"
        );
    }
}
