//! Deploy targets on the table (`pk=TARGET#{org}`, `sk={id}`; their secrets and tokens are
//! protected by the table's encryption key). The dispatcher's transitions of a deployment are
//! [`super::lifecycle`]'s.

use async_trait::async_trait;
use autodeploy_core::target::TargetSpec;
use aws_sdk_dynamodb::types::ReturnValue;

use super::{
    CREATED_AT, DATA, DynamoStore, ETAG, Expr, Item, PK, TARGET_ID, UPDATED_AT, into_page, item_label, key, n,
    number_attr, org_pk, page_size, s, string_attr, unavailable,
};
use crate::store::{Expected, Page, Refusal, StoreError, StoreResult, StoredTarget, TargetStore};

const VERSION: &str = "version";

fn target_pk(org: &str) -> String {
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

fn conditional_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(
    err: &aws_sdk_dynamodb::error::SdkError<E, R>,
) -> bool {
    err.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
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
        let mut e = Expr::default();
        let condition = match &expected {
            Expected::Absent => format!("attribute_not_exists({})", e.name(PK)),
            Expected::Etag(tag) => format!("{} = {}", e.name(ETAG), e.value("expected", s(tag))),
        };
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if conditional_failure(&err) => Err(StoreError::PreconditionFailed),
            Err(err) => Err(unavailable("put_target", &err)),
        }
    }

    async fn get_target(&self, org: &str, id: &str) -> StoreResult<Option<StoredTarget>> {
        self.get_item(key(target_pk(org), id.to_owned()), "get_target")
            .await?
            .as_ref()
            .map(target_from_item)
            .transpose()
    }

    async fn list_targets(&self, org: &str, after: Option<&str>, limit: usize) -> StoreResult<Page<StoredTarget>> {
        let limit = page_size(limit);
        let mut e = Expr::default();
        let condition = format!("{} = {}", e.name(PK), e.value("pk", s(target_pk(org))));
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(condition)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .consistent_read(true)
            .set_exclusive_start_key(after.map(|id| key(target_pk(org), id.to_owned())));
        let items = self.collect(query, Some(limit + 1), "list_targets").await?;
        into_page(items, limit, target_from_item, |t| t.id.clone())
    }

    async fn delete_target(&self, org: &str, id: &str) -> StoreResult<Result<bool, Refusal>> {
        // The organization's services that name it (a query of its own partition, filtered).
        let mut e = Expr::default();
        let condition = format!(
            "{} = {} AND begins_with({}, {})",
            e.name(PK),
            e.value("pk", s(org_pk(org))),
            e.name(super::SK),
            e.value("prefix", s("SERVICE#"))
        );
        let filter = format!("{} = {}", e.name(TARGET_ID), e.value("target", s(id)));
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(condition)
            .filter_expression(filter)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .consistent_read(true);
        let users = self.collect(query, Some(5), "delete_target").await?;
        if !users.is_empty() {
            let ids: Vec<String> = users
                .iter()
                .filter_map(|item| string_attr(item, super::SK).ok())
                .map(|sk| sk.trim_start_matches("SERVICE#").to_owned())
                .collect();
            return Ok(Err(Refusal::Conflict(format!(
                "Services still deploy to this target ({}): point their deploy_target elsewhere first.",
                ids.join(", ")
            ))));
        }
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(target_pk(org), id.to_owned())))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| unavailable("delete_target", &e))?;
        Ok(Ok(out.attributes.is_some_and(|a| !a.is_empty())))
    }
}
