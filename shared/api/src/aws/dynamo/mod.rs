//! The store on one DynamoDB table, laid out as the comment above `Table` in
//! `infra/template.yaml` fixes: an organization's services, deployments and push marks share
//! the partition `ORG#{org}`, its webhook secrets `SECRET#{org}` and its tokens `TOKEN#{org}`
//! (so that IAM's `dynamodb:LeadingKeys` can keep the internet-facing functions from writing
//! credentials); `gsi1` finds services by repository and deployments by service, `gsi2`
//! services by image path and deployments still pending. Nothing here ever scans.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use autodeploy_core::delivery::{
    CandidateFate, DELIVERY_HISTORY_RETENTION_SECS, DeliveryOutcome, DeliveryRecord, REJECTED_PER_MINUTE,
    UNCONFIGURED_BUDGET, UNCONFIGURED_REJECTED_RETENTION_SECS,
};
use autodeploy_core::deployment::{DeploymentRecord, DeploymentRequest, DeploymentResult, DeploymentStatus};
use autodeploy_core::model::Service;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, ReturnValue, Select, TransactWriteItem, Update};
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

/// `builder` with its condition (if any) and the names and values of its expressions (`e`):
/// puts, deletes and updates, in a transaction or alone, are built by types that share no
/// trait to do it through.
macro_rules! conditioned {
    ($builder:expr, $condition:expr, $e:expr) => {{
        let e: &Expr = $e;
        $builder
            .set_condition_expression($condition)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
    }};
}

mod lifecycle;
mod record;

pub use lifecycle::{STALE_ATTEMPT_SECS, Transition};
pub use record::{
    IMAGE_RECORDS_PER_TRANSACTION, MARKS_PER_TRANSACTION, MAX_TRANSACTION_ITEMS, PUSH_RECORDS_PER_TRANSACTION,
    TRANSACTION_CONCURRENCY,
};

use super::describe_sdk_error;
use crate::store::{
    Batch, Candidate, DELIVERIES_PAGE_BYTES, DeliveryHistory, DeliveryKey, DeliveryLog, DeliveryQuery, DeploymentLog,
    DeploymentQuery, Expected, Guard, PUSH_MARK_RETENTION_SECS, Page, PageFill, PageRequest, RecordOutcome, Refusable,
    Refusal, SecretRecord, SecretStore, ServiceStore, SpentBudgets, Store, StoreError, StoreResult, StoredService,
    TenantLimits, TokenRecord, TokenStore,
};

mod targets;
mod upgrade;

pub use upgrade::LayoutUpgrade;

type Item = HashMap<String, AttributeValue>;

const PK: &str = "pk";
const SK: &str = "sk";
const GSI1: &str = "gsi1";
const GSI1PK: &str = "gsi1pk";
const GSI1SK: &str = "gsi1sk";
const GSI2: &str = "gsi2";
const GSI2PK: &str = "gsi2pk";
const GSI2SK: &str = "gsi2sk";
const DATA: &str = "data";
const ETAG: &str = "etag";
const LAST_PUSH: &str = "last_push";
/// The `after` of the service's last queued push (the replay rule compares a push's `before`).
const CURRENT_COMMIT: &str = "current_commit";
/// The deployment of the service last made again (a redeploy), which is made again once.
const MADE_AGAIN: &str = "made_again";
const UPDATED_AT: &str = "updated_at";
const ATTEMPTS: &str = "attempts";
const LAST_ERROR: &str = "last_error";
const NEXT_ATTEMPT_AT: &str = "next_attempt_at";
/// An engine's report (JSON), and what it says without its time, to tell a repeat from another.
const RESULT: &str = "result";
const RESULT_KEY: &str = "result_key";
/// How long a finished deployment (`DELIVERED`, `FAILED`, `SUPERSEDED`) stays in the log.
pub const FINISHED_RETENTION_SECS: i64 = 30 * 24 * 60 * 60;
const STATUS: &str = "status";
/// The table's TTL attribute (unix seconds).
const EXPIRES_AT: &str = "expires_at";
const SECRET: &str = "secret";
const SET_AT: &str = "set_at";
const ORGANIZATION_ID: &str = "organization_id";
const TOKEN_ID: &str = "token_id";
const NAME: &str = "name";
const SCOPES: &str = "scopes";
const HASH: &str = "hash";
const CREATED_AT: &str = "created_at";
const TARGET_ID: &str = "target_id";
/// A counter's value (services under a key, rejected deliveries in a minute).
const COUNT: &str = "count";

const PENDING: &str = "PENDING";
/// How long a queued deployment stays in the log before TTL removes it.
const QUEUED_RETENTION_SECS: i64 = 90 * 24 * 60 * 60;
/// A page never asks DynamoDB for more than this many items at once.
const MAX_PAGE: usize = 1000;
/// Pending deployments a push looks through for older ones of its services; past this many,
/// its deployments all wait for the relay.
const MAX_PENDING_LOOKUP: usize = 1000;
/// Index key values longer than this are hashed: DynamoDB caps a partition key at 2,048
/// bytes, and a repository URL alone may be that long.
const MAX_INDEX_VALUE: usize = 1024;
/// Delivery ids come from request headers; longer ones are hashed into the key.
const MAX_DELIVERY_ID: usize = autodeploy_core::push::MAX_DELIVERY_ID;
/// Attempts of a write that lost a race against a concurrent transaction (or was throttled).
const CONFLICT_ATTEMPTS: u32 = 4;

