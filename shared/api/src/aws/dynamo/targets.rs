//! Deploy targets on the table (`pk=TARGET#{org}`, `sk={id}`; their secrets and tokens are
//! protected by the table's encryption key), and the dispatcher's transitions of a
//! deployment: conditional updates, so that a status only moves forward.

use async_trait::async_trait;
use autodeploy_core::deployment::{DeploymentRecord, DeploymentStatus};
use autodeploy_core::target::TargetSpec;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{
    CREATED_AT, DATA, DynamoStore, ETAG, EXPIRES_AT, Expr, FINISHED_RETENTION_SECS, GSI1SK, GSI2PK, GSI2SK, Index,
    Item, LAST_ERROR, NEXT_ATTEMPT_AT, PK, STATUS, TARGET_ID, UPDATED_AT, deployment_from_item, deployments_of_service,
    into_page, item_label, key, n, number_attr, org_pk, page_size, retry_conflicts, s, string_attr, unavailable,
};
use crate::store::{
    AttemptEnd, AttemptStart, Dispatching, Expected, Page, Refusal, StoreError, StoreResult, StoredTarget, TargetStore,
};
use crate::util::{now_rfc3339, now_unix, unix_rfc3339};

const VERSION: &str = "version";
const ATTEMPTS: &str = super::ATTEMPTS;

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

impl DynamoStore {
    /// Move deployment `id` from one of `from` to `to`, with `extra` SET clauses; `None` when
    /// its status was not one of `from` (nothing written).
    async fn transition(
        &self,
        (org, id): (&str, &str),
        from: &[DeploymentStatus],
        to: DeploymentStatus,
        mut e: Expr,
        extra: &[String],
    ) -> StoreResult<Option<DeploymentRecord>> {
        let mut set = vec![
            format!("{} = {}", e.name(STATUS), e.value("to", s(to.as_str()))),
            format!("{} = {}", e.name(UPDATED_AT), e.value("now", s(now_rfc3339()))),
        ];
        set.extend(extra.iter().cloned());
        if to.is_final() {
            set.push(format!(
                "{} = {}",
                e.name(EXPIRES_AT),
                e.value("expires", n(now_unix() + FINISHED_RETENTION_SECS))
            ));
        }
        let mut update = format!("SET {}", set.join(", "));
        if to != DeploymentStatus::Pending {
            // Only pending deployments are on the relay's index.
            update.push_str(&format!(" REMOVE {}, {}", e.name(GSI2PK), e.name(GSI2SK)));
        }
        let allowed: Vec<String> = from
            .iter()
            .enumerate()
            .map(|(i, status)| e.value(&format!("from{i}"), s(status.as_str())))
            .collect();
        let condition = format!("{} IN ({})", e.name(STATUS), allowed.join(", "));
        let item_key = key(org_pk(org), format!("DEPLOYMENT#{id}"));
        let result = retry_conflicts(|| {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(item_key.clone()))
                .update_expression(&update)
                .condition_expression(&condition)
                .set_expression_attribute_names(e.names())
                .set_expression_attribute_values(e.values())
                .return_values(ReturnValue::AllNew)
                .send()
        })
        .await;
        match result {
            Ok(out) => deployment_from_item(&out.attributes.unwrap_or_default()).map(Some),
            Err(err) if conditional_failure(&err) => Ok(None),
            Err(err) => Err(unavailable("transition", &err)),
        }
    }

    /// What became of deployment `id` when a conditional start found it no longer waiting
    /// (another attempt took it since it was read): its status now.
    async fn taken_meanwhile(&self, org: &str, id: &str) -> StoreResult<AttemptStart> {
        let item = self
            .get_item(key(org_pk(org), format!("DEPLOYMENT#{id}")), "begin_attempt")
            .await?;
        match item {
            Some(item) => Ok(AttemptStart::NotWaiting(deployment_from_item(&item)?.status)),
            None => Ok(AttemptStart::NotFound),
        }
    }

    /// Supersede each of `ids` still waiting (one that is not is left as it is).
    async fn supersede(&self, org: &str, ids: impl IntoIterator<Item = String>) -> StoreResult<()> {
        for id in ids {
            self.transition((org, &id), &WAITING, DeploymentStatus::Superseded, Expr::default(), &[])
                .await?;
        }
        Ok(())
    }

    /// Latest wins once an engine reported on `id`: the deployments of `service` still waiting
    /// that are older than it are never delivered.
    pub(super) async fn supersede_older(&self, org: &str, service: &str, id: &str) -> StoreResult<()> {
        let waiting = self.other_waiting(org, service, id).await?;
        self.supersede(
            org,
            waiting.into_iter().filter(|(_, newer)| !newer).map(|(older, _)| older),
        )
        .await
    }

    /// The service's deployments still waiting, other than `id`: `(id, newer than id)`.
    async fn other_waiting(&self, org: &str, service: &str, id: &str) -> StoreResult<Vec<(String, bool)>> {
        let query = self.index_query(Index::Gsi1, deployments_of_service(org, service), true);
        let items = self.collect(query, None, "begin_attempt").await?;
        let mut waiting = Vec::new();
        for item in &items {
            let other = string_attr(item, GSI1SK)?;
            let status = string_attr(item, STATUS)?;
            let is_waiting = DeploymentStatus::parse(&status).is_some_and(DeploymentStatus::is_waiting);
            if other != id && is_waiting {
                let newer = other.as_str() > id;
                waiting.push((other, newer));
            }
        }
        Ok(waiting)
    }
}

