//! Services: their documents, and the indexes pushes and image tags are matched through.

use std::sync::Arc;

use async_trait::async_trait;
use autodeploy_core::model::Service;
use autodeploy_core::target::TargetSpec;
use rusqlite::{Connection, OptionalExtension, params};

use super::sealing::unseal_with;
use super::{SqliteStore, collect, from_json, lock, page_by_id, row_by_id, to_json, unavailable};
use crate::store::{Expected, Page, PageRequest, ServiceStore, StoreError, StoreResult, StoredService, TenantLimits};

const SERVICE_COLUMNS: &str = "data, etag, last_push";

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

fn service_id(stored: &StoredService) -> String {
    stored.service.id.clone()
}

/// Services the store keeps in memory at most, as many as one organization may have (then it
/// forgets all at once): every push looks its repository's up, and a read costs a read
/// transaction (whose page cache SQLite drops whenever the writer committed) and a document
/// parsed per service. A push's own write, a service's `last_push`, forgets nothing:
/// `last_push` there is as it was read.
pub(super) const KNOWN_SERVICES: usize = 10_000;

impl SqliteStore {
    /// Run `write`, a change of services of `org`, then forget the services of `org` kept in
    /// memory.
    async fn change_services<T, F>(&self, org: String, write: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.write_then_forget(write, move |store| store.services_changed(&org))
            .await
    }

    /// Forget the services of `org` kept in memory.
    pub(super) fn services_changed(&self, org: &str) {
        lock(&self.inner.services).forget(org, None);
    }
}

/// A column services are found by, with its index.
#[derive(Debug, Clone, Copy)]
pub(super) enum ServiceKey {
    Repository,
    ImagePath,
    Target,
}

impl ServiceKey {
    fn column_and_index(self) -> (&'static str, &'static str) {
        match self {
            ServiceKey::Repository => ("repository", "services_by_repository"),
            ServiceKey::ImagePath => ("image_path", "services_by_image_path"),
            ServiceKey::Target => ("target_id", "services_by_target"),
        }
    }

    /// `SELECT {what}` of the services of `?1` whose key is `?2`, through the key's index.
    /// Named, because SQLite's planner, which has no statistics of the table, would rather
    /// walk every service of the organization by the primary key: a push would read the
    /// documents of all of an organization's services to find the two on its repository.
    pub(super) fn select(self, what: &str) -> String {
        let (column, index) = self.column_and_index();
        format!("SELECT {what} FROM services INDEXED BY {index} WHERE org = ?1 AND {column} = ?2")
    }
}

/// The columns a service is found by, beside its document.
pub(super) struct ServiceRow {
    pub data: String,
    pub repository: Option<String>,
    pub image_path: Option<String>,
}

impl ServiceRow {
    pub fn of(service: &Service) -> StoreResult<Self> {
        Ok(Self {
            data: to_json(service)?,
            repository: service.repository_key(),
            image_path: service.image_key().map(|(_, path)| path),
        })
    }
}

/// The etag of `id` of `org` in `table` (`services`, `targets`), if it exists.
pub(super) fn current_etag(conn: &Connection, table: &str, org: &str, id: &str) -> StoreResult<Option<String>> {
    conn.query_row(
        &format!("SELECT etag FROM {table} WHERE org = ?1 AND id = ?2"),
        params![org, id],
        |r| r.get(0),
    )
    .optional()
    .map_err(unavailable)
}