/// The DynamoDB implementation of [`Store`].
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// Refusal budgets this instance found spent: a refusal past one writes nothing.
    spent_budgets: Arc<SpentBudgets>,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            spent_budgets: Arc::default(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The query's items, following DynamoDB's pages until `want` items are in hand (all of
    /// them when `None`): a page may come back short because of its 1 MB cap, or of a filter.
    async fn collect(&self, base: QueryFluentBuilder, want: Option<usize>, op: &str) -> StoreResult<Vec<Item>> {
        self.collect_until(base, want, op, |_| false).await
    }

    /// [`Self::collect`], stopping as well at the first item `enough` says is enough (kept, last).
    async fn collect_until(
        &self,
        base: QueryFluentBuilder,
        want: Option<usize>,
        op: &str,
        mut enough: impl FnMut(&Item) -> bool + Send,
    ) -> StoreResult<Vec<Item>> {
        let mut items: Vec<Item> = Vec::new();
        let mut start = base.get_exclusive_start_key().clone();
        // DynamoDB's limit counts the items read, before the filter: a filtered query reads
        // full pages, so that finding a few rare items does not take one round trip each.
        let filtered = base.get_filter_expression().is_some();
        loop {
            let mut query = base.clone().set_exclusive_start_key(start.take());
            if let Some(want) = want {
                let remaining = if filtered {
                    MAX_PAGE
                } else {
                    want.saturating_sub(items.len()).clamp(1, MAX_PAGE)
                };
                query = query.limit(i32::try_from(remaining).unwrap_or(i32::MAX));
            }
            let out = query.send().await.map_err(|e| unavailable(op, &e))?;
            let mut done = false;
            for item in out.items.unwrap_or_default() {
                done = enough(&item);
                items.push(item);
                if done {
                    break;
                }
            }
            if done || want.is_some_and(|want| items.len() >= want) {
                break;
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(items)
    }

    /// A query whose key condition is `condition`: on `index`, or on the table, where reads
    /// are consistent (a global index offers eventually consistent reads only: a write shows
    /// there within about a second). `e` holds the names and values of every expression built
    /// so far.
    fn query(&self, index: Option<Index>, condition: String, e: &Expr) -> QueryFluentBuilder {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(condition)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values());
        match index {
            Some(index) => query.index_name(index.name()),
            None => query.consistent_read(true),
        }
    }

    /// A query on partition `pk` over the records whose sort key starts with `prefix` (all of
    /// them when it is empty), after `after` (an id), in `forward` order.
    fn partition_query(&self, pk: String, prefix: &str, after: Option<&str>, forward: bool) -> QueryFluentBuilder {
        let mut e = Expr::default();
        let mut condition = e.equals(PK, "pk", s(&pk));
        if !prefix.is_empty() {
            let sk = e.name(SK);
            condition.push_str(&format!(" AND begins_with({sk}, {})", e.value("prefix", s(prefix))));
        }
        let start = after.map(|id| key(pk, format!("{prefix}{id}")));
        self.query(None, condition, &e)
            .scan_index_forward(forward)
            .set_exclusive_start_key(start)
    }

    /// A query on an index partition (`gsi1` / `gsi2`), in `forward` order.
    fn index_query(&self, index: Index, value: String, forward: bool) -> QueryFluentBuilder {
        let mut e = Expr::default();
        let condition = e.equals(index.pk(), "ipk", s(value));
        self.query(Some(index), condition, &e).scan_index_forward(forward)
    }

    /// A page of the query's items, at most `limit` (see [`page_size`]): `parse` reads an item,
    /// `id` gives an item's key.
    async fn page<T>(
        &self,
        query: QueryFluentBuilder,
        limit: usize,
        op: &str,
        parse: impl Fn(&Item) -> StoreResult<T>,
        id: impl Fn(&T) -> String,
    ) -> StoreResult<Page<T>> {
        let limit = page_size(limit);
        let items = self.collect(query, Some(limit + 1), op).await?;
        into_page(items, limit, parse, id)
    }

    async fn get_item(&self, key: Item, op: &str) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable(op, &e))?;
        Ok(out.item)
    }

    /// Run a transaction: `Ok(Ok(()))` when written, `Ok(Err(i))` when the condition of
    /// action `i` failed (nothing written). Conflicts with concurrent transactions are
    /// retried: see [`classify_cancellation`].
    async fn transact(&self, actions: Vec<TransactWriteItem>, op: &str) -> StoreResult<Result<(), usize>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.transact_once(actions.clone(), op).await? {
                Attempt::Written => return Ok(Ok(())),
                Attempt::ConditionsFailed(failed) => return Ok(Err(failed.first().copied().unwrap_or(0))),
                Attempt::Retryable(_) if attempt < CONFLICT_ATTEMPTS => backoff(attempt).await,
                Attempt::Retryable(reason) => return Err(kept_failing(op, &reason)),
            }
        }
    }

    /// One TransactWriteItems. Its client request token makes the SDK's own retries of it
    /// idempotent: a retry after a lost answer finds it written rather than failing its
    /// conditions on its own writes.
    async fn transact_once(&self, actions: Vec<TransactWriteItem>, op: &str) -> StoreResult<Attempt> {
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .client_request_token(uuid::Uuid::new_v4().to_string())
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(Attempt::Written),
            Err(err) => err,
        };
        let reasons: Vec<Option<String>> = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => cancelled
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().map(str::to_owned))
                .collect(),
            _ => return Err(unavailable(op, &err)),
        };
        let codes: Vec<Option<&str>> = reasons.iter().map(Option::as_deref).collect();
        match classify_cancellation(&codes) {
            Cancellation::ConditionsFailed(failed) => Ok(Attempt::ConditionsFailed(failed)),
            Cancellation::Retryable(reason) => Ok(Attempt::Retryable(reason)),
            Cancellation::Other(reason) => Err(StoreError::Unavailable(format!(
                "{op}: transaction cancelled: {reason}"
            ))),
        }
    }

    /// Update the item at `key` if `condition` holds: the item as it then is, or `None` when
    /// the condition failed.
    async fn update_if(
        &self,
        key: Item,
        update: &str,
        condition: &str,
        e: &Expr,
        op: &str,
    ) -> StoreResult<Option<Item>> {
        let written = retry_conflicts(|| {
            let request = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .update_expression(update)
                .return_values(ReturnValue::AllNew);
            conditioned!(request, Some(condition.to_owned()), e).send()
        })
        .await;
        match written {
            Ok(out) => Ok(Some(out.attributes.unwrap_or_default())),
            Err(err) if conditional_failure(&err) => Ok(None),
            Err(err) => Err(unavailable(op, &err)),
        }
    }

    /// Put `item` if `condition` holds (always without one): `false` when it did not.
    async fn put_item(&self, item: Item, condition: Option<(String, Expr)>, op: &str) -> StoreResult<bool> {
        let (condition, e) = condition.unzip();
        let e = e.unwrap_or_default();
        // An item a transaction is writing (a target a service write marks) is retried.
        let sent = retry_conflicts(|| {
            let request = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()));
            conditioned!(request, condition.clone(), &e).send()
        })
        .await;
        match sent {
            Ok(_) => Ok(true),
            Err(err) if conditional_failure(&err) => Ok(false),
            Err(err) => Err(unavailable(op, &err)),
        }
    }

    /// Delete the item at `key`: whether there was one.
    async fn delete_item(&self, key: Item, op: &str) -> StoreResult<bool> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| unavailable(op, &e))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    /// One action of a transaction: `write`, done only where `condition` holds; `e` holds the
    /// names and values of its expressions.
    fn action(&self, write: Write, condition: Option<String>, e: &Expr) -> StoreResult<TransactWriteItem> {
        let (table, action) = (&self.table, TransactWriteItem::builder());
        let action = match write {
            Write::Put(item) => {
                let put = Put::builder().table_name(table).set_item(Some(item));
                action.put(conditioned!(put, condition, e).build().map_err(not_built)?)
            }
            Write::Delete(key) => {
                let delete = Delete::builder().table_name(table).set_key(Some(key));
                action.delete(conditioned!(delete, condition, e).build().map_err(not_built)?)
            }
            Write::Update(key, update) => {
                let update = Update::builder()
                    .table_name(table)
                    .set_key(Some(key))
                    .update_expression(update);
                action.update(conditioned!(update, condition, e).build().map_err(not_built)?)
            }
        };
        Ok(action.build())
    }

    /// Add `delta` to the counter at `key`; with `below`, only while the counter is below it
    /// (an absent counter counts 0).
    fn count_action(&self, key: Item, delta: i64, below: Option<u32>) -> StoreResult<TransactWriteItem> {
        let mut e = Expr::default();
        let update = format!("ADD {} {}", e.name(COUNT), e.value("delta", n(delta)));
        let condition = below.map(|limit| {
            format!(
                "attribute_not_exists({count}) OR {count} < {}",
                e.value("limit", n(i64::from(limit))),
                count = e.name(COUNT)
            )
        });
        self.action(Write::Update(key, update), condition, &e)
    }
}

