//! Deploy targets on the table (`pk=TARGET#{org}`, `sk={id}`; their secrets and tokens are
//! protected by the table's encryption key). The dispatcher's transitions of a deployment are
//! [`super::lifecycle`]'s.

use async_trait::async_trait;
use autodeploy_core::target::TargetSpec;

use aws_sdk_dynamodb::types::TransactWriteItem;

use super::{
    CONFLICT_ATTEMPTS, CREATED_AT, DATA, DynamoStore, ETAG, Expr, Item, PK, TARGET_ID, UPDATED_AT, Write, filtered,
    item_label, key, n, number_attr, org_pk, s, string_attr,
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
    /// The part of a service write that names target `id`: only while the target exists, and
    /// with a fresh mark on it, so that a deletion that looked for the target's users before
    /// this write fails its condition and looks again.
    pub(super) fn target_named_action(&self, org: &str, id: &str) -> StoreResult<TransactWriteItem> {
        let mut e = Expr::default();
        let mark = uuid::Uuid::new_v4().simple().to_string();
        let update = format!("SET {} = {}", e.name(NAMED_MARK), e.value("mark", s(mark)));
        let condition = format!("attribute_exists({})", e.name(PK));
        self.action(
            Write::Update(key(target_pk(org), id.to_owned()), update),
            Some(condition),
            &e,
        )
    }
}

#[async_trait]
impl TargetStore for DynamoStore {
    async fn put_target(&self, target: &StoredTarget, expected: Expected) -> StoreResult<()> {
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
        let mut e = Expr::default();
        let condition = match &expected {
            Expected::Absent => format!("attribute_not_exists({})", e.name(PK)),
            Expected::Etag(tag) => e.equals(ETAG, "expected", s(tag)),
        };
        if self.put_item(item, Some((condition, e)), "put_target").await? {
            Ok(())
        } else {
            Err(StoreError::PreconditionFailed)
        }
    }

    async fn get_target(&self, org: &str, id: &str) -> StoreResult<Option<StoredTarget>> {
        self.get_item(key(target_pk(org), id.to_owned()), "get_target")
            .await?
            .as_ref()
            .map(target_from_item)
            .transpose()
    }

    async fn list_targets(&self, org: &str, page: PageRequest<'_>) -> StoreResult<Page<StoredTarget>> {
        let query = self.partition_query(target_pk(org), "", page.after, true);
        self.page(query, page.limit, "list_targets", target_from_item, |t| t.id.clone())
            .await
    }

    async fn delete_target(&self, org: &str, id: &str) -> Refusable<bool> {
        // Deleted only if no service named it since its users were looked for: a service
        // write naming it changes its mark in the same transaction (a query cannot be a
        // condition of a write).
        for _ in 0..CONFLICT_ATTEMPTS {
            let target_key = key(target_pk(org), id.to_owned());
            let Some(item) = self.get_item(target_key.clone(), "delete_target").await? else {
                return Ok(Ok(false));
            };
            let mark = item.get(NAMED_MARK).and_then(|v| v.as_s().ok()).cloned();
            // The organization's services that name it (a query of its own partition, filtered).
            let mut e = Expr::default();
            let filter = e.equals(TARGET_ID, "target", s(id));
            let query = filtered(self.partition_query(org_pk(org), "SERVICE#", None, true), filter, &e);
            let users = self
                .collect(query, Some(TARGET_USERS_NAMED + 1), "delete_target")
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
            let unchanged = match mark {
                Some(mark) => e.equals(NAMED_MARK, "mark", s(mark)),
                None => format!("attribute_not_exists({})", e.name(NAMED_MARK)),
            };
            let condition = format!("attribute_exists({}) AND {unchanged}", e.name(PK));
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
