//! The storage and queue ports. Each has a SQLite implementation (the standalone server) and a
//! DynamoDB / SQS one (the Lambda functions); one contract test suite runs against both.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use autodeploy_core::delivery::{DeliveryOutcome, DeliveryRecord, DeliverySource, HistoryDraft};
use autodeploy_core::deployment::{DeploymentRecord, DeploymentRequest, DeploymentResult, DeploymentStatus};
use autodeploy_core::model::Service;
use autodeploy_core::target::{TargetSpec, TargetType};

pub type StoreResult<T> = Result<T, StoreError>;

/// A change the store may refuse: the outer error is the store failing, the inner a
/// [`Refusal`] of the change itself.
pub type Refusable<T> = StoreResult<Result<T, Refusal>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer, or answered with an error: the caller gets a 503 and may
    /// retry; nothing was written.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A conditional write found another state than the one it expected.
    #[error("the stored state changed")]
    PreconditionFailed,
    /// A stored record could not be read back (written by a newer or broken version).
    #[error("a stored record is unreadable: {0}")]
    Corrupt(String),
    /// The write would take an organization past one of its [`TenantLimits`]; the sentence
    /// says which.
    #[error("{0}")]
    LimitReached(String),
    /// A service write names a deploy target that does not exist (deleted meanwhile).
    #[error("the service names a deploy target that does not exist")]
    TargetMissing,
    /// A service write names a deploy target of a type the service does not fit (a `QOVERY`
    /// target, and no `external_id`): the target's type is checked in the service's write.
    #[error("the service lacks what its deploy target's type ({}) needs", .0.as_str())]
    TargetUnfit(TargetType),
    /// The request's delivery was remembered by another request since it was looked up (two
    /// copies of one delivery at once): nothing of it was written, and it is answered as the
    /// duplicate it is.
    #[error("the delivery was processed meanwhile")]
    DeliveryProcessed,
    /// The database is not one this build can use (another program's, or a newer
    /// autodeploy's); found when it is opened.
    #[error("{0}")]
    Incompatible(String),
}

/// The `last_error` of a deployment cancelled because its service was deleted.
pub const CANCELLED_SERVICE_DELETED: &str = "cancelled: its service was deleted before it was delivered";

/// What one organization may hold (SPEC "Bounded tenants").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantLimits {
    /// Services of one organization (`AUTODEPLOY_MAX_SERVICES`).
    pub services: u32,
    /// Services of one organization following one repository, or running one image.
    pub services_per_key: u32,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            services: 10_000,
            services_per_key: 1_000,
        }
    }
}

impl TenantLimits {
    /// The refusal past the organization's limit: a lower-case phrase, as every detail of a
    /// 400 is (it names the field `service`).
    pub fn too_many_services(&self) -> StoreError {
        StoreError::LimitReached(format!(
            "the organization holds {} services, its limit (AUTODEPLOY_MAX_SERVICES); delete one first",
            self.services
        ))
    }

    pub fn too_many_on_key(&self, key: &str) -> StoreError {
        StoreError::LimitReached(format!(
            "{} services of the organization already use {key}, the limit for one repository or image",
            self.services_per_key
        ))
    }
}

/// A service as stored, with its entity tag and the push that last queued for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredService {
    pub service: Service,
    /// Opaque, fresh for every write: never reused for another state of the same id.
    pub etag: String,
    /// `before..after` of the last push that queued a deployment for this service.
    pub last_push: Option<String>,
}

/// What a write expects to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Nothing under that id (create).
    Absent,
    /// Exactly this entity tag (replace).
    Etag(String),
}

impl StoredService {
    /// `service` as a write stores it, with its new `etag`.
    pub fn new(service: Service, etag: String) -> Self {
        Self {
            service,
            etag,
            last_push: None,
        }
    }

    /// The commit the service was last queued for: the `after` of its last queued push.
    pub fn current_commit(&self) -> Option<&str> {
        self.last_push
            .as_deref()
            .and_then(|mark| mark.split_once(".."))
            .map(|(_, after)| after)
    }
}

/// Which page of a list to read: the items after the one whose key is `after` (from the first
/// when `None`), `limit` at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest<'a> {
    pub after: Option<&'a str>,
    pub limit: usize,
}

