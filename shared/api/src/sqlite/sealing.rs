//! Secrets at rest: webhook secrets and targets' credentials are sealed (AES-256-GCM) with the
//! operator's key before they are written, and opened when read.

use autodeploy_core::sealed::SecretKey;
use rusqlite::{Connection, params};

use super::{SqliteStore, unavailable};
use crate::store::{StoreError, StoreResult};

/// The columns that hold secrets: `(table, the key column beside org, column)`.
const SEALED_COLUMNS: [(&str, &str, &str); 2] = [("webhook_secrets", "provider", "secret"), ("targets", "id", "spec")];

/// Refuse a key that does not open the database's sealed secrets (or no key when some are
/// sealed), then seal what an earlier version stored in the clear.
pub(super) fn check_and_seal(conn: &mut Connection, key: Option<&SecretKey>) -> StoreResult<()> {
    for (table, _, column) in SEALED_COLUMNS {
        let sealed: Option<String> = conn
            .query_row(
                &format!("SELECT {column} FROM {table} WHERE {column} LIKE 'v1:%' LIMIT 1"),
                [],
                |r| r.get(0),
            )
            .ok();
        match (sealed, key) {
            (Some(_), None) => {
                return Err(StoreError::Unavailable(
                    "the database's secrets are sealed: start the server with their key (AUTODEPLOY_SECRET_KEY, or the key file beside the database)".to_owned(),
                ));
            }
            (Some(value), Some(key)) if key.open(&value).is_err() => {
                return Err(StoreError::Unavailable(
                    "the secret key does not open the secrets sealed in this database: it is not the key they were sealed with".to_owned(),
                ));
            }
            _ => {}
        }
    }
    let Some(key) = key else { return Ok(()) };
    let tx = conn.transaction().map_err(unavailable)?;
    for (table, id, column) in SEALED_COLUMNS {
        let clear: Vec<(String, String, String)> = {
            let mut stmt = tx
                .prepare(&format!(
                    "SELECT org, {id}, {column} FROM {table} WHERE {column} NOT LIKE 'v1:%'"
                ))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(unavailable)?;
            rows.collect::<Result<_, _>>().map_err(unavailable)?
        };
        for (org, key_value, value) in clear {
            let sealed = key
                .seal(&value)
                .map_err(|e| StoreError::Unavailable(format!("sealing a stored secret: {e}")))?;
            tx.execute(
                &format!("UPDATE {table} SET {column} = ?3 WHERE org = ?1 AND {id} = ?2"),
                params![org, key_value, sealed],
            )
            .map_err(unavailable)?;
        }
    }
    tx.commit().map_err(unavailable)
}

impl SqliteStore {
    /// `value` as it is stored: sealed when the store has a key.
    pub(super) fn seal(&self, value: &str) -> StoreResult<String> {
        match &self.inner.secret_key {
            Some(key) => key
                .seal(value)
                .map_err(|e| StoreError::Unavailable(format!("sealing a secret: {e}"))),
            None => Ok(value.to_owned()),
        }
    }

    /// A stored value, opened.
    pub(super) fn unseal(&self, stored: String) -> StoreResult<String> {
        unseal_with(self.inner.secret_key.as_ref(), stored)
    }

    /// The key the store seals with, for a write that opens what it reads (a clone: a cipher's
    /// expanded key, no allocation).
    pub(super) fn sealing_key(&self) -> Option<SecretKey> {
        self.inner.secret_key.clone()
    }
}

/// A stored value, opened with `key` (the store's: see [`SqliteStore::sealing_key`]).
pub(super) fn unseal_with(key: Option<&SecretKey>, stored: String) -> StoreResult<String> {
    if !SecretKey::is_sealed(&stored) {
        return Ok(stored);
    }
    let key = key.ok_or_else(|| StoreError::Corrupt("a sealed secret, and no key to open it".to_owned()))?;
    key.open(&stored)
        .map_err(|e| StoreError::Corrupt(format!("a stored secret: {e}")))
}