#[async_trait]
impl ServiceStore for DynamoStore {
    async fn put_service(&self, stored: &StoredService, expected: Expected, limits: TenantLimits) -> StoreResult<()> {
        let (service, etag) = (&stored.service, stored.etag.as_str());
        let org = &service.organization_id;
        // What the service is counted under now: nothing when it is created.
        let (before, condition_on) = match &expected {
            Expected::Absent => (Vec::new(), None),
            Expected::Etag(tag) => {
                let Some(item) = self.get_item(service_key(org, &service.id), "put_service").await? else {
                    return Err(StoreError::PreconditionFailed);
                };
                if string_attr(&item, ETAG)? != *tag {
                    return Err(StoreError::PreconditionFailed);
                }
                (counted_keys(&item)?, Some(tag.as_str()))
            }
        };
        let mut e = Expr::default();
        let update = service_update(service, etag, &mut e)?;
        // Replacing on the etag read above also pins the keys it is counted under.
        let condition = match condition_on {
            None => format!("attribute_not_exists({})", e.name(PK)),
            Some(tag) => e.equals(ETAG, "expected", s(tag)),
        };
        let mut base = vec![self.action(
            Write::Update(service_key(org, &service.id), update),
            Some(condition),
            &e,
        )?];
        // Why each action's condition may fail, in the actions' order.
        let mut refusals = vec![StoreError::PreconditionFailed];
        if expected == Expected::Absent {
            base.push(self.count_action(services_counter(org), 1, Some(limits.services))?);
            refusals.push(limits.too_many_services());
        }
        let after = service_keys(service);
        for counter in before.iter().filter(|c| !after.iter().any(|(a, _)| a == *c)) {
            base.push(self.count_action(key_counter(counter), -1, None)?);
            refusals.push(StoreError::PreconditionFailed);
        }
        for (counter, shown) in after.iter().filter(|(a, _)| !before.contains(a)) {
            base.push(self.count_action(key_counter(counter), 1, Some(limits.services_per_key))?);
            refusals.push(limits.too_many_on_key(shown));
        }
        let Some(named) = &service.spec.deploy_target else {
            return match self.transact(base, "put_service").await? {
                Ok(()) => Ok(()),
                Err(index) => Err(refusals.get(index).cloned().unwrap_or(StoreError::PreconditionFailed)),
            };
        };
        // The target it names must exist, and be of a type the service fits: its type is read,
        // and the write holds only while the target is as read (a change of type in between
        // fails it, and the target is read again), as a change of type checks the services
        // naming the target in its own write.
        let target_index = base.len();
        for _ in 0..CONFLICT_ATTEMPTS {
            let pinned = self.target_to_pin(org, named).await?;
            let mut actions = base.clone();
            actions.push(self.target_named_action(org, &named.target_id, pinned.as_deref())?);
            match self.transact(actions, "put_service").await? {
                Ok(()) => return Ok(()),
                Err(index) if index == target_index && pinned.is_some() => {}
                Err(index) if index == target_index => return Err(StoreError::TargetMissing),
                Err(index) => return Err(refusals.get(index).cloned().unwrap_or(StoreError::PreconditionFailed)),
            }
        }
        Err(StoreError::Unavailable(
            "put_service: the deploy target kept changing during the service's write".to_owned(),
        ))
    }

    async fn get_service(&self, org: &str, id: &str) -> StoreResult<Option<StoredService>> {
        self.get_item(service_key(org, id), "get_service")
            .await?
            .map(|item| service_from_item(&item))
            .transpose()
    }

    async fn list_services(&self, org: &str, page: PageRequest<'_>) -> StoreResult<Page<StoredService>> {
        let query = self.partition_query(org_pk(org), "SERVICE#", page.after, true);
        self.page(query, page.limit, "list_services", service_from_item, |s| {
            s.service.id.clone()
        })
        .await
    }

    async fn delete_service(&self, org: &str, id: &str, expected: Option<&str>) -> StoreResult<bool> {
        // The counters to decrease are known from the item; if it changes between the read and
        // the delete (a concurrent PUT), read again.
        for _ in 0..CONFLICT_ATTEMPTS {
            let Some(item) = self.get_item(service_key(org, id), "delete_service").await? else {
                // With an expected etag an absent service fails the condition too, as
                // `If-Match` on a missing resource does (and as the SQLite store answers).
                return match expected {
                    Some(_) => Err(StoreError::PreconditionFailed),
                    None => Ok(false),
                };
            };
            let current = string_attr(&item, ETAG)?;
            if expected.is_some_and(|tag| tag != current) {
                return Err(StoreError::PreconditionFailed);
            }
            let mut e = Expr::default();
            let condition = e.equals(ETAG, "expected", s(&current));
            let mut actions = vec![
                self.action(Write::Delete(service_key(org, id)), Some(condition), &e)?,
                self.count_action(services_counter(org), -1, None)?,
            ];
            for counter in counted_keys(&item)? {
                actions.push(self.count_action(key_counter(&counter), -1, None)?);
            }
            match self.transact(actions, "delete_service").await? {
                Ok(()) => return Ok(true),
                Err(_) if expected.is_some() => return Err(StoreError::PreconditionFailed),
                Err(_) => {}
            }
        }
        Err(StoreError::Unavailable(
            "delete_service: the service kept changing during its deletion".to_owned(),
        ))
    }

    async fn services_by_repository(&self, org: &str, repository: &str) -> StoreResult<Arc<[StoredService]>> {
        let query = self.index_query(Index::Gsi1, repository_index_value(org, repository), true);
        let items = self.collect(query, None, "services_by_repository").await?;
        items.iter().map(service_from_item).collect()
    }

    async fn services_by_image_path(&self, org: &str, path: &str) -> StoreResult<Vec<StoredService>> {
        let query = self.index_query(Index::Gsi2, image_index_value(org, path), true);
        let items = self.collect(query, None, "services_by_image_path").await?;
        items.iter().map(service_from_item).collect()
    }

    async fn push_queued_before(&self, org: &str, id: &str, mark: &str) -> StoreResult<bool> {
        // A count (`Select: COUNT`) rather than a read: the push-webhook function, which asks
        // it for a dry run, may only count in an organization's partition.
        let mut e = Expr::default();
        let condition = format!(
            "{} AND {}",
            e.equals(PK, "pk", s(org_pk(org))),
            e.equals(SK, "sk", s(push_mark_sk(id, mark)))
        );
        // TTL deletes expired items lazily: an expired mark may still be there.
        let mut f = Expr::default();
        let unexpired = format!(
            "{} > {}",
            f.name(EXPIRES_AT),
            f.value("now", n(crate::util::now_unix()))
        );
        let out = filtered(self.query(None, condition, &e), unexpired, &f)
            .select(Select::Count)
            .send()
            .await
            .map_err(|e| unavailable("push_queued_before", &e))?;
        Ok(out.count() > 0)
    }
}