impl<'a> PageRequest<'a> {
    pub fn new(after: Option<&'a str>, limit: usize) -> Self {
        Self { after, limit }
    }

    pub fn first(limit: usize) -> Self {
        Self::new(None, limit)
    }
}

/// A page of the items `filter` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery<'a, F> {
    pub filter: F,
    pub page: PageRequest<'a>,
}

/// One page of a list, with the key of its last item when more may follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub last_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub secret: String,
    pub set_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub organization_id: String,
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// Hex SHA-256 of the token: the token itself is never stored.
    pub hash: String,
    pub created_at: String,
}

/// The condition under which a deployment may be recorded for a service, checked and
/// updated in the same atomic write as the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// A push `before..after` (its `mark`). SPEC "A replay cannot roll a service back": a mark
    /// the service queued within [`PUSH_MARK_RETENTION_SECS`] records again only when
    /// `before` is the service's current commit (a re-apply after a rollback) and it is not
    /// the service's last push (one with `before` = `after` moves nothing); any other mark
    /// records. The write remembers the mark and makes `after` the current commit, so
    /// identical concurrent deliveries, and replays under any delivery id, record once.
    Push { mark: String, before: String },
    /// An image tag: the service must still have entity tag `expected`; the write replaces
    /// it by `updated` (the new current tag, a new etag).
    ServiceUnchanged {
        expected: String,
        updated: Box<StoredService>,
    },
    /// Deployment `again` made again (a redeploy): the service must still be as it was read,
    /// entity tag `etag` and last push `last_push`, so that no push, new tag or settings write
    /// came between the check that `again` was the service's newest and this write; and
    /// `again` must not have been made again meanwhile (two requests at once make it once).
    /// The service's document does not change.
    StillAsRead {
        etag: String,
        last_push: Option<String>,
        again: String,
    },
}

/// How long a service remembers the pushes it queued (SPEC: 30 days).
pub const PUSH_MARK_RETENTION_SECS: i64 = 30 * 24 * 60 * 60;

/// One deployment to record, with the guard that must hold for it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub request: DeploymentRequest,
    pub guard: Guard,
}

/// Which deployments a list shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentFilter {
    pub service_id: Option<String>,
    pub status: Option<DeploymentStatus>,
}

pub type DeploymentQuery<'a> = ListQuery<'a, DeploymentFilter>;

/// A processed delivery to remember with a request's records, so that it is processed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryKey {
    /// A provider's slug, or a source's name for content-addressed keys.
    pub source: String,
    pub id: String,
    pub expires_unix: i64,
}

/// What one request records: its deployments, each under its guard, and the delivery they came
/// from, to remember (`delivery`) and to add to the history (`history`). The batch owns what
/// it records, so that a store writing on another thread takes it without copying; the caller
/// keeps the candidates through their `Arc` to read back what was recorded.
#[derive(Debug, Clone)]
pub struct Batch<'a> {
    pub org: &'a str,
    pub candidates: Arc<[Candidate]>,
    pub delivery: Option<DeliveryKey>,
    pub history: Option<HistoryDraft>,
}

