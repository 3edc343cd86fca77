//! The embedded store of the standalone server: one SQLite database (WAL, synchronous=FULL)
//! holding services, secrets, tokens, the deployment log and the queue itself.
//!
//! Because the queue is a table of the same database, recording a deployment and enqueueing
//! it are one transaction: deployments are recorded `QUEUED` and never wait for a relay.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use autodeploy_core::deployment::{DeploymentRecord, DeploymentRequest, DeploymentStatus};
use autodeploy_core::model::Service;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::store::{
    DeliveryLog, DeploymentLog, Expected, Guard, Page, RecordOutcome, SecretRecord, SecretStore, ServiceStore, Store,
    StoreError, StoreResult, StoredService, TokenRecord, TokenStore,
};

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE services (
    org        TEXT NOT NULL,
    id         TEXT NOT NULL,
    etag       TEXT NOT NULL,
    data       TEXT NOT NULL,
    repository TEXT,
    image_path TEXT,
    last_push  TEXT,
    PRIMARY KEY (org, id)
) WITHOUT ROWID;
CREATE INDEX services_by_repository ON services (org, repository) WHERE repository IS NOT NULL;
CREATE INDEX services_by_image_path ON services (org, image_path) WHERE image_path IS NOT NULL;

CREATE TABLE webhook_secrets (
    org      TEXT NOT NULL,
    provider TEXT NOT NULL,
    secret   TEXT NOT NULL,
    set_at   TEXT NOT NULL,
    PRIMARY KEY (org, provider)
) WITHOUT ROWID;

CREATE TABLE tokens (
    org        TEXT NOT NULL,
    id         TEXT NOT NULL,
    name       TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    PRIMARY KEY (org, id)
) WITHOUT ROWID;

CREATE TABLE deployments (
    org        TEXT NOT NULL,
    id         TEXT NOT NULL,
    service_id TEXT NOT NULL,
    status     TEXT NOT NULL,
    data       TEXT NOT NULL,
    PRIMARY KEY (org, id)
) WITHOUT ROWID;
CREATE INDEX deployments_by_service ON deployments (org, service_id, id);
CREATE INDEX deployments_pending ON deployments (status, id) WHERE status = 'PENDING';

-- The queue: what the deployment engine consumes, in order.
CREATE TABLE queue (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id TEXT NOT NULL UNIQUE,
    message       TEXT NOT NULL
);

CREATE TABLE deliveries (
    org        TEXT NOT NULL,
    provider   TEXT NOT NULL,
    id         TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (org, provider, id)
) WITHOUT ROWID;
CREATE INDEX deliveries_by_expiry ON deliveries (expires_at);
"#,
    r#"
-- Which services a delivery recorded a deployment for (see Guard::Push).
CREATE TABLE delivery_services (
    org        TEXT NOT NULL,
    provider   TEXT NOT NULL,
    id         TEXT NOT NULL,
    service_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (org, provider, id, service_id)
) WITHOUT ROWID;
CREATE INDEX delivery_services_by_expiry ON delivery_services (expires_at);
"#,
];

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Print each queued request as one JSON line on stdout (the standalone server does, so a
    /// newcomer sees deployments happen).
    echo_queued: bool,
}

impl SqliteStore {
    /// Open (creating if needed) and migrate the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(unavailable)?;
        Self::init(conn)
    }

    /// A private in-memory database, for tests and benchmarks.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(unavailable)?)
    }

    pub fn with_echo(mut self, echo: bool) -> Self {
        self.echo_queued = echo;
        self
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        // WAL lets readers run beside the writer; FULL syncs every commit so that an
        // acknowledged write survives a crash of the process or the machine.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(unavailable)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(unavailable)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(unavailable)?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            echo_queued: false,
        })
    }

    /// Run `f` on the connection off the async executor.
    async fn with<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A poisoned lock only means another request panicked mid-call; SQLite's own
            // transaction rolled back, so the connection is still consistent.
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("the database task failed: {e}")))?
    }

    /// The queue's messages in order, oldest first, for consumers and tests.
    pub async fn queued_messages(&self, after_seq: i64, limit: usize) -> StoreResult<Vec<(i64, DeploymentRequest)>> {
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT seq, message FROM queue WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![after_seq, limit as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(unavailable)?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, message) = row.map_err(unavailable)?;
                out.push((seq, from_json(&message)?));
            }
            Ok(out)
        })
        .await
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let applied: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(unavailable)?;
    let applied = usize::try_from(applied).unwrap_or(0);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {applied}, newer than this build knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction().map_err(unavailable)?;
        tx.execute_batch(sql).map_err(unavailable)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
    }
    Ok(())
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("database error: {e}"))
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn service_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, Option<String>)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