/// The sort key of the item that says service `id` queued the push `mark`, until it expires.
fn push_mark_sk(id: &str, mark: &str) -> String {
    format!("PUSHMARK#{id}#{mark}")
}

#[async_trait]
impl SecretStore for DynamoStore {
    async fn put_secret(&self, org: &str, provider: &str, record: &SecretRecord) -> StoreResult<()> {
        let mut item = secret_key(org, provider);
        item.insert(SECRET.to_owned(), s(&record.secret));
        item.insert(SET_AT.to_owned(), s(&record.set_at));
        self.put_item(item, None, "put_secret").await?;
        Ok(())
    }

    async fn get_secret(&self, org: &str, provider: &str) -> StoreResult<Option<SecretRecord>> {
        let Some(item) = self.get_item(secret_key(org, provider), "get_secret").await? else {
            return Ok(None);
        };
        Ok(Some(SecretRecord {
            secret: string_attr(&item, SECRET)?,
            set_at: string_attr(&item, SET_AT)?,
        }))
    }

    async fn delete_secret(&self, org: &str, provider: &str) -> StoreResult<bool> {
        self.delete_item(secret_key(org, provider), "delete_secret").await
    }
}

#[async_trait]
impl TokenStore for DynamoStore {
    async fn create_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let mut record = token_key(&token.organization_id, &token.id);
        record.extend(token_attributes(token));
        let mut lookup = token_hash_key(&token.hash);
        lookup.extend(token_attributes(token));
        let mut e = Expr::default();
        let absent = format!("attribute_not_exists({})", e.name(PK));
        let actions = vec![
            self.action(Write::Put(record), Some(absent.clone()), &e)?,
            self.action(Write::Put(lookup), Some(absent), &e)?,
        ];
        match self.transact(actions, "create_token").await? {
            Ok(()) => Ok(()),
            // The id or the hash is taken.
            Err(_) => Err(StoreError::PreconditionFailed),
        }
    }

    async fn list_tokens(&self, org: &str, page: PageRequest<'_>) -> StoreResult<Page<TokenRecord>> {
        let query = self.partition_query(token_pk(org), "TOKEN#", page.after, true);
        self.page(query, page.limit, "list_tokens", token_from_item, |t| t.id.clone())
            .await
    }

    async fn delete_token(&self, org: &str, id: &str) -> StoreResult<bool> {
        let record = token_key(org, id);
        // The hash is only known from the token item; if that changes between the read and
        // the delete (a concurrent delete and re-create), read again.
        for _ in 0..CONFLICT_ATTEMPTS {
            let Some(item) = self.get_item(record.clone(), "delete_token").await? else {
                return Ok(false);
            };
            let hash = string_attr(&item, HASH)?;
            let mut e = Expr::default();
            let condition = e.equals(HASH, "hash", s(&hash));
            let actions = vec![
                self.action(Write::Delete(record.clone()), Some(condition), &e)?,
                self.action(Write::Delete(token_hash_key(&hash)), None, &Expr::default())?,
            ];
            if self.transact(actions, "delete_token").await?.is_ok() {
                return Ok(true);
            }
        }
        Err(StoreError::Unavailable(
            "delete_token: the token kept changing during its deletion".to_owned(),
        ))
    }

    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        self.get_item(token_hash_key(hash), "token_by_hash")
            .await?
            .map(|item| token_from_item(&item))
            .transpose()
    }
}

#[async_trait]
impl DeploymentLog for DynamoStore {
    async fn record_deployments(&self, batch: Batch<'_>) -> StoreResult<Vec<StoreResult<RecordOutcome>>> {
        let candidates = &batch.candidates[..];
        let outcomes = self.record_all(candidates).await;
        // The history is one more item, written once the transactions have decided: DynamoDB
        // cannot write it in the same transaction as every service's. Only when every service
        // was handled: after a failure the delivery is answered with an error, which the route
        // records as such.
        if let Some(draft) = &batch.history
            && outcomes.iter().all(Result::is_ok)
        {
            let fates = candidates.iter().zip(&outcomes).filter_map(|(c, o)| match o {
                Ok(RecordOutcome::Recorded(_)) => Some(CandidateFate::Recorded(&c.request.deployment_id)),
                Ok(RecordOutcome::GuardFailed) => Some(CandidateFate::AlreadyQueued {
                    service_id: &c.request.service_id,
                }),
                Err(_) => None,
            });
            let record = draft.complete(fates);
            if let Err(err) = self.record_delivery(&record).await {
                tracing::warn!(error = %err, "the delivery could not be added to the history");
            }
        }
        // Remembered only when every service was handled: a redelivery then has nothing left to
        // do, while after a failure it completes what is missing.
        if let Some(delivery) = &batch.delivery
            && outcomes.iter().all(Result::is_ok)
        {
            self.remember_delivery(batch.org, delivery).await?;
        }
        Ok(outcomes)
    }

    async fn get_deployment(&self, org: &str, id: &str) -> StoreResult<Option<DeploymentRecord>> {
        self.get_item(deployment_key(org, id), "get_deployment")
            .await?
            .as_ref()
            .map(deployment_from_item)
            .transpose()
    }

    async fn list_deployments(&self, org: &str, query: &DeploymentQuery<'_>) -> StoreResult<Page<DeploymentRecord>> {
        let DeploymentQuery { filter, page } = query;
        let mut query = match &filter.service_id {
            None => self.partition_query(org_pk(org), "DEPLOYMENT#", page.after, false),
            Some(service) => {
                let index_value = deployments_of_service(org, service);
                // A start key on an index names the table key and the index key.
                let start = page.after.map(|id| {
                    let mut start = deployment_key(org, id);
                    start.insert(GSI1PK.to_owned(), s(&index_value));
                    start.insert(GSI1SK.to_owned(), s(id));
                    start
                });
                self.index_query(Index::Gsi1, index_value, false)
                    .set_exclusive_start_key(start)
            }
        };
        if let Some(status) = filter.status {
            let mut e = Expr::default();
            let condition = e.equals(STATUS, "status_filter", s(status.as_str()));
            query = filtered(query, condition, &e);
        }
        let id = |d: &DeploymentRecord| d.request.deployment_id.clone();
        self.page(query, page.limit, "list_deployments", deployment_from_item, id)
            .await
    }