impl<'a> Batch<'a> {
    pub fn new(
        org: &'a str,
        candidates: Arc<[Candidate]>,
        delivery: Option<DeliveryKey>,
        history: Option<HistoryDraft>,
    ) -> Self {
        Self {
            org,
            candidates,
            delivery,
            history,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Recorded, with the status it was recorded in (`QUEUED` where the store is the queue).
    Recorded(DeploymentStatus),
    /// The guard did not hold: nothing was written.
    GuardFailed,
}

#[async_trait]
pub trait ServiceStore: Send + Sync {
    /// Create or replace `stored.service` with `stored.etag` if the stored state is `expected`,
    /// within `limits`; keeps the stored `last_push` (`stored.last_push` is not written).
    /// The deploy target it names must exist ([`StoreError::TargetMissing`]) and be of a type
    /// it fits ([`StoreError::TargetUnfit`]), both checked in the write: a target's change of
    /// type and a service's write naming it cannot both succeed unfit.
    async fn put_service(&self, stored: &StoredService, expected: Expected, limits: TenantLimits) -> StoreResult<()>;
    async fn get_service(&self, org: &str, id: &str) -> StoreResult<Option<StoredService>>;
    /// Services of `org` in id order.
    async fn list_services(&self, org: &str, page: PageRequest<'_>) -> StoreResult<Page<StoredService>>;
    /// Delete when the stored etag is `expected` (any state when `None`); `false` when absent.
    /// On the standalone server, the service's deployments still waiting are `FAILED` in the
    /// same write (cancelled: never offered to a consumer nor sent to a target).
    async fn delete_service(&self, org: &str, id: &str, expected: Option<&str>) -> StoreResult<bool>;
    /// Every service of `org` whose repository normalizes to `repository` (disabled ones too,
    /// so a response can say why they were skipped). Their `last_push` is the stored one
    /// unless [`ServiceStore::services_kept_in_memory`].
    async fn services_by_repository(&self, org: &str, repository: &str) -> StoreResult<Arc<[StoredService]>>;
    /// Whether [`ServiceStore::services_by_repository`] answers from services kept in memory
    /// between changes of their settings, whose `last_push` may then be older than the
    /// stored one (read the service for it).
    fn services_kept_in_memory(&self) -> bool {
        false
    }
    /// Every service of `org` whose normalized image path is `path`, on any registry.
    async fn services_by_image_path(&self, org: &str, path: &str) -> StoreResult<Vec<StoredService>>;
    /// Whether service `id` of `org` queued the push `mark` (`before..after`) within
    /// [`PUSH_MARK_RETENTION_SECS`]: what a dry run reads to tell a replay, which a real
    /// delivery's guard checks in its write.
    async fn push_queued_before(&self, org: &str, id: &str, mark: &str) -> StoreResult<bool>;
}

#[async_trait]
pub trait SecretStore: Send + Sync {
    async fn put_secret(&self, org: &str, provider: &str, record: &SecretRecord) -> StoreResult<()>;
    async fn get_secret(&self, org: &str, provider: &str) -> StoreResult<Option<SecretRecord>>;
    async fn delete_secret(&self, org: &str, provider: &str) -> StoreResult<bool>;
}

#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn create_token(&self, token: &TokenRecord) -> StoreResult<()>;
    async fn list_tokens(&self, org: &str, page: PageRequest<'_>) -> StoreResult<Page<TokenRecord>>;
    async fn delete_token(&self, org: &str, id: &str) -> StoreResult<bool>;
    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>>;
}

#[async_trait]
pub trait DeploymentLog: Send + Sync {
    /// Record each candidate (the outbox entry) whose guard holds, atomically with its guard's
    /// write, and remember the batch's `delivery` when every candidate was written or skipped.
    /// One result per candidate, in order: a failure of one (nothing written for it) does not
    /// fail the others. The batch's `history`, completed with what was recorded, goes in the
    /// deliveries history (in the same transaction where the store allows it) when every
    /// candidate was written or skipped: after a failure the delivery is answered with an
    /// error, recorded as such.
    async fn record_deployments(&self, batch: Batch<'_>) -> StoreResult<Vec<StoreResult<RecordOutcome>>>;

    /// [`DeploymentLog::record_deployments`] for one deployment.
    async fn record_deployment(&self, request: &DeploymentRequest, guard: &Guard) -> StoreResult<RecordOutcome> {
        let candidate = Candidate {
            request: request.clone(),
            guard: guard.clone(),
        };
        let mut results = self
            .record_deployments(Batch::new(&request.organization_id, Arc::new([candidate]), None, None))
            .await?;
        results
            .pop()
            .unwrap_or_else(|| Err(StoreError::Unavailable("the store returned no outcome".to_owned())))
    }
    async fn get_deployment(&self, org: &str, id: &str) -> StoreResult<Option<DeploymentRecord>>;
    /// Newest first, filtered; a page starts after a deployment id.
    async fn list_deployments(&self, org: &str, query: &DeploymentQuery<'_>) -> StoreResult<Page<DeploymentRecord>>;
    /// Deployments recorded but not yet on the queue, oldest first, across organizations.
    async fn pending_deployments(&self, limit: usize) -> StoreResult<Vec<DeploymentRecord>>;
    /// The deployment ids of `requests` whose service has a deployment still `PENDING` with an
    /// id below `before` (which is below every request's id: recorded before them). Sent now,
    /// such a request would reach the queue ahead of that older one, which the relay sends
    /// later; it stays `PENDING` and the relay sends both, in order. A store that cannot tell
    /// for sure names them all.
    async fn held_behind_pending(&self, requests: &[DeploymentRequest], before: &str) -> StoreResult<HashSet<String>>;
    async fn mark_queued(&self, org: &str, deployment_ids: &[String]) -> StoreResult<()>;
    /// Record an engine's report on a `QUEUED`, `IN_PROGRESS` or `DELIVERED` deployment, which
    /// becomes (or stays) `DELIVERED`. The same report again changes nothing and is accepted;
    /// another report, or any other status, is refused.
    async fn report_result(&self, org: &str, id: &str, result: &DeploymentResult) -> Refusable<DeploymentRecord>;
}

/// Why a change to a deployment was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such deployment in the organization.
    NotFound,
    /// The deployment is not in a state that allows it; the sentence says why.
    Conflict(String),
}

/// How many of the services still naming a target a refused `DELETE` names; a store reads one
/// more, to say whether there are others.
pub const TARGET_USERS_NAMED: usize = 5;

impl Refusal {
    /// A target's `DELETE` refused: `users` are the first services (in id order) that name it,
    /// up to one more than [`TARGET_USERS_NAMED`].
    pub fn target_in_use(users: &[String]) -> Refusal {
        let named = &users[..users.len().min(TARGET_USERS_NAMED)];
        let others = if users.len() > TARGET_USERS_NAMED {
            ", and others"
        } else {
            ""
        };
        Refusal::Conflict(format!(
            "Services still deploy to this target ({}{others}): point their deploy_target elsewhere first.",
            named.join(", ")
        ))
    }

    /// A target's `PUT` refused: its new type `kind` needs an `external_id` of the services
    /// naming it, and `unfit` (in id order) give none. The first [`TARGET_USERS_NAMED`] are
    /// named, the others counted.
    pub fn target_type_unfit(kind: TargetType, unfit: &[String]) -> Refusal {
        let named = &unfit[..unfit.len().min(TARGET_USERS_NAMED)];
        let others = match unfit.len() - named.len() {
            0 => String::new(),
            1 => ", and 1 other".to_owned(),
            n => format!(", and {n} others"),
        };
        Refusal::Conflict(format!(
            "A {} target needs each service naming it to give deploy_target.external_id, the id of the service there (letters, digits, `-`, `_` and `.`), and services naming this one do not ({}{others}): give them their external_id, or point their deploy_target elsewhere, first. The target was not changed.",
            kind.as_str(),
            named.join(", ")
        ))
    }
}

/// What a pull consumer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRequest {
    pub max: usize,
    pub lease_secs: i64,
}

/// A deployment handed to a consumer until `lease_expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    pub record: DeploymentRecord,
    pub lease_id: String,
    pub lease_expires_at: String,
    /// 1 for the first offer, then one more each time it is offered again.
    pub attempt: u32,
}

/// Whether a consumer has anything to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outlook {
    /// Work can be leased now.
    pub available: bool,
    /// When work will become available without any new write (a lease expiring, a retry
    /// falling due), in unix seconds.
    pub next_due_unix: Option<i64>,
}

/// The pull interface of the standalone server (SPEC "Consuming deployments (pull)"): the
/// deployments of services without a deploy target, leased, acknowledged, released. Latest
/// wins: taking a service's work takes its newest waiting deployment and supersedes the older
/// ones in the same write; a service has at most one deployment `IN_PROGRESS`.
#[async_trait]
pub trait PullQueue: Send + Sync {
    async fn lease(&self, org: &str, request: LeaseRequest) -> StoreResult<Vec<Leased>>;
    /// Whether [`PullQueue::lease`] would find work now, and when it will otherwise.
    async fn outlook(&self, org: &str) -> StoreResult<Outlook>;
    async fn ack(&self, org: &str, id: &str, lease_id: &str) -> Refusable<()>;
    /// Release the lease; the deployment is offered again after `retry_after_secs`.
    async fn nack(&self, org: &str, id: &str, lease_id: &str, retry_after_secs: i64) -> Refusable<()>;
    /// Push the lease's expiry to `lease_secs` from now; the new expiry.
    async fn extend(&self, org: &str, id: &str, lease_id: &str, lease_secs: i64) -> Refusable<String>;
    /// Woken whenever work may have become available to `org`'s consumers.
    fn notifier(&self, org: &str) -> std::sync::Arc<tokio::sync::Notify>;
}

#[async_trait]
pub trait DeliveryLog: Send + Sync {
    /// Whether this delivery id was processed within its retention.
    async fn delivery_seen(&self, org: &str, source: &str, delivery_id: &str, now_unix: i64) -> StoreResult<bool>;
    /// Remember a processed delivery until `delivery.expires_unix`.
    async fn remember_delivery(&self, org: &str, delivery: &DeliveryKey) -> StoreResult<()>;
    /// Whether [`DeploymentLog::record_deployments`] remembers a batch's delivery in its own
    /// write, refusing one processed before ([`StoreError::DeliveryProcessed`]): a delivery to
    /// be recorded then needs no look-up of its id first.
    fn remembers_deliveries_in_record(&self) -> bool {
        false
    }
}

/// Which deliveries a list shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub source: Option<DeliverySource>,
    pub outcome: Option<DeliveryOutcome>,
}

