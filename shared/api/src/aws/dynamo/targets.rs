//! Deploy targets on the table (`pk=TARGET#{org}`, `sk={id}`; their secrets and tokens are
//! protected by the table's encryption key). The dispatcher's transitions of a deployment are
//! [`super::lifecycle`]'s.

use async_trait::async_trait;
use autodeploy_core::model::DeployTarget;
use autodeploy_core::target::TargetSpec;

use aws_sdk_dynamodb::types::{Select, TransactWriteItem};

use super::{
    CONFLICT_ATTEMPTS, CREATED_AT, DATA, DynamoStore, ETAG, Expr, Item, PK, TARGET_ID, UPDATED_AT, Write, filtered,
    item_label, key, n, number_attr, org_pk, s, string_attr, unavailable,
};
use crate::store::{
    Expected, Page, PageRequest, Refusable, Refusal, StoreError, StoreResult, StoredTarget, TARGET_USERS_NAMED,
    TargetStore,
};

const VERSION: &str = "version";
/// A random mark each service write naming the target, and each write of the target, sets (see
/// [`DynamoStore::delete_target`]).
const NAMED_MARK: &str = "named_mark";

pub(super) fn target_pk(org: &str) -> String {
    format!("TARGET#{org}")
}

fn target_from_item(item: &Item) -> StoreResult<StoredTarget> {
    let spec: TargetSpec = serde_json::from_str(&string_attr(item, DATA)?)
        .map_err(|e| StoreError::Corrupt(format!("item {}: {e}", item_label(item))))?;
    let organization_id = string_attr(item, PK)?
        .strip_prefix("TARGET#")
        .unwrap_or_default()
        .to_owned();
    Ok(StoredTarget {
        id: string_attr(item, super::SK)?,
        organization_id,
        spec,
        etag: string_attr(item, ETAG)?,
        version: u64::try_from(number_attr(item, VERSION)?).unwrap_or(0),
        created_at: string_attr(item, CREATED_AT)?,
        updated_at: string_attr(item, UPDATED_AT)?,
    })
}

impl DynamoStore {
    /// The part of a service write that names target `id`: only while the target exists (with
    /// the etag `pinned`, when given: as it was read), and with a fresh mark on it, so that a
    /// deletion or a change of type that looked for the target's users before this write fails
    /// its condition and looks again.
    pub(super) fn target_named_action(
        &self,
        org: &str,
        id: &str,
        pinned: Option<&str>,
    ) -> StoreResult<TransactWriteItem> {
        let mut e = Expr::default();
        let mark = uuid::Uuid::new_v4().simple().to_string();
        let update = format!("SET {} = {}", e.name(NAMED_MARK), e.value("mark", s(mark)));
        let mut condition = format!("attribute_exists({})", e.name(PK));
        if let Some(etag) = pinned {
            condition.push_str(&format!(" AND {}", e.equals(ETAG, "target_etag", s(etag))));
        }
        self.action(
            Write::Update(key(target_pk(org), id.to_owned()), update),
            Some(condition),
            &e,
        )
    }

    /// What a service write naming `named` holds under: the etag of the target as read when
    /// its type must be checked (the service's `external_id` does not fit every type: none, or
    /// not one id), `None` otherwise (the target's existence is all).
    /// [`StoreError::TargetMissing`] without the target, [`StoreError::TargetUnfit`] when the
    /// service does not fit its type.
    pub(super) async fn target_to_pin(&self, org: &str, named: &DeployTarget) -> StoreResult<Option<String>> {
        if named.fits_every_type() {
            return Ok(None);
        }
        let item = self
            .get_item(key(target_pk(org), named.target_id.clone()), "put_service")
            .await?
            .ok_or(StoreError::TargetMissing)?;
        let kind = target_from_item(&item)?.spec.target_type();
        if !named.fits(kind) {
            return Err(StoreError::TargetUnfit(kind));
        }
        string_attr(&item, ETAG).map(Some)
    }