    async fn pending_deployments(&self, limit: usize) -> StoreResult<Vec<DeploymentRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = limit.min(MAX_PAGE);
        let query = self.index_query(Index::Gsi2, PENDING.to_owned(), true);
        let items = self.collect(query, Some(limit), "pending_deployments").await?;
        items.iter().take(limit).map(deployment_from_item).collect()
    }

    async fn held_behind_pending(&self, requests: &[DeploymentRequest], before: &str) -> StoreResult<HashSet<String>> {
        let Some(newest) = requests.iter().map(|r| r.deployment_id.as_str()).max() else {
            return Ok(HashSet::new());
        };
        // The pending deployments recorded before `before` (and the newest request), oldest
        // first: outside an outage of the queue, none (one query of an empty index partition).
        let mut e = Expr::default();
        let pending = e.equals(GSI2PK, "pending", s(PENDING));
        let condition = format!(
            "{pending} AND {} < {}",
            e.name(GSI2SK),
            e.value("before", s(newest.min(before)))
        );
        let projection = format!("{}, {}", e.name(GSI1PK), e.name(GSI2SK));
        let query = self
            .query(Some(Index::Gsi2), condition, &e)
            .projection_expression(projection);
        let items = self
            .collect(query, Some(MAX_PENDING_LOOKUP + 1), "held_behind_pending")
            .await?;
        if items.len() > MAX_PENDING_LOOKUP {
            // A backlog this long is the relay's to work through: everything waits behind it.
            return Ok(requests.iter().map(|r| r.deployment_id.clone()).collect());
        }
        // Each service's oldest pending deployment (the items come oldest first).
        let mut oldest: HashMap<String, String> = HashMap::new();
        for item in &items {
            oldest
                .entry(string_attr(item, GSI1PK)?)
                .or_insert(string_attr(item, GSI2SK)?);
        }
        Ok(requests
            .iter()
            .filter(|r| {
                oldest
                    .get(&deployments_of_service(&r.organization_id, &r.service_id))
                    .is_some_and(|id| id.as_str() < r.deployment_id.as_str().min(before))
            })
            .map(|r| r.deployment_id.clone())
            .collect())
    }

    async fn report_result(&self, org: &str, id: &str, result: &DeploymentResult) -> Refusable<DeploymentRecord> {
        let report = serde_json::to_string(result)
            .map_err(|e| StoreError::Unavailable(format!("report_result: encoding the result: {e}")))?;
        let report_key = result_key(result);
        let mut e = Expr::default();
        let update = lifecycle::status_update(
            &mut e,
            DeploymentStatus::Delivered,
            vec![(RESULT, s(report)), (RESULT_KEY, s(&report_key))],
            &[NEXT_ATTEMPT_AT],
            false,
        );
        let condition = format!(
            "attribute_exists({}) AND attribute_not_exists({}) AND {} IN ({}, {}, {})",
            e.name(PK),
            e.name(RESULT_KEY),
            e.name(STATUS),
            e.value("queued", s(DeploymentStatus::Queued.as_str())),
            e.value("in_progress", s(DeploymentStatus::InProgress.as_str())),
            e.value("delivered_before", s(DeploymentStatus::Delivered.as_str()))
        );
        let item_key = deployment_key(org, id);
        let written = self
            .update_if(item_key.clone(), &update, &condition, &e, "report_result")
            .await?;
        if let Some(item) = written {
            let record = deployment_from_item(&item)?;
            // The engine took this deployment: the older ones of its service are never
            // delivered.
            self.supersede_older(org, &record.request.service_id, id).await?;
            return Ok(Ok(record));
        }
        // Why the condition failed: read what is there.
        let Some(item) = self.get_item(item_key, "report_result").await? else {
            return Ok(Err(Refusal::NotFound));
        };
        let current = deployment_from_item(&item)?;
        Ok(match optional_string_attr(&item, RESULT_KEY)? {
            Some(key) if key == report_key => {
                // A repeat, perhaps of a report whose superseding did not finish.
                self.supersede_older(org, &current.request.service_id, id).await?;
                Ok(current)
            }
            Some(_) => Err(Refusal::Conflict(
                "A different result was already reported for this deployment.".to_owned(),
            )),
            None => Err(Refusal::Conflict(format!(
                "The deployment is {}: only a QUEUED, IN_PROGRESS or DELIVERED deployment takes a result.",
                current.status.as_str()
            ))),
        })
    }

    async fn mark_queued(&self, org: &str, deployment_ids: &[String]) -> StoreResult<()> {
        self.mark_all_queued(org, deployment_ids).await
    }
}

#[async_trait]
impl DeliveryLog for DynamoStore {
    async fn delivery_seen(&self, org: &str, source: &str, delivery_id: &str, now_unix: i64) -> StoreResult<bool> {
        let Some(item) = self
            .get_item(delivery_key(org, source, delivery_id), "delivery_seen")
            .await?
        else {
            return Ok(false);
        };
        // TTL deletes expired items lazily (within days), so an expired one may still be here.
        Ok(number_attr(&item, EXPIRES_AT)? > now_unix)
    }

    async fn remember_delivery(&self, org: &str, delivery: &DeliveryKey) -> StoreResult<()> {
        let mut item = delivery_key(org, &delivery.source, &delivery.id);
        item.insert(EXPIRES_AT.to_owned(), n(delivery.expires_unix));
        self.put_item(item, None, "remember_delivery").await?;
        Ok(())
    }
}

/// The partition of an organization's deliveries history.
fn delivery_log_pk(org: &str) -> String {
    format!("DELIVERYLOG#{org}")
}

const SOURCE: &str = "source";
const OUTCOME: &str = "outcome";