pub type DeliveryQuery<'a> = ListQuery<'a, DeliveryFilter>;

/// The stored bytes of deliveries a page holds at most (at least one delivery, whatever its
/// size). A delivery that reached many services lists each of them, up to a few hundred KB;
/// a hundred of those would be more than a Lambda may answer (6 MB) and more than the server
/// should hold per request.
pub const DELIVERIES_PAGE_BYTES: usize = 1024 * 1024;

/// Fills a page in list order, item by item, up to `limit` items and `bytes` of stored size
/// (at least one item). The first item it refuses is the proof that more follow.
#[derive(Debug, Clone, Copy)]
pub struct PageFill {
    limit: usize,
    bytes: usize,
    taken: usize,
    taken_bytes: usize,
    full: bool,
}

impl PageFill {
    pub fn new(limit: usize, bytes: usize) -> Self {
        Self {
            limit,
            bytes,
            taken: 0,
            taken_bytes: 0,
            full: false,
        }
    }

    /// Whether the next item, of `size` stored bytes, belongs to the page; once one does not,
    /// none after it does.
    pub fn take(&mut self, size: usize) -> bool {
        let fits = self.taken == 0 || self.taken_bytes.saturating_add(size) <= self.bytes;
        if self.full || self.taken >= self.limit || !fits {
            self.full = true;
            return false;
        }
        self.taken += 1;
        self.taken_bytes += size;
        true
    }