fn stored_service((data, etag, last_push): (String, String, Option<String>)) -> StoreResult<StoredService> {
    Ok(StoredService {
        service: from_json(&data)?,
        etag,
        last_push,
    })
}

fn collect<T, R>(
    rows: rusqlite::MappedRows<'_, impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<R>>,
    convert: impl Fn(R) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut out = Vec::new();
    for row in rows {
        out.push(convert(row.map_err(unavailable)?)?);
    }
    Ok(out)
}

/// Cut a `limit + 1` result down to a page.
fn page<T>(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Page<T> {
    let more = items.len() > limit;
    items.truncate(limit);
    let last_key = if more { items.last().map(key) } else { None };
    Page { items, last_key }
}

const SERVICE_COLUMNS: &str = "data, etag, last_push";

#[async_trait]
impl ServiceStore for SqliteStore {
    async fn put_service(&self, service: &Service, etag: &str, expected: Expected) -> StoreResult<()> {
        let data = to_json(service)?;
        let repository = service.repository_key();
        let image_path = service.image_key().map(|(_, path)| path);
        let (org, id, etag) = (service.organization_id.clone(), service.id.clone(), etag.to_owned());
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let current: Option<String> = tx
                .query_row(
                    "SELECT etag FROM services WHERE org = ?1 AND id = ?2",
                    params![org, id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            match (&expected, &current) {
                (Expected::Absent, None) => {
                    tx.execute(
                        "INSERT INTO services (org, id, etag, data, repository, image_path) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![org, id, etag, data, repository, image_path],
                    )
                    .map_err(unavailable)?;
                }
                (Expected::Etag(want), Some(have)) if want == have => {
                    tx.execute(
                        "UPDATE services SET etag = ?3, data = ?4, repository = ?5, image_path = ?6 WHERE org = ?1 AND id = ?2",
                        params![org, id, etag, data, repository, image_path],
                    )
                    .map_err(unavailable)?;
                }
                _ => return Err(StoreError::PreconditionFailed),
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn get_service(&self, org: &str, id: &str) -> StoreResult<Option<StoredService>> {
        let (org, id) = (org.to_owned(), id.to_owned());
        self.with(move |conn| {
            conn.query_row(
                &format!("SELECT {SERVICE_COLUMNS} FROM services WHERE org = ?1 AND id = ?2"),
                params![org, id],
                service_row,
            )
            .optional()
            .map_err(unavailable)?
            .map(stored_service)
            .transpose()
        })
        .await
    }

    async fn list_services(&self, org: &str, after: Option<&str>, limit: usize) -> StoreResult<Page<StoredService>> {
        let (org, after) = (org.to_owned(), after.unwrap_or("").to_owned());
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {SERVICE_COLUMNS} FROM services WHERE org = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
                ))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![org, after, (limit + 1) as i64], service_row)
                .map_err(unavailable)?;
            let items = collect(rows, stored_service)?;
            Ok(page(items, limit, |s| s.service.id.clone()))
        })
        .await
    }

    async fn delete_service(&self, org: &str, id: &str, expected: Option<&str>) -> StoreResult<bool> {
        let (org, id, expected) = (org.to_owned(), id.to_owned(), expected.map(str::to_owned));
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let current: Option<String> = tx
                .query_row(
                    "SELECT etag FROM services WHERE org = ?1 AND id = ?2",
                    params![org, id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            let Some(current) = current else {
                return if expected.is_some() {
                    Err(StoreError::PreconditionFailed)
                } else {
                    Ok(false)
                };
            };
            if expected.is_some_and(|want| want != current) {
                return Err(StoreError::PreconditionFailed);
            }
            tx.execute("DELETE FROM services WHERE org = ?1 AND id = ?2", params![org, id])
                .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn services_by_repository(&self, org: &str, repository: &str) -> StoreResult<Vec<StoredService>> {
        let (org, repository) = (org.to_owned(), repository.to_owned());
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {SERVICE_COLUMNS} FROM services WHERE org = ?1 AND repository = ?2 ORDER BY id"
                ))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![org, repository], service_row)
                .map_err(unavailable)?;
            collect(rows, stored_service)
        })
        .await
    }

    async fn services_by_image_path(&self, org: &str, path: &str) -> StoreResult<Vec<StoredService>> {
        let (org, path) = (org.to_owned(), path.to_owned());
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {SERVICE_COLUMNS} FROM services WHERE org = ?1 AND image_path = ?2 ORDER BY id"
                ))
                .map_err(unavailable)?;
            let rows = stmt.query_map(params![org, path], service_row).map_err(unavailable)?;
            collect(rows, stored_service)
        })
        .await
    }
}