/// Whether writing `row` keeps the organization within `limits` (`creating`: a new service).
fn check_limits(
    conn: &Connection,
    (org, id): (&str, &str),
    creating: bool,
    row: &ServiceRow,
    limits: TenantLimits,
) -> StoreResult<()> {
    if creating {
        let count: u32 = conn
            .query_row("SELECT count(*) FROM services WHERE org = ?1", params![org], |r| {
                r.get(0)
            })
            .map_err(unavailable)?;
        if count >= limits.services {
            return Err(limits.too_many_services());
        }
    }
    for (key, value) in [
        (ServiceKey::Repository, &row.repository),
        (ServiceKey::ImagePath, &row.image_path),
    ] {
        let Some(value) = value else { continue };
        let others: u32 = conn
            .query_row(
                &format!("{} AND id <> ?3", key.select("count(*)")),
                params![org, value, id],
                |r| r.get(0),
            )
            .map_err(unavailable)?;
        if others >= limits.services_per_key {
            return Err(limits.too_many_on_key(value));
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Services of `org` whose `key` is `value`, in id order.
    fn services_where(&self, org: &str, key: ServiceKey, value: &str) -> StoreResult<Vec<StoredService>> {
        let mut services = self.read(|conn| {
            let mut stmt = conn.prepare_cached(&key.select(SERVICE_COLUMNS)).map_err(unavailable)?;
            let rows = stmt.query_map(params![org, value], service_row).map_err(unavailable)?;
            collect(rows, stored_service)
        })?;
        // Sorted here rather than by an `ORDER BY`, which SQLite re-prepares the statement for
        // whenever its parameters are bound anew.
        services.sort_unstable_by(|a, b| a.service.id.cmp(&b.service.id));
        Ok(services)
    }
}

#[async_trait]
impl ServiceStore for SqliteStore {
    async fn put_service(&self, stored: &StoredService, expected: Expected, limits: TenantLimits) -> StoreResult<()> {
        let (service, etag) = (&stored.service, stored.etag.clone());
        let row = ServiceRow::of(service)?;
        let (org, id) = (service.organization_id.clone(), service.id.clone());
        let target = service.spec.deploy_target.as_ref().map(|named| named.target_id.clone());
        // A service without an `external_id`, or with one that is not one id, fits only some
        // types of target: the type of the one it names is read in the write, whose spec is
        // sealed.
        let unfit_somewhere = service
            .spec
            .deploy_target
            .clone()
            .filter(|named| !named.fits_every_type());
        let key = unfit_somewhere.as_ref().and_then(|_| self.sealing_key());
        self.change_services(org.clone(), move |conn| {
            let stored: Option<(String, Option<String>)> = conn
                .prepare_cached("SELECT etag, target_id FROM services WHERE org = ?1 AND id = ?2")
                .and_then(|mut stmt| {
                    stmt.query_row(params![org, id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(unavailable)?;
            let (current, previous_target) = stored.unzip();
            check_limits(conn, (&org, &id), current.is_none(), &row, limits)?;
            // The target's existence and type are checked in this write, as a target's deletion
            // and its change of type check the services naming it in their own: one of the two
            // sees the other.
            if let Some(target) = &target {
                let spec: Option<String> = conn
                    .prepare_cached("SELECT spec FROM targets WHERE org = ?1 AND id = ?2")
                    .and_then(|mut stmt| stmt.query_row(params![org, target], |r| r.get(0)).optional())
                    .map_err(unavailable)?;
                let Some(spec) = spec else {
                    return Err(StoreError::TargetMissing);
                };
                if let Some(named) = &unfit_somewhere {
                    let kind = from_json::<TargetSpec>(&unseal_with(key.as_ref(), spec)?)?.target_type();
                    if !named.fits(kind) {
                        return Err(StoreError::TargetUnfit(kind));
                    }
                }
            }
            match (&expected, current) {
                (Expected::Absent, None) => conn.execute(
                    "INSERT INTO services (org, id, etag, data, repository, image_path, target_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, json_extract(?4, '$.deploy_target.target_id'))",
                    params![org, id, etag, row.data, row.repository, row.image_path],
                ),
                (Expected::Etag(want), Some(have)) if *want == have => conn.execute(
                    "UPDATE services SET etag = ?3, data = ?4, repository = ?5, image_path = ?6,
                     target_id = json_extract(?4, '$.deploy_target.target_id') WHERE org = ?1 AND id = ?2",
                    params![org, id, etag, row.data, row.repository, row.image_path],
                ),
                _ => return Err(StoreError::PreconditionFailed),
            }
            .map_err(unavailable)?;
            if let Some(previous) = previous_target
                && previous != target
            {
                // A wait for a retry was a wait for the previous destination: the new one (a
                // target, another, or pull consumers) gets the service's waiting work now.
                conn.prepare_cached(&format!(
                    "UPDATE deployments SET next_attempt_unix = NULL WHERE {} AND next_attempt_unix IS NOT NULL",
                    super::lifecycle::WAITING_OF_SERVICE[0]
                ))
                .and_then(|mut stmt| stmt.execute(params![org, id]))
                .map_err(unavailable)?;
            }
            Ok(())
        })
        .await?;
        // A service given a deploy target (or relieved of one) changes who its waiting
        // deployments are for: the dispatcher and waiting consumers look again now.
        self.work_changed(&stored.service.organization_id);
        Ok(())
    }

    async fn get_service(&self, org: &str, id: &str) -> StoreResult<Option<StoredService>> {
        let select = format!("SELECT {SERVICE_COLUMNS} FROM services");
        self.read(|conn| row_by_id(conn, &select, (org, id), service_row, stored_service))
    }

    async fn list_services(&self, org: &str, page: PageRequest<'_>) -> StoreResult<Page<StoredService>> {
        let select = format!("SELECT {SERVICE_COLUMNS} FROM services");
        self.read(|conn| page_by_id(conn, &select, (org, page), service_row, stored_service, service_id))
    }

    async fn delete_service(&self, org: &str, id: &str, expected: Option<&str>) -> StoreResult<bool> {
        let (org, id, expected) = (org.to_owned(), id.to_owned(), expected.map(str::to_owned));
        self.change_services(org.clone(), move |conn| {
            let Some(current) = current_etag(conn, "services", &org, &id)? else {
                return if expected.is_some() {
                    Err(StoreError::PreconditionFailed)
                } else {
                    Ok(false)
                };
            };
            if expected.as_ref().is_some_and(|want| *want != current) {
                return Err(StoreError::PreconditionFailed);
            }
            conn.execute("DELETE FROM services WHERE org = ?1 AND id = ?2", params![org, id])
                .map_err(unavailable)?;
            // Its push marks stay, until their retention, as they do on DynamoDB: a service
            // created again under its id still refuses the pushes it queued as replays.
            // Its waiting work is cancelled: what was meant for a target would otherwise go
            // to pull consumers, and a decommissioned service be deployed again. What is in
            // progress is marked, to be cancelled when it comes back (`cancel_if_deleted`).
            super::lifecycle::cancel_waiting(conn, &org, &id, crate::util::now_unix())?;
            super::lifecycle::mark_in_progress_deleted(conn, &org, &id)?;
            Ok(true)
        })
        .await
    }

    async fn services_by_repository(&self, org: &str, repository: &str) -> StoreResult<Arc<[StoredService]>> {
        let generation = {
            let known = lock(&self.inner.services);
            if let Some(services) = known.get(org, repository) {
                return Ok(Arc::clone(services));
            }
            known.generation()
        };
        let services: Arc<[StoredService]> = self.services_where(org, ServiceKey::Repository, repository)?.into();
        lock(&self.inner.services).keep(generation, org, repository, Arc::clone(&services));
        Ok(services)
    }

    fn services_kept_in_memory(&self) -> bool {
        true
    }

    async fn services_by_image_path(&self, org: &str, path: &str) -> StoreResult<Vec<StoredService>> {
        self.services_where(org, ServiceKey::ImagePath, path)
    }

    async fn push_queued_before(&self, org: &str, id: &str, mark: &str) -> StoreResult<bool> {
        let since = crate::util::now_unix() - crate::store::PUSH_MARK_RETENTION_SECS;
        self.read(|conn| {
            conn.prepare_cached(super::deployments::PUSH_QUEUED_SINCE)
                .and_then(|mut stmt| stmt.query_row(params![org, id, super::stored_mark(mark), since], |r| r.get(0)))
                .map_err(unavailable)
        })
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use autodeploy_core::model::{DeployTarget, ServiceKind, ServiceSpec};
    use autodeploy_core::sealed::SecretKey;
    use autodeploy_core::target::{Secret, Target, TargetType};

    use super::super::SqliteOptions;
    use super::super::plans::{migrated, query_plan};
    use super::*;
    use crate::store::{StoredTarget, TargetStore};

    /// A `CONTAINER` service `id` of acme, with no source, named after its id.
    fn service(id: &str, deploy_target: Option<DeployTarget>) -> Service {
        Service {
            id: id.to_owned(),
            organization_id: "acme".to_owned(),
            spec: ServiceSpec {
                environment_id: "production".to_owned(),
                name: id.to_owned(),
                kind: ServiceKind::Container,
                auto_deploy: true,
                git_repository: None,
                deployment_restrictions: Vec::new(),
                image: None,
                tag_policy: None,
                deploy_target,
            },
            version: 1,
            created_at: "2026-11-26T12:00:00Z".to_owned(),
            updated_at: "2026-11-26T12:00:00Z".to_owned(),
        }
    }

    /// The type of the target a service names is read from its sealed spec, in the service's
    /// write: a `QOVERY` target refuses a service without an `external_id`.
    #[tokio::test]
    async fn a_service_write_opens_the_sealed_spec_of_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            secret_key: Some(SecretKey::from_bytes(&[7; 32])),
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open_with(&dir.path().join("db"), options).unwrap();
        let target = StoredTarget {
            id: "engine".to_owned(),
            organization_id: "acme".to_owned(),
            spec: Target::Qovery {
                token: Secret::new("qovery-token"),
                api_url: "https://api.qovery.com".to_owned(),
            },
            etag: "t1".to_owned(),
            version: 1,
            created_at: "2026-11-26T12:00:00Z".to_owned(),
            updated_at: "2026-11-26T12:00:00Z".to_owned(),
        };
        store.put_target(&target, Expected::Absent).await.unwrap().unwrap();
        let sealed: String = store
            .read(|conn| {
                conn.query_row("SELECT spec FROM targets", [], |r| r.get(0))
                    .map_err(unavailable)
            })
            .unwrap();
        assert!(SecretKey::is_sealed(&sealed), "{sealed}");

        let service = |external_id: Option<&str>| {
            service(
                "api",
                Some(DeployTarget {
                    target_id: "engine".to_owned(),
                    external_id: external_id.map(str::to_owned),
                }),
            )
        };
        let limits = TenantLimits::default();
        // Without an id, or with a placeholder for one.
        for external_id in [None, Some("<the Qovery service id>")] {
            let refused = store
                .put_service(
                    &StoredService::new(service(external_id), "s1".to_owned()),
                    Expected::Absent,
                    limits,
                )
                .await;
            assert!(
                matches!(refused, Err(StoreError::TargetUnfit(TargetType::Qovery))),
                "{external_id:?}: {refused:?}"
            );
            assert_eq!(store.get_service("acme", "api").await.unwrap(), None);
        }
        store
            .put_service(
                &StoredService::new(
                    service(Some(autodeploy_core::target::QOVERY_ID_EXAMPLE)),
                    "s1".to_owned(),
                ),
                Expected::Absent,
                limits,
            )
            .await
            .unwrap();
        assert!(store.get_service("acme", "api").await.unwrap().is_some());
    }

    /// Matching a push or an image tag reads the services on its key through the key's
    /// index, whatever the organization's size, and its statement, prepared once, serves
    /// every lookup without being prepared again.
    #[test]
    fn services_are_found_through_their_key_index() {
        let conn = migrated();
        for i in 0..40 {
            conn.execute(
                "INSERT INTO services (org, id, etag, data, repository, image_path, target_id)
                 VALUES ('acme', ?1, 'e', '{}', ?2, ?2, ?2)",
                params![format!("service-{i:02}"), format!("key-{}", i % 4)],
            )
            .unwrap();
        }
        for key in [ServiceKey::Repository, ServiceKey::ImagePath, ServiceKey::Target] {
            let sql = key.select(SERVICE_COLUMNS);
            let plan = query_plan(&conn, &sql, ["acme", "key-1"]);
            let (column, index) = key.column_and_index();
            assert!(
                matches!(plan.as_slice(), [step] if step.contains(&format!("INDEX {index} (org=? AND {column}=?)"))),
                "{key:?}: {plan:#?}"
            );

            let mut stmt = conn.prepare_cached(&sql).unwrap();
            for value in ["key-1", "key-2", "key-3"] {
                let found = stmt.query_map(["acme", value], service_row).unwrap().count();
                assert_eq!(found, 10, "{key:?} {value}");
            }
            assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0, "{key:?}");
        }
    }
}
