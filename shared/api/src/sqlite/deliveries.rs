//! Delivery ids processed recently (SPEC "Once only").

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::deployments::remember;
use super::{SqliteStore, unavailable};
use crate::store::{DeliveryKey, DeliveryLog, PUSH_MARK_RETENTION_SECS, StoreResult};

/// When a delivery id's record expires.
const DELIVERY_EXPIRY: &str = "SELECT expires_at FROM deliveries WHERE org = ?1 AND provider = ?2 AND id = ?3";
const PURGE_DELIVERIES: &str = "DELETE FROM deliveries WHERE expires_at < ?1";
const PURGE_PUSH_MARKS: &str = "DELETE FROM push_marks WHERE queued_unix < ?1";

#[async_trait]
impl DeliveryLog for SqliteStore {
    async fn delivery_seen(&self, org: &str, source: &str, delivery_id: &str, now_unix: i64) -> StoreResult<bool> {
        self.read(|conn| {
            let found: Option<i64> = conn
                .prepare_cached(DELIVERY_EXPIRY)
                .and_then(|mut stmt| {
                    stmt.query_row(params![org, source, delivery_id], |r| r.get(0))
                        .optional()
                })
                .map_err(unavailable)?;
            Ok(found.is_some_and(|expires| expires > now_unix))
        })
    }

    async fn remember_delivery(&self, org: &str, delivery: &DeliveryKey) -> StoreResult<()> {
        let (org, delivery) = (org.to_owned(), delivery.clone());
        self.write(move |conn| remember(conn, &org, &delivery, None).map(|_| ()))
            .await
    }

    fn remembers_deliveries_in_record(&self) -> bool {
        true
    }
}