impl DynamoStore {
    /// Whether `org` has anything set up: refusals of organizations nobody set up share one
    /// budget and expire sooner, or inventing organization names would grow the table without
    /// bound.
    ///
    /// Each query asks for a count only (`Select: COUNT`), never an item: push-webhook and
    /// image-tag record refusals, and their roles may query these partitions only for a count
    /// (the template's `dynamodb:Select` condition), so that they never read a token or a
    /// deploy target.
    async fn organization_known(&self, org: &str) -> StoreResult<bool> {
        // Its services (and deployments), webhook secrets, tokens and targets: a partition
        // each; most organizations have services, the first asked.
        for pk in [org_pk(org), secret_pk(org), token_pk(org), targets::target_pk(org)] {
            let out = self
                .partition_query(pk, "", None, true)
                .select(Select::Count)
                .limit(1)
                .send()
                .await
                .map_err(|e| unavailable("record_delivery", &e))?;
            if out.count() > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Count one more rejected delivery of `org` in the minute it was received (the minute of
    /// its `received_at`, so that no minute of the history shows more than the budget);
    /// `false` once that minute's budget is spent.
    async fn rejected_budget(&self, org: &str, received_at: &str) -> StoreResult<bool> {
        let now = crate::util::now_unix();
        // `YYYY-MM-DDTHH:MM` of an RFC 3339 time.
        let minute = received_at.get(..16).unwrap_or(received_at);
        let mut e = Expr::default();
        let update = format!(
            "ADD {} {} SET {} = {}",
            e.name(COUNT),
            e.value("one", n(1)),
            e.name(EXPIRES_AT),
            e.value("expires", n(now + 120))
        );
        let condition = format!(
            "attribute_not_exists({count}) OR {count} < {}",
            e.value("budget", n(i64::from(REJECTED_PER_MINUTE))),
            count = e.name(COUNT)
        );
        let counter = key(format!("DELIVERYRATE#{org}"), minute.to_string());
        let counted = self
            .update_if(counter, &update, &condition, &e, "record_delivery")
            .await?;
        Ok(counted.is_some())
    }
}

fn delivery_record_from_item(org: &str, item: &Item) -> StoreResult<DeliveryRecord> {
    let mut record: DeliveryRecord = serde_json::from_str(&string_attr(item, DATA)?)
        .map_err(|e| StoreError::Corrupt(format!("item {}: {e}", item_label(item))))?;
    record.organization_id = org.to_owned();
    Ok(record)
}

#[async_trait]
impl DeliveryHistory for DynamoStore {
    async fn record_delivery(&self, record: &DeliveryRecord) -> StoreResult<bool> {
        let org = &record.organization_id;
        let mut retention = DELIVERY_HISTORY_RETENTION_SECS;
        if record.outcome == DeliveryOutcome::Rejected {
            // Organizations with nothing set up share one budget, and their refusals expire
            // sooner: inventing names gives no more room than one organization's.
            let known = self.organization_known(org).await?;
            let budget = if known { org.as_str() } else { UNCONFIGURED_BUDGET };
            // Known spent this minute: not even the counter's conditional write, which would fail.
            let minute = SpentBudgets::minute_of(&record.received_at);
            if self.spent_budgets.is_spent(budget, minute) {
                return Ok(false);
            }
            if !self.rejected_budget(budget, &record.received_at).await? {
                self.spent_budgets.mark(budget, minute);
                return Ok(false);
            }
            if !known {
                retention = UNCONFIGURED_REJECTED_RETENTION_SECS;
            }
        }
        let data = serde_json::to_string(record)
            .map_err(|e| StoreError::Unavailable(format!("record_delivery: encoding: {e}")))?;
        let mut item = key(delivery_log_pk(org), record.id.clone());
        item.insert(DATA.to_owned(), s(data));
        item.insert(SOURCE.to_owned(), s(record.source.as_str()));
        item.insert(OUTCOME.to_owned(), s(record.outcome.as_str()));
        item.insert(EXPIRES_AT.to_owned(), n(crate::util::now_unix() + retention));
        self.put_item(item, None, "record_delivery").await?;
        Ok(true)
    }

    async fn get_delivery(&self, org: &str, id: &str) -> StoreResult<Option<DeliveryRecord>> {
        self.get_item(key(delivery_log_pk(org), id.to_owned()), "get_delivery")
            .await?
            .map(|item| delivery_record_from_item(org, &item))
            .transpose()
    }

    async fn list_deliveries(&self, org: &str, query: &DeliveryQuery<'_>) -> StoreResult<Page<DeliveryRecord>> {
        let DeliveryQuery { filter, page } = query;
        let mut query = self.partition_query(delivery_log_pk(org), "", page.after, false);
        let mut e = Expr::default();
        let mut filters = Vec::new();
        if let Some(source) = filter.source {
            filters.push(e.equals(SOURCE, "source", s(source.as_str())));
        }
        if let Some(outcome) = filter.outcome {
            filters.push(e.equals(OUTCOME, "outcome", s(outcome.as_str())));
        }
        if !filters.is_empty() {
            query = filtered(query, filters.join(" AND "), &e);
        }
        let limit = page_size(page.limit);
        let mut fill = PageFill::new(limit, DELIVERIES_PAGE_BYTES);
        let stored_size = |item: &Item| item.get(DATA).and_then(|v| v.as_s().ok()).map_or(0, String::len);
        let items = self
            .collect_until(query, Some(limit + 1), "list_deliveries", |item| {
                !fill.take(stored_size(item))
            })
            .await?;
        // The item `fill` refused, when it refused one, only proves that more follow.
        let kept = items.len() - usize::from(fill.full());
        let items = items[..kept]
            .iter()
            .map(|item| delivery_record_from_item(org, item))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(fill.page(items, |d| d.id.clone()))
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn ping(&self) -> StoreResult<()> {
        // A read of a key that never exists: as cheap as a round trip gets, and it proves the
        // table and the read permission too.
        self.get_item(key("PING".to_owned(), "PING".to_owned()), "ping").await?;
        Ok(())
    }
}

/// What an action of a transaction does to one item.
enum Write {
    /// Put this whole item.
    Put(Item),
    /// Delete the item at this key.
    Delete(Item),
    /// Apply this update expression to the item at this key.
    Update(Item, String),
}

#[derive(Clone, Copy)]
enum Index {
    Gsi1,
    Gsi2,
}

impl Index {
    fn name(self) -> &'static str {
        match self {
            Index::Gsi1 => GSI1,
            Index::Gsi2 => GSI2,
        }
    }

    fn pk(self) -> &'static str {
        match self {
            Index::Gsi1 => GSI1PK,
            Index::Gsi2 => GSI2PK,
        }
    }
}

/// Expression placeholders, so attribute names never collide with DynamoDB's reserved words
/// (`data`, `status`, `name`, `hash` are). Only what an expression uses is sent: DynamoDB
/// rejects unused placeholders.
#[derive(Default, Clone)]
struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    fn name(&mut self, attribute: &str) -> String {
        let placeholder = format!("#{attribute}");
        self.names.insert(placeholder.clone(), attribute.to_owned());
        placeholder
    }

    fn value(&mut self, label: &str, value: AttributeValue) -> String {
        let placeholder = format!(":{label}");
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    /// `attribute = value`, for a condition or a `SET` (`label` names the value).
    fn equals(&mut self, attribute: &str, label: &str, value: AttributeValue) -> String {
        format!("{} = {}", self.name(attribute), self.value(label, value))
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

/// The update that writes `service` with `etag` and keeps `last_push`: its index keys are
/// set when the service has a repository / image and removed when it no longer has one.
fn service_update(service: &Service, etag: &str, e: &mut Expr) -> StoreResult<String> {
    let data = serde_json::to_string(service)
        .map_err(|err| StoreError::Unavailable(format!("encoding service {}: {err}", service.id)))?;
    let org = &service.organization_id;
    let mut set = vec![e.equals(DATA, "data", s(data)), e.equals(ETAG, "etag", s(etag))];
    let mut remove = Vec::new();
    let indexed = [
        (
            GSI1PK,
            GSI1SK,
            service.repository_key().map(|r| repository_index_value(org, &r)),
        ),
        (
            GSI2PK,
            GSI2SK,
            service.image_key().map(|(_, path)| image_index_value(org, &path)),
        ),
    ];
    for (pk, sk, value) in indexed {
        match value {
            Some(value) => {
                set.push(e.equals(pk, pk, s(value)));
                set.push(e.equals(sk, "sid", s(&service.id)));
            }
            None => remove.extend([e.name(pk), e.name(sk)]),
        }
    }
    // Which target the service deploys to: a target that services name cannot be deleted.
    match &service.spec.deploy_target {
        Some(target) => set.push(e.equals(TARGET_ID, "target", s(&target.target_id))),
        None => remove.push(e.name(TARGET_ID)),
    }
    let mut update = format!("SET {}", set.join(", "));
    if !remove.is_empty() {
        update.push_str(&format!(" REMOVE {}", remove.join(", ")));
    }
    Ok(update)
}

/// How a cancelled transaction ends, from its per-action reason codes (in request order;
/// `None` / `"None"` for actions that were fine).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cancellation {
    /// The conditions of the actions at these indexes did not hold: a definite answer, so it
    /// wins over any other reason.
    ConditionsFailed(Vec<usize>),
    /// Another transaction held one of the items (`TransactionConflict`), or the partition was
    /// throttled (`ThrottlingError`). Nothing was written and the conditions were never
    /// decided, so the write is retried; real DynamoDB does this under contention (identical
    /// webhooks arriving together) and on hot partitions, moto never does.
    Retryable(String),
    /// Anything else (validation, capacity): not retried here, the SDK already retried what it
    /// could.
    Other(String),
}

fn classify_cancellation(codes: &[Option<&str>]) -> Cancellation {
    let failed: Vec<usize> = codes
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == Some("ConditionalCheckFailed"))
        .map(|(i, _)| i)
        .collect();
    if !failed.is_empty() {
        return Cancellation::ConditionsFailed(failed);
    }
    let other: Vec<&str> = codes.iter().flatten().copied().filter(|c| *c != "None").collect();
    if other.is_empty() {
        return Cancellation::Other("no reason given".to_owned());
    }
    let reason = other.join(", ");
    if other
        .iter()
        .all(|c| matches!(*c, "TransactionConflict" | "ThrottlingError"))
    {
        Cancellation::Retryable(reason)
    } else {
        Cancellation::Other(reason)
    }
}

/// What one TransactWriteItems came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    Written,
    /// Nothing was written: the conditions of these actions failed.
    ConditionsFailed(Vec<usize>),
    /// Nothing was written, for a reason that may pass: try again.
    Retryable(String),
}

fn kept_failing(op: &str, reason: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "{op}: the transaction kept being cancelled ({reason}) by concurrent writes or throttling"
    ))
}