    /// The organization's services that name target `id`, in id order, up to `want` (all when
    /// `None`): a query of its own partition, filtered.
    async fn target_users(&self, org: &str, id: &str, want: Option<usize>, op: &str) -> StoreResult<Vec<Item>> {
        let mut e = Expr::default();
        let filter = e.equals(TARGET_ID, "target", s(id));
        let query = filtered(self.partition_query(org_pk(org), "SERVICE#", None, true), filter, &e);
        self.collect(query, want, op).await
    }
}

/// The condition that the target's mark is still the one `item` (the target as read) holds: no
/// service write has named the target since. A query cannot be a condition of a write; a
/// write that looked for the target's users after reading `item` holds only under this.
fn mark_unchanged(e: &mut Expr, item: &Item) -> String {
    match item.get(NAMED_MARK).and_then(|v| v.as_s().ok()) {
        Some(mark) => e.equals(NAMED_MARK, "mark", s(mark)),
        None => format!("attribute_not_exists({})", e.name(NAMED_MARK)),
    }
}

/// 412 unless the target as read (`item`, if any) has the etag `expected` asks for.
fn check_expected(item: Option<&Item>, expected: Option<&str>) -> StoreResult<()> {
    match (item, expected) {
        (_, None) => Ok(()),
        (Some(item), Some(tag)) if string_attr(item, ETAG)? == tag => Ok(()),
        _ => Err(StoreError::PreconditionFailed),
    }
}

fn target_item(target: &StoredTarget) -> StoreResult<Item> {
    let data = serde_json::to_string(&target.spec)
        .map_err(|e| StoreError::Unavailable(format!("put_target: encoding: {e}")))?;
    let mut item = key(target_pk(&target.organization_id), target.id.clone());
    item.insert(DATA.to_owned(), s(data));
    item.insert(ETAG.to_owned(), s(&target.etag));
    item.insert(VERSION.to_owned(), n(i64::try_from(target.version).unwrap_or(i64::MAX)));
    item.insert(CREATED_AT.to_owned(), s(&target.created_at));
    item.insert(UPDATED_AT.to_owned(), s(&target.updated_at));
    // A fresh mark: a deletion that looked for the target's users before this write looks
    // again (this write replaces the item, and with it the mark a service write set).
    item.insert(NAMED_MARK.to_owned(), s(uuid::Uuid::new_v4().simple().to_string()));
    Ok(item)
}

#[async_trait]
impl TargetStore for DynamoStore {
    async fn put_target(&self, target: &StoredTarget, expected: Expected) -> Refusable<()> {
        let item = target_item(target)?;
        let kind = target.spec.target_type();
        let replaced = match &expected {
            // A type that needs nothing of the services naming it, or a new target (a service
            // write names an existing target only): the condition on the etag is all.
            Expected::Etag(tag) if kind.requires_external_id() => tag,
            _ => {
                let mut e = Expr::default();
                let condition = match &expected {
                    Expected::Absent => format!("attribute_not_exists({})", e.name(PK)),
                    Expected::Etag(tag) => e.equals(ETAG, "expected", s(tag)),
                };
                return if self.put_item(item, Some((condition, e)), "put_target").await? {
                    Ok(Ok(()))
                } else {
                    Err(StoreError::PreconditionFailed)
                };
            }
        };
        // The services naming it are looked for, then the target written only if none was
        // written naming it since (its mark unchanged, as for a deletion): a service that
        // names it after this write is checked against the new type by its own write.
        let target_key = key(target_pk(&target.organization_id), target.id.clone());
        for _ in 0..CONFLICT_ATTEMPTS {
            let current = self.get_item(target_key.clone(), "put_target").await?;
            check_expected(current.as_ref(), Some(replaced))?;
            let Some(current) = current else {
                return Err(StoreError::PreconditionFailed);
            };
            let users = self
                .target_users(&target.organization_id, &target.id, None, "put_target")
                .await?;
            let mut unfit = Vec::new();
            for user in &users {
                let service = super::service_from_item(user)?.service;
                if service
                    .spec
                    .deploy_target
                    .as_ref()
                    .is_some_and(|named| !named.fits(kind))
                {
                    unfit.push(service.id);
                }
            }
            if !unfit.is_empty() {
                return Ok(Err(Refusal::target_type_unfit(kind, &unfit)));
            }
            let mut e = Expr::default();
            let condition = format!(
                "{} AND {}",
                e.equals(ETAG, "expected", s(replaced)),
                mark_unchanged(&mut e, &current)
            );
            if self.put_item(item.clone(), Some((condition, e)), "put_target").await? {
                return Ok(Ok(()));
            }
            // Its etag changed (the next read says so), or a service named it meanwhile.
        }
        Err(StoreError::Unavailable(
            "put_target: services kept naming the target during its change".to_owned(),
        ))
    }