const WAITING: [DeploymentStatus; 2] = [DeploymentStatus::Queued, DeploymentStatus::Pending];

#[async_trait]
impl Dispatching for DynamoStore {
    async fn begin_attempt(&self, org: &str, id: &str) -> StoreResult<AttemptStart> {
        let Some(item) = self
            .get_item(key(org_pk(org), format!("DEPLOYMENT#{id}")), "begin_attempt")
            .await?
        else {
            return Ok(AttemptStart::NotFound);
        };
        let current = deployment_from_item(&item)?;
        if !current.status.is_waiting() {
            return Ok(AttemptStart::NotWaiting(current.status));
        }
        let others = self.other_waiting(org, &current.request.service_id, id).await?;
        if others.iter().any(|(_, newer)| *newer) {
            return match self
                .transition((org, id), &WAITING, DeploymentStatus::Superseded, Expr::default(), &[])
                .await?
            {
                Some(_) => Ok(AttemptStart::Superseded),
                None => self.taken_meanwhile(org, id).await,
            };
        }
        let mut e = Expr::default();
        let counted = format!(
            "{attempts} = if_not_exists({attempts}, {}) + {}",
            e.value("zero", n(0)),
            e.value("one", n(1)),
            attempts = e.name(ATTEMPTS)
        );
        let cleared = format!(
            "{} = {}",
            e.name(NEXT_ATTEMPT_AT),
            e.value("none", AttributeValue::Null(true))
        );
        let Some(started) = self
            .transition(
                (org, id),
                &WAITING,
                DeploymentStatus::InProgress,
                e,
                &[counted, cleared],
            )
            .await?
        else {
            return self.taken_meanwhile(org, id).await;
        };
        // Latest wins: the older waiting deployments of the service are never delivered.
        self.supersede(org, others.into_iter().map(|(older, _)| older)).await?;
        Ok(AttemptStart::Started(Box::new(started)))
    }

    async fn end_attempt(&self, org: &str, id: &str, end: &AttemptEnd) -> StoreResult<()> {
        let mut e = Expr::default();
        let (to, extra) = match end {
            AttemptEnd::Delivered => (
                DeploymentStatus::Delivered,
                vec![format!(
                    "{} = {}",
                    e.name(LAST_ERROR),
                    e.value("none", AttributeValue::Null(true))
                )],
            ),
            AttemptEnd::Failed { error } => (
                DeploymentStatus::Failed,
                vec![format!("{} = {}", e.name(LAST_ERROR), e.value("error", s(error)))],
            ),
            AttemptEnd::Retry {
                error,
                next_attempt_unix,
            } => (
                DeploymentStatus::Queued,
                vec![
                    format!("{} = {}", e.name(LAST_ERROR), e.value("error", s(error))),
                    format!(
                        "{} = {}",
                        e.name(NEXT_ATTEMPT_AT),
                        e.value("next", s(unix_rfc3339(*next_attempt_unix)))
                    ),
                ],
            ),
            AttemptEnd::Release { note } => (
                DeploymentStatus::Queued,
                vec![format!("{} = {}", e.name(LAST_ERROR), e.value("error", s(note)))],
            ),
        };
        self.transition((org, id), &[DeploymentStatus::InProgress], to, e, &extra)
            .await?;
        Ok(())
    }
}