/// Short, jittered pauses between attempts (about 25, 50, 100 ms), so racing writers spread.
async fn backoff(attempt: u32) {
    let base = 25u64 << attempt.saturating_sub(1).min(4);
    let millis = base / 2 + rand::random_range(0..=base / 2);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

/// Retry a single-item write that met a transaction in progress on the same item
/// (`TransactionConflictException`): a service write racing a deployment record.
async fn retry_conflicts<T, E, R, F, Fut>(mut send: F) -> Result<T, SdkError<E, R>>
where
    E: ProvideErrorMetadata,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, R>>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match send().await {
            Err(err)
                if attempt < CONFLICT_ATTEMPTS
                    && err.as_service_error().and_then(|e| e.code()) == Some("TransactionConflictException") =>
            {
                backoff(attempt).await;
            }
            other => return other,
        }
    }
}

/// Whether a single-item write failed its condition.
fn conditional_failure<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

fn not_built(err: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Unavailable(format!("building a transaction's action: {err}"))
}

/// `query` keeping only the items `filter` holds for; `e` holds the filter's names and values,
/// added to the query's own, whose value labels it must not reuse.
fn filtered(query: QueryFluentBuilder, filter: String, e: &Expr) -> QueryFluentBuilder {
    let mut names = query.get_expression_attribute_names().clone().unwrap_or_default();
    let mut values = query.get_expression_attribute_values().clone().unwrap_or_default();
    names.extend(e.names.clone());
    values.extend(e.values.clone());
    query
        .filter_expression(filter)
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values(Some(values))
}

fn unavailable<E, R>(op: &str, err: &SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Unavailable(describe_sdk_error(op, err))
}

fn page_size(limit: usize) -> usize {
    // A page holds at least one item so that paging always moves on.
    limit.clamp(1, MAX_PAGE)
}

/// The first `limit` items, with the key of the last one when more follow (`items` holds up
/// to `limit + 1`).
fn into_page<T>(
    items: Vec<Item>,
    limit: usize,
    parse: impl Fn(&Item) -> StoreResult<T>,
    id: impl Fn(&T) -> String,
) -> StoreResult<Page<T>> {
    let more = items.len() > limit;
    let items = items.iter().take(limit).map(parse).collect::<StoreResult<Vec<T>>>()?;
    let last_key = if more { items.last().map(id) } else { None };
    Ok(Page { items, last_key })
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn key(pk: String, sk: String) -> Item {
    HashMap::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))])
}

/// The `gsi1` partition of a service's deployments.
fn deployments_of_service(org: &str, service: &str) -> String {
    format!("DEPSVC#{org}#{service}")
}

fn org_pk(org: &str) -> String {
    format!("ORG#{org}")
}

fn deployment_key(org: &str, id: &str) -> Item {
    key(org_pk(org), format!("DEPLOYMENT#{id}"))
}

fn service_key(org: &str, id: &str) -> Item {
    key(org_pk(org), format!("SERVICE#{id}"))
}

/// The count of an organization's services ([`TenantLimits::services`]).
fn services_counter(org: &str) -> Item {
    key(format!("COUNT#{org}"), "SERVICES".to_owned())
}

/// The count of services under one index value (a repository's or an image's, as
/// [`repository_index_value`] and [`image_index_value`] make them:
/// [`TenantLimits::services_per_key`]). Organization ids hold no `#`, so these never meet
/// [`services_counter`]'s.
fn key_counter(index_value: &str) -> Item {
    key(format!("COUNT#{index_value}"), "SERVICES".to_owned())
}

/// The index values `service` is counted under, each with the key it stands for (for messages).
fn service_keys(service: &Service) -> Vec<(String, String)> {
    let org = &service.organization_id;
    let repository = service
        .repository_key()
        .map(|repo| (repository_index_value(org, &repo), repo));
    let image = service
        .image_key()
        .map(|(_, path)| (image_index_value(org, &path), path));
    repository.into_iter().chain(image).collect()
}

/// The index values a stored service item is counted under: those it was written with.
fn counted_keys(item: &Item) -> StoreResult<Vec<String>> {
    [GSI1PK, GSI2PK]
        .into_iter()
        .filter_map(|attribute| optional_string_attr(item, attribute).transpose())
        .collect()
}

/// Webhook secrets live in a partition of their own, apart from what the internet-facing
/// functions write (`dynamodb:LeadingKeys` in the template tells them apart).
fn secret_pk(org: &str) -> String {
    format!("SECRET#{org}")
}

fn secret_key(org: &str, provider: &str) -> Item {
    key(secret_pk(org), format!("SECRET#{provider}"))
}

/// Tokens too (their `TOKENHASH#` lookups are items of their own).
fn token_pk(org: &str) -> String {
    format!("TOKEN#{org}")
}

fn token_key(org: &str, id: &str) -> Item {
    key(token_pk(org), format!("TOKEN#{id}"))
}

fn token_hash_key(hash: &str) -> Item {
    key(format!("TOKENHASH#{hash}"), "TOKENHASH".to_owned())
}

fn delivery_key(org: &str, provider: &str, delivery_id: &str) -> Item {
    let id = if delivery_id.len() > MAX_DELIVERY_ID {
        format!("sha256:{}", hex::encode(Sha256::digest(delivery_id.as_bytes())))
    } else {
        delivery_id.to_owned()
    };
    key(format!("DELIVERY#{org}#{provider}#{id}"), "DELIVERY".to_owned())
}

fn repository_index_value(org: &str, repository: &str) -> String {
    index_value("REPO", org, repository)
}

fn image_index_value(org: &str, path: &str) -> String {
    index_value("IMAGE", org, path)
}