    async fn get_target(&self, org: &str, id: &str) -> StoreResult<Option<StoredTarget>> {
        self.get_item(key(target_pk(org), id.to_owned()), "get_target")
            .await?
            .as_ref()
            .map(target_from_item)
            .transpose()
    }

    async fn count_targets(&self, org: &str, up_to: u32) -> StoreResult<u32> {
        // A count only (`Select: COUNT`), page by page: no target is read.
        let (mut count, mut start) = (0u32, None);
        loop {
            let out = self
                .partition_query(target_pk(org), "", None, true)
                .select(Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("count_targets", &e))?;
            count = count.saturating_add(u32::try_from(out.count()).unwrap_or(u32::MAX));
            start = out.last_evaluated_key().cloned();
            if count >= up_to || start.is_none() {
                return Ok(count);
            }
        }
    }

    async fn list_targets(&self, org: &str, page: PageRequest<'_>) -> StoreResult<Page<StoredTarget>> {
        let query = self.partition_query(target_pk(org), "", page.after, true);
        self.page(query, page.limit, "list_targets", target_from_item, |t| t.id.clone())
            .await
    }

    async fn delete_target(&self, org: &str, id: &str, expected: Option<&str>) -> Refusable<bool> {
        // Deleted only if no service named it since its users were looked for: a service
        // write naming it changes its mark in the same transaction (a query cannot be a
        // condition of a write). Under `expected`, only while the target has that etag: the
        // delete's condition says so too.
        for _ in 0..CONFLICT_ATTEMPTS {
            let target_key = key(target_pk(org), id.to_owned());
            let item = self.get_item(target_key.clone(), "delete_target").await?;
            check_expected(item.as_ref(), expected)?;
            let Some(item) = item else {
                return Ok(Ok(false));
            };
            let users = self
                .target_users(org, id, Some(TARGET_USERS_NAMED + 1), "delete_target")
                .await?;
            if !users.is_empty() {
                let ids: Vec<String> = users
                    .iter()
                    .filter_map(|item| string_attr(item, super::SK).ok())
                    .map(|sk| sk.trim_start_matches("SERVICE#").to_owned())
                    .collect();
                return Ok(Err(Refusal::target_in_use(&ids)));
            }
            let mut e = Expr::default();
            let mut condition = format!("attribute_exists({}) AND {}", e.name(PK), mark_unchanged(&mut e, &item));
            if let Some(tag) = expected {
                condition.push_str(&format!(" AND {}", e.equals(ETAG, "expected", s(tag))));
            }
            let delete = self.action(Write::Delete(target_key), Some(condition), &e)?;
            if self.transact(vec![delete], "delete_target").await?.is_ok() {
                return Ok(Ok(true));
            }
        }
        Err(StoreError::Unavailable(
            "delete_target: services kept naming the target during its deletion".to_owned(),
        ))
    }
}
