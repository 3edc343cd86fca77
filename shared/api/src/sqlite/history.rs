//! The deliveries history: bounded to the newest deliveries of each organization and to its
//! retention, with rejected deliveries rate-limited (per organization and received minute) so
//! that a flood cannot push out the rest.

use async_trait::async_trait;
use autodeploy_core::delivery::{
    DELIVERY_HISTORY_PER_ORGANIZATION, DELIVERY_HISTORY_RETENTION_SECS, DeliveryOutcome, DeliveryRecord, REJECTED_KEPT,
    REJECTED_PER_MINUTE, UNCONFIGURED_BUDGET, UNCONFIGURED_REJECTED_KEPT,
};
use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, execute, from_json, to_json, unavailable};
use crate::store::{
    DELIVERIES_PAGE_BYTES, DeliveryHistory, DeliveryQuery, Page, PageFill, PageRequest, SpentBudgets, StoreResult,
};
use crate::util::{now_unix, rfc3339_unix};

fn record_of(org: &str, data: String) -> StoreResult<DeliveryRecord> {
    let mut record: DeliveryRecord = from_json(&data)?;
    record.organization_id = org.to_owned();
    Ok(record)
}

/// Remove the refusals of `?1` older than its newest `?2 + 1`, through their own index.
const TRIM_REJECTED: &str = "DELETE FROM delivery_log WHERE org = ?1 AND outcome = 'REJECTED' AND id < (
    SELECT id FROM delivery_log WHERE org = ?1 AND outcome = 'REJECTED' ORDER BY id DESC LIMIT 1 OFFSET ?2)";

/// Add `record` to the history (see [`DeliveryHistory::record_delivery`]), keeping the
/// organization's newest [`DELIVERY_HISTORY_PER_ORGANIZATION`].
pub(super) fn insert(conn: &Connection, record: &DeliveryRecord) -> StoreResult<bool> {
    let now = now_unix();
    let org = &record.organization_id;
    // Counted in the minute the history shows it received, not the minute it is written in,
    // so that no minute of the history lists more than the budget.
    let received = rfc3339_unix(&record.received_at).unwrap_or(now);
    let rejected = record.outcome == DeliveryOutcome::Rejected;
    // Organizations with nothing set up share one budget and one bound: inventing names gives
    // no more room than one organization's.
    let unconfigured = rejected && !organization_known(conn, org)?;
    let budget = if unconfigured {
        UNCONFIGURED_BUDGET
    } else {
        org.as_str()
    };
    if rejected && !within_rejected_budget(conn, budget, received)? {
        return Ok(false);
    }
    execute(
        conn,
        "INSERT OR REPLACE INTO delivery_log (org, id, source, outcome, received_unix, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            org,
            record.id,
            record.source.as_str(),
            record.outcome.as_str(),
            now,
            to_json(record)?
        ],
    )?;
    let log_seq = conn.last_insert_rowid();
    if rejected {
        // Only the newest refusals: the rest of the history is the accepted deliveries'.
        execute(conn, TRIM_REJECTED, params![org, REJECTED_KEPT - 1])?;
    }
    if unconfigured {
        execute(
            conn,
            "INSERT INTO unconfigured_refusals (log_seq) VALUES (?1)",
            params![log_seq],
        )?;
        for table in [
            "DELETE FROM delivery_log WHERE seq IN",
            "DELETE FROM unconfigured_refusals WHERE log_seq IN",
        ] {
            execute(
                conn,
                &format!(
                    "{table} (SELECT log_seq FROM unconfigured_refusals ORDER BY log_seq DESC LIMIT -1 OFFSET ?1)"
                ),
                params![UNCONFIGURED_REJECTED_KEPT],
            )?;
        }
    }
    // Trimming walks a thousand index entries: done for about one delivery in 256 (ids end
    // in random hex digits), while reads never show more than the newest thousand.
    if !record.id.ends_with("00") {
        return Ok(true);
    }
    if let Some(oldest) = oldest_kept(conn, org)? {
        execute(
            conn,
            "DELETE FROM delivery_log WHERE org = ?1 AND id < ?2",
            params![org, oldest],
        )?;
    }
    Ok(true)
}