    /// Whether an item was refused: the page is cut and more follow.
    pub fn full(&self) -> bool {
        self.full
    }

    /// The page of the `items` taken, with the key of the last when more follow.
    pub fn page<T>(&self, items: Vec<T>, key: impl Fn(&T) -> String) -> Page<T> {
        let last_key = if self.full { items.last().map(key) } else { None };
        Page { items, last_key }
    }
}

/// The deliveries history (SPEC "Deliveries — why didn't it deploy?").
#[async_trait]
pub trait DeliveryHistory: Send + Sync {
    /// Add a delivery to its organization's history. A `REJECTED` one is recorded only while
    /// the organization has received fewer than
    /// [`REJECTED_PER_MINUTE`](autodeploy_core::delivery::REJECTED_PER_MINUTE) rejected ones
    /// in the same minute: `false` when it was left out for that.
    async fn record_delivery(&self, record: &DeliveryRecord) -> StoreResult<bool>;
    async fn get_delivery(&self, org: &str, id: &str) -> StoreResult<Option<DeliveryRecord>>;
    /// Newest first, filtered; a page starts after a delivery id.
    async fn list_deliveries(&self, org: &str, query: &DeliveryQuery<'_>) -> StoreResult<Page<DeliveryRecord>>;
}

/// The refusal budgets (an organization's, or the one
/// [`UNCONFIGURED_BUDGET`](autodeploy_core::delivery::UNCONFIGURED_BUDGET)) a store instance
/// knows spent, and in which minute: once spent, the minute's later refusals are left out of
/// the history without a write. Forgotten as the minutes pass, and bounded. Per process (per
/// Lambda instance on AWS): another instance learns it from its own first refused write.
#[derive(Debug, Default)]
pub struct SpentBudgets(std::sync::Mutex<std::collections::HashMap<String, i64>>);

/// Budgets remembered as spent at most (a flood under many names forgets the oldest minute's
/// first, and costs one write per name again at worst).
const SPENT_BUDGETS_KEPT: usize = 4_096;

impl SpentBudgets {
    /// The minute a refusal received at `received_at` (RFC 3339) counts in.
    pub fn minute_of(received_at: &str) -> i64 {
        crate::util::rfc3339_unix(received_at)
            .unwrap_or_else(crate::util::now_unix)
            .div_euclid(60)
    }

