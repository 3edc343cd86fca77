//! Delivery ids processed recently (SPEC "Once only").

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::deployments::remember;
use super::{SqliteStore, unavailable};
use crate::store::{DeliveryKey, DeliveryLog, PUSH_MARK_RETENTION_SECS, StoreResult};

#[async_trait]
impl DeliveryLog for SqliteStore {
    async fn delivery_seen(&self, org: &str, source: &str, delivery_id: &str, now_unix: i64) -> StoreResult<bool> {
        self.read(|conn| {
            let found: Option<i64> = conn
                .prepare_cached("SELECT expires_at FROM deliveries WHERE org = ?1 AND provider = ?2 AND id = ?3")
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
        self.write(move |conn| remember(conn, &org, &delivery)).await
    }
}

/// Remove the delivery ids and push marks past their retention.
pub(super) fn purge(conn: &Connection, now: i64) -> StoreResult<()> {
    conn.execute("DELETE FROM deliveries WHERE expires_at < ?1", params![now])
        .map_err(unavailable)?;
    conn.execute(
        "DELETE FROM push_marks WHERE queued_unix < ?1",
        params![now - PUSH_MARK_RETENTION_SECS],
    )
    .map_err(unavailable)?;
    Ok(())
}