/// Whether `org` has anything set up (a webhook secret, a service, a token, a deploy target):
/// refusals of organizations nobody set up share one budget and one bound, or inventing
/// organization names would grow the database without bound.
fn organization_known(conn: &Connection, org: &str) -> StoreResult<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM webhook_secrets WHERE org = ?1) OR EXISTS (SELECT 1 FROM services WHERE org = ?1)
             OR EXISTS (SELECT 1 FROM tokens WHERE org = ?1) OR EXISTS (SELECT 1 FROM targets WHERE org = ?1)",
    )
    .and_then(|mut stmt| stmt.query_row(params![org], |r| r.get(0)))
    .map_err(unavailable)
}

/// Count a rejected delivery against its organization's budget for the minute it was received
/// in; `false` once the budget is spent (the delivery is then left out of the history).
fn within_rejected_budget(conn: &Connection, org: &str, received: i64) -> StoreResult<bool> {
    let count: u32 = conn
        .prepare_cached(
            "INSERT INTO rejected_deliveries (org, minute, count) VALUES (?1, ?2, 1)
             ON CONFLICT (org, minute) DO UPDATE SET count = count + 1 RETURNING count",
        )
        .and_then(|mut stmt| stmt.query_row(params![org, received.div_euclid(60)], |r| r.get(0)))
        .map_err(unavailable)?;
    Ok(count <= REJECTED_PER_MINUTE)
}

/// The oldest delivery of `org` the history keeps (its newest
/// [`DELIVERY_HISTORY_PER_ORGANIZATION`]), when it holds that many: through the index of ids,
/// not the documents.
fn oldest_kept(conn: &Connection, org: &str) -> StoreResult<Option<String>> {
    conn.prepare_cached("SELECT id FROM delivery_log WHERE org = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2")
        .and_then(|mut stmt| {
            stmt.query_row(params![org, DELIVERY_HISTORY_PER_ORGANIZATION - 1], |r| r.get(0))
                .optional()
        })
        .map_err(unavailable)
}

/// Deliveries past their retention, and the rejected counts of minutes gone by. Rows are in
/// arrival order, so the expired ones are the first: the walk stops at the first one kept.
pub(super) fn purge(conn: &Connection, now: i64) -> StoreResult<()> {
    conn.execute(
        "DELETE FROM delivery_log WHERE seq < coalesce(
            (SELECT seq FROM delivery_log WHERE received_unix >= ?1 ORDER BY seq LIMIT 1),
            (SELECT max(seq) + 1 FROM delivery_log))",
        params![now - DELIVERY_HISTORY_RETENTION_SECS],
    )
    .map_err(unavailable)?;
    conn.execute(
        "DELETE FROM rejected_deliveries WHERE minute < ?1",
        params![now.div_euclid(60) - 1],
    )
    .map_err(unavailable)?;
    Ok(())
}

#[async_trait]
impl DeliveryHistory for SqliteStore {
    async fn record_delivery(&self, record: &DeliveryRecord) -> StoreResult<bool> {
        // A refusal whose budget is spent this minute is left out on a read alone; the write
        // decides, and counts, for the others.
        let budget = if record.outcome == DeliveryOutcome::Rejected {
            let org = &record.organization_id;
            let known = self.read(|conn| organization_known(conn, org))?;
            let budget = if known {
                org.clone()
            } else {
                UNCONFIGURED_BUDGET.to_owned()
            };
            let minute = SpentBudgets::minute_of(&record.received_at);
            if self.inner.spent_budgets.is_spent(&budget, minute) {
                return Ok(false);
            }
            Some((budget, minute))
        } else {
            None
        };
        let record = record.clone();
        let kept = self.write(move |conn| insert(conn, &record)).await?;
        if let (false, Some((budget, minute))) = (kept, budget) {
            self.inner.spent_budgets.mark(&budget, minute);
        }
        Ok(kept)
    }