#[async_trait]
impl SecretStore for SqliteStore {
    async fn put_secret(&self, org: &str, provider: &str, record: &SecretRecord) -> StoreResult<()> {
        let (org, provider, record) = (org.to_owned(), provider.to_owned(), record.clone());
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO webhook_secrets (org, provider, secret, set_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (org, provider) DO UPDATE SET secret = excluded.secret, set_at = excluded.set_at",
                params![org, provider, record.secret, record.set_at],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn get_secret(&self, org: &str, provider: &str) -> StoreResult<Option<SecretRecord>> {
        let (org, provider) = (org.to_owned(), provider.to_owned());
        self.with(move |conn| {
            conn.query_row(
                "SELECT secret, set_at FROM webhook_secrets WHERE org = ?1 AND provider = ?2",
                params![org, provider],
                |r| {
                    Ok(SecretRecord {
                        secret: r.get(0)?,
                        set_at: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(unavailable)
        })
        .await
    }

    async fn delete_secret(&self, org: &str, provider: &str) -> StoreResult<bool> {
        let (org, provider) = (org.to_owned(), provider.to_owned());
        self.with(move |conn| {
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

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, String, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn token_record(
    (organization_id, id, name, scopes, hash, created_at): (String, String, String, String, String, String),
) -> StoreResult<TokenRecord> {
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
        self.with(move |conn| {
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

    async fn list_tokens(&self, org: &str, after: Option<&str>, limit: usize) -> StoreResult<Page<TokenRecord>> {
        let (org, after) = (org.to_owned(), after.unwrap_or("").to_owned());
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE org = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
                ))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![org, after, (limit + 1) as i64], token_row)
                .map_err(unavailable)?;
            let items = collect(rows, token_record)?;
            Ok(page(items, limit, |t| t.id.clone()))
        })
        .await
    }

    async fn delete_token(&self, org: &str, id: &str) -> StoreResult<bool> {
        let (org, id) = (org.to_owned(), id.to_owned());
        self.with(move |conn| {
            let n = conn
                .execute("DELETE FROM tokens WHERE org = ?1 AND id = ?2", params![org, id])
                .map_err(unavailable)?;
            Ok(n > 0)
        })
        .await
    }

    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        let hash = hash.to_owned();
        self.with(move |conn| {
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
        .await
    }
}

fn deployment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String)> {
    Ok((r.get(0)?, r.get(1)?))
}

fn deployment_record((data, status): (String, String)) -> StoreResult<DeploymentRecord> {
    let status = match status.as_str() {
        "PENDING" => DeploymentStatus::Pending,
        "QUEUED" => DeploymentStatus::Queued,
        other => return Err(StoreError::Corrupt(format!("unknown deployment status {other}"))),
    };
    Ok(DeploymentRecord {
        request: from_json(&data)?,
        status,
    })
}

#[async_trait]
impl DeploymentLog for SqliteStore {
    async fn record_deployment(&self, request: &DeploymentRequest, guard: &Guard) -> StoreResult<RecordOutcome> {
        let message = to_json(request)?;
        let request = request.clone();
        let guard = guard.clone();
        let updated = match &guard {
            Guard::ServiceUnchanged { updated, .. } => Some((
                to_json(&updated.service)?,
                updated.service.repository_key(),
                updated.service.image_key().map(|(_, p)| p),
            )),
            Guard::Push { .. } => None,
        };
        let echo = self.echo_queued;
        let outcome = self
            .with(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(unavailable)?;
                let (org, svc) = (&request.organization_id, &request.service_id);
                let changed = match (&guard, updated) {
                    (Guard::Push { mark, delivery }, _) => {
                        let fresh_delivery = match delivery {
                            None => true,
                            Some(d) => {
                                tx.execute(
                                    "INSERT INTO delivery_services (org, provider, id, service_id, expires_at)
                                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                                    params![org, d.provider, d.id, svc, d.expires_unix],
                                )
                                .map_err(unavailable)?
                                    == 1
                            }
                        };
                        if fresh_delivery {
                            tx.execute(
                                "UPDATE services SET last_push = ?3
                                 WHERE org = ?1 AND id = ?2 AND (last_push IS NULL OR last_push <> ?3)",
                                params![org, svc, mark],
                            )
                            .map_err(unavailable)?
                        } else {
                            0
                        }
                    }
                    (Guard::ServiceUnchanged { expected, updated: new }, Some((data, repository, image_path))) => tx
                        .execute(
                            "UPDATE services SET etag = ?4, data = ?5, repository = ?6, image_path = ?7
                             WHERE org = ?1 AND id = ?2 AND etag = ?3",
                            params![org, svc, expected, new.etag, data, repository, image_path],
                        )
                        .map_err(unavailable)?,
                    (Guard::ServiceUnchanged { .. }, None) => 0,
                };
                if changed == 0 {
                    return Ok(RecordOutcome::GuardFailed);
                }
                let status = DeploymentStatus::Queued;
                tx.execute(
                    "INSERT INTO deployments (org, id, service_id, status, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![org, request.deployment_id, svc, status.as_str(), message],
                )
                .map_err(unavailable)?;
                tx.execute(
                    "INSERT INTO queue (deployment_id, message) VALUES (?1, ?2)",
                    params![request.deployment_id, message],
                )
                .map_err(unavailable)?;
                tx.commit().map_err(unavailable)?;
                if echo {
                    println!("{message}");
                }
                Ok(RecordOutcome::Recorded(status))
            })
            .await?;
        Ok(outcome)
    }

    async fn list_deployments(
        &self,
        org: &str,
        service_id: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Page<DeploymentRecord>> {
        let (org, service_id) = (org.to_owned(), service_id.map(str::to_owned));
        // Ids are time-ordered; "after" in newest-first order means a smaller id.
        let before = after.map(str::to_owned).unwrap_or_else(|| "g".repeat(32));
        self.with(move |conn| {
            let fetch = (limit + 1) as i64;
            let items = match service_id {
                Some(svc) => {
                    let mut stmt = conn
                        .prepare_cached(
                            "SELECT data, status FROM deployments WHERE org = ?1 AND service_id = ?2 AND id < ?3
                             ORDER BY id DESC LIMIT ?4",
                        )
                        .map_err(unavailable)?;
                    let rows = stmt
                        .query_map(params![org, svc, before, fetch], deployment_row)
                        .map_err(unavailable)?;
                    collect(rows, deployment_record)?
                }
                None => {
                    let mut stmt = conn
                        .prepare_cached(
                            "SELECT data, status FROM deployments WHERE org = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
                        )
                        .map_err(unavailable)?;
                    let rows = stmt
                        .query_map(params![org, before, fetch], deployment_row)
                        .map_err(unavailable)?;
                    collect(rows, deployment_record)?
                }
            };
            Ok(page(items, limit, |d| d.request.deployment_id.clone()))
        })
        .await
    }

    async fn pending_deployments(&self, limit: usize) -> StoreResult<Vec<DeploymentRecord>> {
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT data, status FROM deployments WHERE status = 'PENDING' ORDER BY id LIMIT ?1")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![limit as i64], deployment_row)
                .map_err(unavailable)?;
            collect(rows, deployment_record)
        })
        .await
    }

    async fn held_behind_pending(&self, requests: &[DeploymentRequest], before: &str) -> StoreResult<HashSet<String>> {
        let keys: Vec<(String, String, String)> = requests
            .iter()
            .map(|r| (r.organization_id.clone(), r.service_id.clone(), r.deployment_id.clone()))
            .collect();
        let before = before.to_owned();
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM deployments \
                     WHERE org = ?1 AND service_id = ?2 AND id < min(?3, ?4) AND status = 'PENDING')",
                )
                .map_err(unavailable)?;
            let mut held = HashSet::new();
            for (org, service, id) in keys {
                let older: bool = stmt
                    .query_row(params![org, service, id, before], |row| row.get(0))
                    .map_err(unavailable)?;
                if older {
                    held.insert(id);
                }
            }
            Ok(held)
        })
        .await
    }

    async fn mark_queued(&self, org: &str, deployment_ids: &[String]) -> StoreResult<()> {
        let (org, ids) = (org.to_owned(), deployment_ids.to_vec());
        self.with(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            for id in &ids {
                tx.execute(
                    "UPDATE deployments SET status = 'QUEUED' WHERE org = ?1 AND id = ?2",
                    params![org, id],
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }
}

#[async_trait]
impl DeliveryLog for SqliteStore {
    async fn delivery_seen(&self, org: &str, provider: &str, delivery_id: &str, now_unix: i64) -> StoreResult<bool> {
        let (org, provider, id) = (org.to_owned(), provider.to_owned(), delivery_id.to_owned());
        self.with(move |conn| {
            let found: Option<i64> = conn
                .query_row(
                    "SELECT expires_at FROM deliveries WHERE org = ?1 AND provider = ?2 AND id = ?3",
                    params![org, provider, id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            Ok(found.is_some_and(|expires| expires > now_unix))
        })
        .await
    }

    async fn remember_delivery(
        &self,
        org: &str,
        provider: &str,
        delivery_id: &str,
        expires_unix: i64,
    ) -> StoreResult<()> {
        let (org, provider, id) = (org.to_owned(), provider.to_owned(), delivery_id.to_owned());
        self.with(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            tx.execute(
                "INSERT INTO deliveries (org, provider, id, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (org, provider, id) DO UPDATE SET expires_at = excluded.expires_at",
                params![org, provider, id, expires_unix],
            )
            .map_err(unavailable)?;
            // Expired ids are purged as new ones arrive, so the table stays small.
            for table in ["deliveries", "delivery_services"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE expires_at < ?1"),
                    params![expires_unix - crate::DELIVERY_RETENTION_SECS],
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.with(|conn| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}