/// Remove the delivery ids and push marks past their retention.
pub(super) fn purge(conn: &Connection, now: i64) -> StoreResult<()> {
    conn.execute(PURGE_DELIVERIES, params![now]).map_err(unavailable)?;
    conn.execute(PURGE_PUSH_MARKS, params![now - PUSH_MARK_RETENTION_SECS])
        .map_err(unavailable)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::deployments::{
        ADD_PUSH_MARK, INSERT_DEPLOYMENT, PUSH_QUEUED_SINCE, REMEMBER_DELIVERY, RENEW_PUSH_MARK, SET_LAST_PUSH,
    };
    use super::super::plans::{migrated, query_plan};
    use super::super::{execute, stored_mark};
    use super::*;

    /// Each statement on push marks and delivery ids finds its rows through an index, none
    /// scans: the tables grow with every push for the retention's 30 days.
    #[test]
    fn push_marks_and_delivery_ids_are_found_through_their_indexes() {
        let conn = migrated();
        for (sql, index) in [
            (
                PUSH_QUEUED_SINCE,
                "INDEX push_marks_by_mark (org=? AND mark=? AND service_id=?)",
            ),
            (
                RENEW_PUSH_MARK,
                "INDEX push_marks_by_mark (org=? AND mark=? AND service_id=?)",
            ),
            (PURGE_PUSH_MARKS, "INDEX push_marks_by_age (queued_unix<?)"),
            (
                DELIVERY_EXPIRY,
                "INDEX deliveries_by_id (org=? AND provider=? AND id=?)",
            ),
            (PURGE_DELIVERIES, "INDEX deliveries_by_expiry (expires_at<?)"),
        ] {
            let count = conn.prepare(sql).unwrap().parameter_count();
            let params: Vec<i64> = (0..count as i64).collect();
            let plan = query_plan(&conn, sql, rusqlite::params_from_iter(params));
            assert!(
                plan.iter()
                    .any(|step| step.starts_with("SEARCH") && step.contains(index)),
                "{sql}: {plan:#?}"
            );
            let scans = |step: &&String| step.starts_with("SCAN") && step != &"SCAN CONSTANT ROW";
            assert!(!plan.iter().any(|step| scans(&step)), "{sql}: {plan:#?}");
        }
    }

    /// A mark of two lowercase hexadecimal ids is stored as bytes, half its length; any other
    /// as it is; two marks never share a stored form.
    #[test]
    fn marks_of_hexadecimal_ids_are_stored_as_bytes() {
        let conn = migrated();
        let stored = |mark: &str| -> rusqlite::types::Value {
            let in_sql = conn
                .query_row(concat!("SELECT ", stored_mark!("?1")), [mark], |r| r.get(0))
                .unwrap();
            assert_eq!(stored_mark(mark), in_sql, "{mark}");
            in_sql
        };
        let (before, after) = ("a".repeat(40), "0123456789abcdef".repeat(4));
        let mut bytes = vec![41];
        bytes.extend([0xaa; 20]);
        bytes.extend([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef].repeat(4));
        assert_eq!(stored(&format!("{before}..{after}")), bytes.into());
        // A new branch's push (no `before`), and the ids split elsewhere.
        assert_eq!(
            stored(&format!("..{after}")),
            [&[1][..], &hex::decode(&after).unwrap()].concat().into()
        );
        assert_ne!(
            stored(&format!("{before}0..{}", &after[1..])),
            stored(&format!("{before}..{after}"))
        );
        // A `before` too long for the position's one byte.
        let long = format!("{}..{after}", "a".repeat(255));
        for other in [
            "A..b",
            "ab..cd..ef",
            "ab...cd",
            "abcd",
            "not..hex",
            "abc..d e",
            "",
            &long,
        ] {
            assert_eq!(stored(other), rusqlite::types::Value::Text(other.to_owned()), "{other}");
        }
        assert_eq!(
            stored(&format!("{}..{after}", "a".repeat(254))).data_type(),
            rusqlite::types::Type::Blob
        );
    }

    /// The form the writer computes is the one the upgrade computed in SQL, for every mark of
    /// up to six characters drawn from digits, letters inside and outside hexadecimal ones (of
    /// both cases), dots and a character outside ASCII, and at the position limit.
    #[test]
    fn marks_are_stored_in_rust_as_in_sql() {
        let conn = migrated();
        let mut in_sql = conn.prepare(concat!("SELECT ", stored_mark!("?1"))).unwrap();
        let mut check = |mark: &str| {
            let expected: rusqlite::types::Value = in_sql.query_row([mark], |r| r.get(0)).unwrap();
            assert_eq!(stored_mark(mark), expected, "{mark:?}");
        };
        let alphabet = ["0", "a", "f", "A", "F", "g", ".", "é"];
        let mut marks = vec![String::new()];
        for _ in 0..6 {
            marks = marks
                .iter()
                .flat_map(|mark| alphabet.iter().map(move |c| format!("{mark}{c}")))
                .collect();
            marks.iter().for_each(|mark| check(mark));
        }
        for before in [253, 254, 255, 256] {
            for after in ["", "ab", "abc", "AB", "a..b"] {
                check(&format!("{}..{after}", "a".repeat(before)));
                check(&format!("é{}..{after}", "a".repeat(before - 2)));
            }
        }
    }

    /// The writes every delivery makes run without a temporary table: SQLite builds one to
    /// evaluate an `IN` of three or more values, which a partial index's condition once did at
    /// every insert and update of a deployment.
    #[test]
    fn the_writes_of_a_delivery_build_no_temporary_table() {
        let conn = migrated();
        for sql in [
            INSERT_DEPLOYMENT,
            "UPDATE deployments SET status = 'DELIVERED' WHERE seq = ?1",
            ADD_PUSH_MARK,
            RENEW_PUSH_MARK,
            SET_LAST_PUSH,
            REMEMBER_DELIVERY,
        ] {
            let count = conn.prepare(sql).unwrap().parameter_count();
            let params: Vec<i64> = (0..count as i64).collect();
            let mut explain = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
            let opcodes: Vec<String> = explain
                .query_map(rusqlite::params_from_iter(params), |r| r.get(1))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(!opcodes.is_empty(), "{sql}");
            assert!(!opcodes.iter().any(|op| op == "OpenEphemeral"), "{sql}: {opcodes:?}");
        }
    }

    /// A mark is added once per service (a second add changes nothing, which is how the
    /// guard tells a push queued before) and renewed in place; a delivery id remembered again
    /// once expired moves its expiry forward on the row it has (the unique index is the
    /// upsert's conflict target), while one not expired changes nothing (which is how a write
    /// tells a copy of its delivery committed meanwhile). The replay check reads the newest
    /// time.
    #[test]
    fn marks_and_delivery_ids_are_kept_once_with_their_newest_time() {
        let conn = migrated();
        for now in [100, 200] {
            for service in ["api", "web"] {
                let added = execute(&conn, ADD_PUSH_MARK, params!["acme", service, stored_mark("a..b"), now]).unwrap();
                assert_eq!(added, usize::from(now == 100), "{service} at {now}");
                if added == 0 {
                    execute(
                        &conn,
                        RENEW_PUSH_MARK,
                        params!["acme", service, stored_mark("a..b"), now],
                    )
                    .unwrap();
                }
            }
            let remembered = execute(&conn, REMEMBER_DELIVERY, params!["acme", "GITHUB", "d1", now + 10, now]).unwrap();
            assert_eq!(remembered, 1, "at {now}");
        }
        let again = execute(&conn, REMEMBER_DELIVERY, params!["acme", "GITHUB", "d1", 215, 205]).unwrap();
        assert_eq!(again, 0);
        // Unless told when, it is remembered anew.
        let anew = execute(
            &conn,
            REMEMBER_DELIVERY,
            params!["acme", "GITHUB", "d1", 210, None::<i64>],
        )
        .unwrap();
        assert_eq!(anew, 1);
        let marks: Vec<(String, i64)> = conn
            .prepare("SELECT service_id, queued_unix FROM push_marks ORDER BY service_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(marks, [("api".to_owned(), 200), ("web".to_owned(), 200)]);
        let queued_since = |since: i64| -> bool {
            conn.query_row(
                PUSH_QUEUED_SINCE,
                params!["acme", "api", stored_mark("a..b"), since],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert!(queued_since(150));
        assert!(!queued_since(200));
        let expiries: Vec<i64> = conn
            .prepare("SELECT expires_at FROM deliveries")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(expiries, [210]);
    }
}