    fn budgets(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, i64>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn is_spent(&self, budget: &str, minute: i64) -> bool {
        self.budgets().get(budget) == Some(&minute)
    }

    pub fn mark(&self, budget: &str, minute: i64) {
        let mut budgets = self.budgets();
        if budgets.len() >= SPENT_BUDGETS_KEPT {
            budgets.retain(|_, spent| *spent >= minute);
            if budgets.len() >= SPENT_BUDGETS_KEPT {
                budgets.clear();
            }
        }
        budgets.insert(budget.to_owned(), minute);
    }
}

/// A deploy target as stored: its spec (secrets included: sealed or encrypted at rest by the
/// store), and what the server keeps about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTarget {
    pub id: String,
    pub organization_id: String,
    pub spec: TargetSpec,
    pub etag: String,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
}

#[async_trait]
pub trait TargetStore: Send + Sync {
    /// Create or replace the target if the stored state is `expected`; refused (a conflict,
    /// [`Refusal::target_type_unfit`]) while a service naming it lacks what its type needs of
    /// the services naming it (a `QOVERY` target, their `external_id`), checked in the write.
    async fn put_target(&self, target: &StoredTarget, expected: Expected) -> Refusable<()>;
    async fn get_target(&self, org: &str, id: &str) -> StoreResult<Option<StoredTarget>>;
    /// Targets of `org` in id order.
    async fn list_targets(&self, org: &str, page: PageRequest<'_>) -> StoreResult<Page<StoredTarget>>;
    /// How many targets `org` holds, counted up to `up_to` (a bound's check needs no more).
    async fn count_targets(&self, org: &str, up_to: u32) -> StoreResult<u32>;
    /// Delete when the stored etag is `expected` (any state when `None`; otherwise
    /// [`StoreError::PreconditionFailed`], an absent target too); `Ok(false)` when absent;
    /// refused (a conflict) while a service names the target.
    async fn delete_target(&self, org: &str, id: &str, expected: Option<&str>) -> Refusable<bool>;
}

/// How an attempt to deliver a deployment to its target started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptStart {
    /// `IN_PROGRESS` now, this attempt counted; the older waiting deployments of its service
    /// are `SUPERSEDED`.
    Started(Box<DeploymentRecord>),
    /// A newer deployment of the service waits: this one is `SUPERSEDED` and not delivered.
    Superseded,
    /// The deployment is not waiting (taken already, or final): nothing to do.
    NotWaiting(DeploymentStatus),
    /// `QUEUED` for a retry not due before `next_attempt_unix`: nothing done.
    NotDue {
        next_attempt_unix: i64,
    },
    NotFound,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptEnd {
    /// The target accepted it: `DELIVERED`.
    Delivered,
    /// Refused for good, or out of attempts: `FAILED`.
    Failed { error: String },
    /// `QUEUED` again, for a retry at `next_attempt_unix`.
    Retry { error: String, next_attempt_unix: i64 },
    /// The service has no target any more: `QUEUED` for pull consumers.
    Release { note: String },
}

/// The deployments' side of delivering to targets: transitions that only go forward, on
/// both stores (the standalone dispatcher and the `dispatcher` Lambda function).
#[async_trait]
pub trait Dispatching: Send + Sync {
    /// Begin an attempt on a waiting deployment (latest wins); concurrent begins start it once.
    /// An `IN_PROGRESS` one answers `NotWaiting`, except on DynamoDB once its attempt is older
    /// than the `dispatcher` function's timeout: SQS hands a message over again only when the
    /// attempt that took it never finished, after its visibility timeout, and holds the
    /// service's later messages meanwhile.
    async fn begin_attempt(&self, org: &str, id: &str) -> StoreResult<AttemptStart>;
    /// Record the end of the attempt begun on `id` (which must be `IN_PROGRESS`): the
    /// deployment as recorded, which may differ from `end` (a retry of a service that has
    /// moved to pull consumers waits for nothing; one whose service was deleted is cancelled),
    /// or `None` when it was no longer in progress (an engine reported on it meanwhile).
    async fn end_attempt(&self, org: &str, id: &str, end: &AttemptEnd) -> StoreResult<Option<DeploymentRecord>>;
}

/// Everything the HTTP layer needs from a store.
#[async_trait]
pub trait Store:
    ServiceStore + SecretStore + TokenStore + DeploymentLog + DeliveryLog + DeliveryHistory + TargetStore + Dispatching
{
    /// Cheap round trip for `/health`.
    async fn ping(&self) -> StoreResult<()>;
}

#[derive(Debug, thiserror::Error)]
#[error("the queue did not accept the message: {0}")]
pub struct QueueError(pub String);

#[async_trait]
pub trait DeploymentQueue: Send + Sync {
    /// Send each request; one result per request, in order. Sending the same deployment id
    /// twice is harmless: consumers and FIFO deduplication drop repeats.
    async fn send(&self, requests: &[DeploymentRequest]) -> Vec<Result<(), QueueError>>;

