//! Webhook secrets and API tokens (tokens stored as SHA-256 digests only).

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, from_json, page_by_id, to_json, unavailable};
use crate::store::{Page, PageRequest, SecretRecord, SecretStore, StoreError, StoreResult, TokenRecord, TokenStore};

#[async_trait]
impl SecretStore for SqliteStore {
    async fn put_secret(&self, org: &str, provider: &str, record: &SecretRecord) -> StoreResult<()> {
        let (org, provider, set_at) = (org.to_owned(), provider.to_owned(), record.set_at.clone());
        let secret = self.seal(&record.secret)?;
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO webhook_secrets (org, provider, secret, set_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (org, provider) DO UPDATE SET secret = excluded.secret, set_at = excluded.set_at",
                params![org, provider, secret, set_at],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn get_secret(&self, org: &str, provider: &str) -> StoreResult<Option<SecretRecord>> {
        let stored: Option<(String, String)> = self.read(|conn| {
            conn.prepare_cached("SELECT secret, set_at FROM webhook_secrets WHERE org = ?1 AND provider = ?2")
                .and_then(|mut stmt| {
                    stmt.query_row(params![org, provider], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(unavailable)
        })?;
        stored
            .map(|(secret, set_at)| {
                Ok(SecretRecord {
                    secret: self.unseal(secret)?,
                    set_at,
                })
            })
            .transpose()
    }

    async fn delete_secret(&self, org: &str, provider: &str) -> StoreResult<bool> {
        let (org, provider) = (org.to_owned(), provider.to_owned());
        self.write(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM webhook_secrets WHERE org = ?1 AND provider = ?2",
                    params![org, provider],
                )
                .map_err(unavailable)?;
            Ok(n > 0)
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