    async fn get_delivery(&self, org: &str, id: &str) -> StoreResult<Option<DeliveryRecord>> {
        self.read(|conn| {
            conn.query_row(
                "SELECT data FROM delivery_log WHERE org = ?1 AND id = ?2 AND id >= ?3",
                params![org, id, oldest_kept(conn, org)?.unwrap_or_default()],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(unavailable)?
            .map(|data| record_of(org, data))
            .transpose()
        })
    }

    async fn list_deliveries(&self, org: &str, query: &DeliveryQuery<'_>) -> StoreResult<Page<DeliveryRecord>> {
        let (filter, PageRequest { after, limit }) = (&query.filter, query.page);
        let before = after.map(str::to_owned).unwrap_or_else(|| "g".repeat(32));
        let source = filter.source.map(|s| s.as_str());
        let outcome = filter.outcome.map(|o| o.as_str());
        // Through the index of ids, newest first: a filter reads at most the newest thousand.
        let (condition, first) = match (source, outcome) {
            (None, None) => ("", None),
            (Some(s), None) => ("AND source = ?5", Some(s)),
            (None, Some(o)) => ("AND outcome = ?5", Some(o)),
            (Some(s), Some(_)) => ("AND source = ?5 AND outcome = ?6", Some(s)),
        };
        self.read(|conn| {
            // Only the newest thousand are the history, whatever is not trimmed yet.
            let floor = oldest_kept(conn, org)?.unwrap_or_default();
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT data FROM delivery_log WHERE org = ?1 AND id < ?2 AND id >= ?4 {condition} ORDER BY id DESC LIMIT ?3"
                ))
                .map_err(unavailable)?;
            let fetch = (limit + 1) as i64;
            let row = |r: &rusqlite::Row<'_>| r.get::<_, String>(0);
            let rows = match (first, source.is_some() && outcome.is_some()) {
                (None, _) => stmt.query_map(params![org, before, fetch, floor], row),
                (Some(v), false) => stmt.query_map(params![org, before, fetch, floor, v], row),
                (Some(v), true) => stmt.query_map(params![org, before, fetch, floor, v, outcome], row),
            }
            .map_err(unavailable)?;
            // Rows are read only as far as the page goes (one more to know that more follow).
            let mut fill = PageFill::new(limit, DELIVERIES_PAGE_BYTES);
            let mut items = Vec::new();
            for data in rows {
                let data = data.map_err(unavailable)?;
                if !fill.take(data.len()) {
                    break;
                }
                items.push(record_of(org, data)?);
            }
            Ok(fill.page(items, |d| d.id.clone()))
        })
    }
}

#[cfg(test)]
mod tests {
    use autodeploy_core::delivery::DeliverySource;
    use autodeploy_core::provider::GitProvider;

    use super::*;

    fn rejected(id: &str, received_at: &str) -> DeliveryRecord {
        DeliveryRecord {
            id: id.into(),
            organization_id: "acme".into(),
            received_at: received_at.into(),
            source: DeliverySource::Git(GitProvider::Github),
            delivery_id: None,
            http_status: 401,
            outcome: DeliveryOutcome::Rejected,
            reason: "The signature does not match.".into(),
            repository: None,
            branch: None,
            commit_sha: None,
            image: None,
            tag: None,
            queued: Vec::new(),
            skipped: Vec::new(),
            dry_run: false,
        }
    }

    /// A delivery received in the last second of a minute may be written in the next: it
    /// counts against the minute the history shows, which then never lists more than the
    /// budget, and the next minute keeps its own.
    fn set_up(conn: &Connection, org: &str) {
        conn.execute(
            "INSERT INTO webhook_secrets (org, provider, secret, set_at) VALUES (?1, 'github', 's', 't')",
            [org],
        )
        .unwrap();
    }

    fn count(conn: &Connection, outcome: &str) -> u32 {
        conn.query_row("SELECT count(*) FROM delivery_log WHERE outcome = ?1", [outcome], |r| {
            r.get(0)
        })
        .unwrap()
    }