/// `{kind}#{org}#{value}`, or `{kind}H#{org}#{sha256}` for a value too long for a key: the
/// same function writes and queries, so both sides agree.
fn index_value(kind: &str, org: &str, value: &str) -> String {
    if value.len() > MAX_INDEX_VALUE {
        format!("{kind}H#{org}#{}", hex::encode(Sha256::digest(value.as_bytes())))
    } else {
        format!("{kind}#{org}#{value}")
    }
}

fn token_attributes(token: &TokenRecord) -> Item {
    HashMap::from([
        (ORGANIZATION_ID.to_owned(), s(&token.organization_id)),
        (TOKEN_ID.to_owned(), s(&token.id)),
        (NAME.to_owned(), s(&token.name)),
        (
            SCOPES.to_owned(),
            AttributeValue::L(token.scopes.iter().map(s).collect()),
        ),
        (HASH.to_owned(), s(&token.hash)),
        (CREATED_AT.to_owned(), s(&token.created_at)),
    ])
}

fn item_label(item: &Item) -> String {
    let part = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).map_or("?", String::as_str);
    format!("{} / {}", part(PK), part(SK))
}

fn string_attr(item: &Item, name: &str) -> StoreResult<String> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value.clone()),
        _ => Err(StoreError::Corrupt(format!(
            "item {} has no string attribute `{name}`",
            item_label(item)
        ))),
    }
}

fn optional_string_attr(item: &Item, name: &str) -> StoreResult<Option<String>> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(_) => string_attr(item, name).map(Some),
    }
}

fn number_attr(item: &Item, name: &str) -> StoreResult<i64> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("item {} has a non-integer `{name}`", item_label(item)))),
        _ => Err(StoreError::Corrupt(format!(
            "item {} has no number attribute `{name}`",
            item_label(item)
        ))),
    }
}

fn service_from_item(item: &Item) -> StoreResult<StoredService> {
    let service = serde_json::from_str(&string_attr(item, DATA)?)
        .map_err(|e| StoreError::Corrupt(format!("item {}: {e}", item_label(item))))?;
    Ok(StoredService {
        service,
        etag: string_attr(item, ETAG)?,
        last_push: optional_string_attr(item, LAST_PUSH)?,
    })
}

fn deployment_from_item(item: &Item) -> StoreResult<DeploymentRecord> {
    let request: DeploymentRequest = serde_json::from_str(&string_attr(item, DATA)?)
        .map_err(|e| StoreError::Corrupt(format!("item {}: {e}", item_label(item))))?;
    let status = DeploymentStatus::parse(&string_attr(item, STATUS)?)
        .ok_or_else(|| StoreError::Corrupt(format!("item {} has an unknown status", item_label(item))))?;
    let updated_at = optional_string_attr(item, UPDATED_AT)?.unwrap_or_else(|| request.requested_at.clone());
    let result = optional_string_attr(item, RESULT)?
        .map(|r| serde_json::from_str(&r))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("item {}: {e}", item_label(item))))?;
    let attempts = match item.get(ATTEMPTS) {
        Some(_) => u32::try_from(number_attr(item, ATTEMPTS)?).unwrap_or(u32::MAX),
        None => 0,
    };
    Ok(DeploymentRecord {
        updated_at,
        attempts,
        last_error: optional_string_attr(item, LAST_ERROR)?,
        next_attempt_at: optional_string_attr(item, NEXT_ATTEMPT_AT)?,
        result,
        ..DeploymentRecord::new(request, status)
    })
}

/// What a result says, without when it was said: equal for a repeat of the same report.
fn result_key(result: &DeploymentResult) -> String {
    let said = serde_json::json!([result.status, result.message, result.url]);
    hex::encode(Sha256::digest(said.to_string().as_bytes()))
}

fn token_from_item(item: &Item) -> StoreResult<TokenRecord> {
    let scopes = match item.get(SCOPES) {
        Some(AttributeValue::L(values)) => values
            .iter()
            .map(|v| match v {
                AttributeValue::S(scope) => Ok(scope.clone()),
                _ => Err(StoreError::Corrupt(format!(
                    "item {} has a non-string scope",
                    item_label(item)
                ))),
            })
            .collect::<StoreResult<Vec<_>>>()?,
        _ => {
            return Err(StoreError::Corrupt(format!(
                "item {} has no list attribute `{SCOPES}`",
                item_label(item)
            )));
        }
    };
    Ok(TokenRecord {
        organization_id: string_attr(item, ORGANIZATION_ID)?,
        id: string_attr(item, TOKEN_ID)?,
        name: string_attr(item, NAME)?,
        scopes,
        hash: string_attr(item, HASH)?,
        created_at: string_attr(item, CREATED_AT)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_conditions_win_over_a_conflict_and_are_all_named() {
        let codes = [Some("TransactionConflict"), Some("ConditionalCheckFailed")];
        assert_eq!(classify_cancellation(&codes), Cancellation::ConditionsFailed(vec![1]));
        let codes = [
            Some("ConditionalCheckFailed"),
            Some("None"),
            None,
            Some("ConditionalCheckFailed"),
        ];
        assert_eq!(
            classify_cancellation(&codes),
            Cancellation::ConditionsFailed(vec![0, 3])
        );
    }

    #[test]
    fn conflicts_and_throttling_are_retried() {
        let retryable = |reason: &str| Cancellation::Retryable(reason.to_owned());
        let codes = [Some("None"), Some("TransactionConflict")];
        assert_eq!(classify_cancellation(&codes), retryable("TransactionConflict"));
        let codes = [None, Some("TransactionConflict")];
        assert_eq!(classify_cancellation(&codes), retryable("TransactionConflict"));
        let codes = [Some("ThrottlingError"), Some("None"), Some("TransactionConflict")];
        assert_eq!(
            classify_cancellation(&codes),
            retryable("ThrottlingError, TransactionConflict")
        );
    }

    #[test]
    fn other_reasons_are_named() {
        let codes = [Some("ValidationError"), Some("ThrottlingError")];
        assert_eq!(
            classify_cancellation(&codes),
            Cancellation::Other("ValidationError, ThrottlingError".to_owned())
        );
        assert_eq!(
            classify_cancellation(&[]),
            Cancellation::Other("no reason given".to_owned())
        );
    }

    #[test]
    fn long_index_values_are_hashed() {
        assert_eq!(
            index_value("REPO", "acme", "github.com/acme/shop"),
            "REPO#acme#github.com/acme/shop"
        );
        let long = "x".repeat(MAX_INDEX_VALUE + 1);
        let hashed = index_value("REPO", "acme", &long);
        assert!(hashed.starts_with("REPOH#acme#") && hashed.len() < 100);
    }

    #[test]
    fn pages_know_whether_more_follow() {
        let item = |id: &str| HashMap::from([(SK.to_owned(), s(id))]);
        let parse = |i: &Item| string_attr(i, SK);
        let page = into_page(vec![item("a"), item("b"), item("c")], 2, parse, |s: &String| s.clone());
        assert!(matches!(page, Ok(Page { ref items, last_key: Some(ref k) }) if items.len() == 2 && k == "b"));
        let page = into_page(vec![item("a"), item("b")], 2, parse, |s: &String| s.clone());
        assert!(matches!(page, Ok(Page { ref items, last_key: None }) if items.len() == 2));
    }
}