    /// Whether this queue sends at all; one that does not leaves what is recorded `PENDING`
    /// for the relay, without trying.
    fn sends(&self) -> bool {
        true
    }
}

/// For a function that sends no deployments (`settings`: a redeploy is the one deployment its
/// routes record), so that it needs no queue nor SQS client: what it records stays `PENDING`,
/// and the relay sends it within a minute. Nothing is lost.
pub struct NoQueue;

#[async_trait]
impl DeploymentQueue for NoQueue {
    async fn send(&self, requests: &[DeploymentRequest]) -> Vec<Result<(), QueueError>> {
        refuse_all(requests, "this function sends no deployments")
    }

    fn sends(&self) -> bool {
        false
    }
}

/// For a store that is its own queue (SQLite): every deployment is recorded `QUEUED`, so
/// nothing is ever sent.
pub struct InStoreQueue;

#[async_trait]
impl DeploymentQueue for InStoreQueue {
    async fn send(&self, requests: &[DeploymentRequest]) -> Vec<Result<(), QueueError>> {
        refuse_all(requests, "this store keeps its queue itself")
    }
}

/// One failure per request, for a queue that sends nothing.
fn refuse_all(requests: &[DeploymentRequest], reason: &str) -> Vec<Result<(), QueueError>> {
    requests.iter().map(|_| Err(QueueError(reason.to_owned()))).collect()
}

#[cfg(test)]
mod tests {
    use super::PageFill;

    /// The items a fill takes from `sizes`, and whether it refused one.
    fn fill(limit: usize, bytes: usize, sizes: &[usize]) -> (usize, bool) {
        let mut fill = PageFill::new(limit, bytes);
        let taken = sizes.iter().take_while(|size| fill.take(**size)).count();
        (taken, fill.full())
    }

    #[test]
    fn a_page_is_cut_at_its_limit_or_before_its_bytes() {
        assert_eq!(fill(3, 100, &[10, 10, 10]), (3, false), "exactly full, nothing refused");
        assert_eq!(
            fill(3, 100, &[10, 10, 10, 10]),
            (3, true),
            "the fourth proves more follow"
        );
        assert_eq!(fill(10, 100, &[40, 60, 1]), (2, true), "100 bytes fit, 101 do not");
        assert_eq!(fill(10, 100, &[40, 61]), (1, true));
        assert_eq!(fill(10, 100, &[]), (0, false));
    }

    #[test]
    fn a_page_holds_one_item_whatever_its_size() {
        assert_eq!(fill(10, 100, &[500]), (1, false));
        assert_eq!(fill(10, 100, &[500, 1]), (1, true));
        assert_eq!(fill(10, 100, &[usize::MAX, usize::MAX]), (1, true), "no overflow");
    }

    #[test]
    fn once_refused_nothing_more_is_taken() {
        let mut fill = PageFill::new(10, 100);
        assert!(fill.take(90));
        assert!(!fill.take(20));
        assert!(
            !fill.take(1),
            "a smaller item after the cut would break the list's order"
        );
        assert!(fill.full());
    }
}
