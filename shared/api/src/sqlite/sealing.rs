//! Secrets at rest: webhook secrets and targets' credentials are sealed (AES-256-GCM) with the
//! operator's key before they are written, and opened when read.

use autodeploy_core::sealed::SecretKey;
use rusqlite::{Connection, params};

use super::{SqliteStore, unavailable};
use crate::store::{StoreError, StoreResult};

/// Why a key is refused: it does not open what the database holds sealed.
pub const KEY_DOES_NOT_OPEN: &str =
    "the secret key does not open the secrets sealed in this database: it is not the key they were sealed with";

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
                return Err(StoreError::Unavailable(KEY_DOES_NOT_OPEN.to_owned()));
            }
            _ => {}
        }
    }
    let Some(key) = key else { return Ok(()) };
    // The values replaced are zeroed where they stood (SQLite would otherwise leave them in
    // the page's free space), and once any is, the log is written back and emptied: no copy
    // of a secret in the clear is left in the database's files.
    conn.pragma_update(None, "secure_delete", true).map_err(unavailable)?;
    let sealed = seal_clear_values(conn, key);
    conn.pragma_update(None, "secure_delete", false).map_err(unavailable)?;
    if sealed? > 0 {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(unavailable)?;
    }
    Ok(())
}

/// Seal every value stored in the clear, in one transaction: how many were.
fn seal_clear_values(conn: &mut Connection, key: &SecretKey) -> StoreResult<usize> {
    let mut sealed = 0;
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
            let sealed_value = key
                .seal(&value)
                .map_err(|e| StoreError::Unavailable(format!("sealing a stored secret: {e}")))?;
            sealed += tx
                .execute(
                    &format!("UPDATE {table} SET {column} = ?3 WHERE org = ?1 AND {id} = ?2"),
                    params![org, key_value, sealed_value],
                )
                .map_err(unavailable)?;
        }
    }
    tx.commit().map_err(unavailable)?;
    Ok(sealed)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A secret an earlier version stored in the clear is sealed at start, and no copy of it in
    /// the clear is left in the database's files (the page's free space, the log).
    #[test]
    fn sealing_leaves_no_secret_in_the_clear_in_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("autodeploy.db");
        let secret = "a-secret-stored-in-the-clear-0123456789";
        {
            let mut conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
            super::super::schema::migrate(&mut conn).unwrap();
            conn.execute(
                "INSERT INTO webhook_secrets (org, provider, secret, set_at) VALUES ('acme', 'github', ?1, 't')",
                [secret],
            )
            .unwrap();
        }
        let key = SecretKey::from_bytes(&[7; 32]);
        let mut conn = Connection::open(&path).unwrap();
        check_and_seal(&mut conn, Some(&key)).unwrap();
        let stored: String = conn
            .query_row("SELECT secret FROM webhook_secrets", [], |r| r.get(0))
            .unwrap();
        assert_eq!(key.open(&stored).unwrap(), secret);
        // While the server still runs (its connection open), and after.
        for round in ["open", "closed"] {
            for file in ["autodeploy.db", "autodeploy.db-wal"] {
                let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
                let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
                assert!(!found, "{file}, connection {round}: the secret in the clear");
            }
            if round == "open" {
                drop(std::mem::replace(&mut conn, Connection::open_in_memory().unwrap()));
            }
        }
    }
}
