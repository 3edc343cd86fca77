//! Webhook secrets and API tokens (tokens stored as SHA-256 digests only).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, from_json, lock, page_by_id, to_json, unavailable};
use crate::store::{Page, PageRequest, SecretRecord, SecretStore, StoreError, StoreResult, TokenRecord, TokenStore};

#[async_trait]
impl SecretStore for SqliteStore {
    async fn put_secret(&self, org: &str, provider: &str, record: &SecretRecord) -> StoreResult<()> {
        let (write_org, write_provider, set_at) = (org.to_owned(), provider.to_owned(), record.set_at.clone());
        let secret = self.seal(&record.secret)?;
        self.change_secret(org, provider, move |conn| {
            conn.execute(
                "INSERT INTO webhook_secrets (org, provider, secret, set_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (org, provider) DO UPDATE SET secret = excluded.secret, set_at = excluded.set_at",
                params![write_org, write_provider, secret, set_at],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn get_secret(&self, org: &str, provider: &str) -> StoreResult<Option<SecretRecord>> {
        let generation = {
            let known = lock(&self.inner.secrets);
            if let Some(secret) = known.get(org, provider) {
                return Ok(secret.clone());
            }
            known.generation()
        };
        let stored: Option<(String, String)> = self.read(|conn| {
            conn.prepare_cached("SELECT secret, set_at FROM webhook_secrets WHERE org = ?1 AND provider = ?2")
                .and_then(|mut stmt| {
                    stmt.query_row(params![org, provider], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(unavailable)
        })?;
        let record = stored
            .map(|(secret, set_at)| {
                Ok(SecretRecord {
                    secret: self.unseal(secret)?,
                    set_at,
                })
            })
            .transpose()?;
        lock(&self.inner.secrets).keep(generation, org, provider, record.clone());
        Ok(record)
    }

    async fn delete_secret(&self, org: &str, provider: &str) -> StoreResult<bool> {
        let (write_org, write_provider) = (org.to_owned(), provider.to_owned());
        self.change_secret(org, provider, move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM webhook_secrets WHERE org = ?1 AND provider = ?2",
                    params![write_org, write_provider],
                )
                .map_err(unavailable)?;
            Ok(n > 0)
        })
        .await
    }
}

/// Webhook secrets the store keeps opened in memory at most (then it forgets all at once):
/// every delivery needs its organization's, and a read costs a read transaction (whose page
/// cache SQLite drops whenever the writer committed) and the unsealing.
pub(super) const KNOWN_SECRETS: usize = 1024;

impl SqliteStore {
    /// Run `write`, a change of the secret of `org` and `provider`, then forget the secret kept
    /// in memory.
    async fn change_secret<T, F>(&self, org: &str, provider: &str, write: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (org, provider) = (org.to_owned(), provider.to_owned());
        self.write_then_forget(write, move |store| {
            lock(&store.inner.secrets).forget(&org, Some(&provider))
        })
        .await
    }
}

type TokenRow = (String, String, String, String, String, String);

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn token_record((organization_id, id, name, scopes, hash, created_at): TokenRow) -> StoreResult<TokenRecord> {
    Ok(TokenRecord {
        organization_id,
        id,
        name,
        scopes: from_json(&scopes)?,
        hash,
        created_at,
    })
}

const TOKEN_COLUMNS: &str = "org, id, name, scopes, hash, created_at";

#[async_trait]
impl TokenStore for SqliteStore {
    async fn create_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let token = token.clone();
        let scopes = to_json(&token.scopes)?;
        self.write(move |conn| {
            let inserted = conn
                .execute(
                    "INSERT INTO tokens (org, id, name, scopes, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT DO NOTHING",
                    params![
                        token.organization_id,
                        token.id,
                        token.name,
                        scopes,
                        token.hash,
                        token.created_at
                    ],
                )
                .map_err(unavailable)?;
            if inserted == 0 {
                return Err(StoreError::PreconditionFailed);
            }
            Ok(())
        })
        .await
    }

    async fn list_tokens(&self, org: &str, page: PageRequest<'_>) -> StoreResult<Page<TokenRecord>> {
        let select = format!("SELECT {TOKEN_COLUMNS} FROM tokens");
        self.read(|conn| page_by_id(conn, &select, (org, page), token_row, token_record, |t| t.id.clone()))
    }

    async fn delete_token(&self, org: &str, id: &str) -> StoreResult<bool> {
        let (org, id) = (org.to_owned(), id.to_owned());
        self.write(move |conn| {
            let n = conn
                .execute("DELETE FROM tokens WHERE org = ?1 AND id = ?2", params![org, id])
                .map_err(unavailable)?;
            Ok(n > 0)
        })
        .await
    }

    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        self.read(|conn| {
            conn.query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"),
                params![hash],
                token_row,
            )
            .optional()
            .map_err(unavailable)?
            .map(token_record)
            .transpose()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record(secret: &str) -> SecretRecord {
        SecretRecord {
            secret: secret.to_owned(),
            set_at: "2026-12-05T00:00:00Z".to_owned(),
        }
    }

    /// A secret kept in memory is forgotten when it is set again or deleted: every read after
    /// a change answers the change, the absence first read included.
    #[tokio::test]
    async fn a_secret_read_after_a_change_is_the_new_one() {
        let (_dir, store) = super::super::plans::temp_store();
        assert_eq!(store.get_secret("acme", "github").await.unwrap(), None);
        for secret in ["first", "second"] {
            store.put_secret("acme", "github", &record(secret)).await.unwrap();
            for _ in 0..2 {
                assert_eq!(store.get_secret("acme", "github").await.unwrap(), Some(record(secret)));
            }
            assert_eq!(store.get_secret("acme", "gitlab").await.unwrap(), None);
        }
        assert!(store.delete_secret("acme", "github").await.unwrap());
        assert_eq!(store.get_secret("acme", "github").await.unwrap(), None);
    }

    /// A change whose caller goes away once it is submitted (a client that hung up) still
    /// commits, and the secret kept in memory is forgotten all the same.
    #[tokio::test]
    async fn a_change_whose_caller_went_away_is_not_hidden_by_the_kept_secret() {
        let (_dir, store) = super::super::plans::temp_store();
        store.put_secret("acme", "github", &record("first")).await.unwrap();
        assert_eq!(store.get_secret("acme", "github").await.unwrap(), Some(record("first")));
        // Polled once (the write is submitted), then dropped.
        let second = record("second");
        {
            let mut change = std::pin::pin!(store.put_secret("acme", "github", &second));
            let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(change.as_mut().poll(cx))).await;
            assert!(polled.is_pending());
        }
        // The write lands within moments; the bound only keeps a failure from hanging.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.get_secret("acme", "github").await.unwrap() != Some(record("second")) {
            assert!(tokio::time::Instant::now() < deadline, "the old secret is still kept");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