    /// Refusals of organizations nobody set up are recorded within one budget they all share
    /// (60 a minute) and one bound (the newest 1,000 of them all): inventing organization
    /// names must not grow the database. An organization set up keeps its own budget.
    #[test]
    fn refusals_of_organizations_nobody_set_up_share_one_budget_and_bound() {
        let conn = super::super::plans::migrated();
        let of = |org: &str, id: &str, at: &str| DeliveryRecord {
            organization_id: org.into(),
            ..rejected(id, at)
        };
        // One minute: 60 of 70 invented names are recorded, and acme's own refusal still is.
        set_up(&conn, "acme");
        let recorded = (0..70)
            .filter(|i| {
                insert(
                    &conn,
                    &of(&format!("ghost-{i}"), &format!("a{i:03}"), "2026-01-01T12:00:30Z"),
                )
                .unwrap()
            })
            .count();
        assert_eq!(recorded, REJECTED_PER_MINUTE as usize);
        assert!(insert(&conn, &of("acme", "b000", "2026-01-01T12:00:30Z")).unwrap());
        // Minutes later, 1,200 more: only the newest 1,000 of the invented names' are kept.
        for i in 0..1_200 {
            let at = format!("2026-01-01T13:{:02}:00Z", i / 60);
            assert!(insert(&conn, &of(&format!("ghost-{i}"), &format!("c{i:04}"), &at)).unwrap());
        }
        let invented: u32 = conn
            .query_row("SELECT count(*) FROM delivery_log WHERE org LIKE 'ghost-%'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(invented, UNCONFIGURED_REJECTED_KEPT);
        let oldest: String = conn
            .query_row("SELECT min(id) FROM delivery_log WHERE org LIKE 'ghost-%'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(oldest, "c0200");
        assert_eq!(count(&conn, "REJECTED"), UNCONFIGURED_REJECTED_KEPT + 1);
    }

    /// Refusals, 60 a minute for twenty minutes, leave the accepted deliveries where they
    /// were: only the newest refusals are kept, through their own index.
    #[test]
    fn refusals_cannot_push_accepted_deliveries_out() {
        let conn = super::super::plans::migrated();
        set_up(&conn, "acme");
        let accepted = DeliveryRecord {
            outcome: DeliveryOutcome::Queued,
            http_status: 202,
            ..rejected("0000", "2026-01-01T11:59:00Z")
        };
        assert!(insert(&conn, &accepted).unwrap());
        for minute in 0..20 {
            for i in 0..REJECTED_PER_MINUTE {
                let at = format!("2026-01-01T12:{minute:02}:30Z");
                assert!(insert(&conn, &rejected(&format!("{minute:02}{i:03}"), &at)).unwrap());
            }
        }
        assert_eq!(count(&conn, "REJECTED"), REJECTED_KEPT);
        assert_eq!(count(&conn, "QUEUED"), 1);
        let newest: String = conn
            .query_row("SELECT min(id) FROM delivery_log WHERE outcome = 'REJECTED'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            newest,
            format!("{:02}{:03}", 18, REJECTED_PER_MINUTE * 2 - REJECTED_KEPT)
        );
        let plan = super::super::plans::query_plan(&conn, TRIM_REJECTED, params!["acme", 99]);
        assert!(
            plan.iter().all(|step| !step.starts_with("SCAN"))
                && plan.iter().any(|step| step.contains("delivery_log_rejected")),
            "{plan:#?}"
        );
    }

    /// Once a budget is spent, the minute's later refusals are left out without a write: the
    /// budget's count stops where it was refused (one past it), under a known organization's
    /// name and under invented ones alike.
    #[tokio::test]
    async fn refusals_past_a_spent_budget_write_nothing() {
        let (_dir, store) = super::super::plans::temp_store();
        let path = store.inner.path.clone();
        execute(
            &rusqlite::Connection::open(&path).unwrap(),
            "INSERT INTO webhook_secrets (org, provider, secret, set_at) VALUES ('acme', 'github', 's', 't')",
            [],
        )
        .unwrap();
        // Counted in the minute they were received: all in one.
        let at = "2026-01-01T12:00:30Z";
        for i in 0..100 {
            let acme = rejected(&format!("a{i:03}"), at);
            let ghost = DeliveryRecord {
                organization_id: format!("ghost-{i}"),
                ..rejected(&format!("g{i:03}"), at)
            };
            store.record_delivery(&acme).await.unwrap();
            store.record_delivery(&ghost).await.unwrap();
        }
        let conn = rusqlite::Connection::open(&path).unwrap();
        for budget in ["acme", UNCONFIGURED_BUDGET] {
            let counted: u32 = conn
                .query_row(
                    "SELECT sum(count) FROM rejected_deliveries WHERE org = ?1",
                    [budget],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(counted, REJECTED_PER_MINUTE + 1, "{budget}");
        }
    }

    #[test]
    fn rejected_deliveries_count_in_the_minute_they_were_received() {
        let conn = super::super::plans::migrated();
        set_up(&conn, "acme");
        for i in 0..REJECTED_PER_MINUTE {
            assert!(insert(&conn, &rejected(&format!("a{i:03}"), "2026-01-01T12:00:59Z")).unwrap());
        }
        assert!(!insert(&conn, &rejected("b000", "2026-01-01T12:00:59Z")).unwrap());
        assert!(insert(&conn, &rejected("b001", "2026-01-01T12:01:00Z")).unwrap());
        let kept: u32 = conn
            .query_row("SELECT count(*) FROM delivery_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, REJECTED_PER_MINUTE + 1);
    }
}
