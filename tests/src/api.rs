//! The HTTP API in-process, as every API test drives it: the real router on a real store
//! (SQLite on a temporary file, or DynamoDB and SQS on moto through the real AWS SDK), the
//! replies checked for SPEC's error shape; and the one way to run a case on both stores,
//! [`on_both_stores!`](crate::on_both_stores).

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use autodeploy_api::admin::StaticAdminToken;
use autodeploy_api::sqlite::SqliteStore;
use autodeploy_api::store::{DeploymentQueue, InStoreQueue, Store};
use autodeploy_api::web::{AppState, full_router};
use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::webhooks::{WEBHOOK_SECRET, provider_headers};
use crate::{AwsFixture, ReceivedMessage, SqliteFixture, aws_fixture, receive_all, sqlite_fixture};

/// Runs each case on both stores: SQLite, and DynamoDB and SQS on moto through the real AWS
/// SDK. A case is an `async fn` taking what it runs on, made fresh for each store (an
/// [`OnStore`]): an [`Api`] for the HTTP API's cases, a [`TestStore`] for the store
/// contract's. Generates `mod <case> { sqlite, dynamo }`. `worker_threads = N;` first sets
/// the runtime's worker threads (2 by default).
#[macro_export]
macro_rules! on_both_stores {
    (worker_threads = $threads:tt; $($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
            async fn sqlite() {
                $crate::api::on_sqlite(super::$case).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
            async fn dynamo() {
                $crate::api::on_dynamo(super::$case).await
            }
        }
    )*};
    ($($case:ident),* $(,)?) => {
        $crate::on_both_stores!(worker_threads = 2; $($case),*);
    };
}

/// What a case runs on, made fresh on each store.
pub trait OnStore: Sized {
    /// On SQLite, whose queue is a table.
    fn sqlite() -> impl Future<Output = Self>;
    /// On DynamoDB and SQS, on moto.
    fn dynamo() -> impl Future<Output = Self>;
}

/// Run `case` on a fresh SQLite store.
pub async fn on_sqlite<T: OnStore, F: Future<Output = ()>>(case: impl FnOnce(T) -> F) {
    case(T::sqlite().await).await
}

/// Run `case` on a fresh DynamoDB table and SQS queue on moto.
pub async fn on_dynamo<T: OnStore, F: Future<Output = ()>>(case: impl FnOnce(T) -> F) {
    case(T::dynamo().await).await
}

/// A store alone, for the store contract: it dereferences to the store.
pub enum TestStore {
    Sqlite(SqliteFixture),
    Dynamo(Box<AwsFixture>),
}

impl Deref for TestStore {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        match self {
            TestStore::Sqlite(fixture) => &fixture.store,
            TestStore::Dynamo(fixture) => &fixture.store,
        }
    }
}

impl OnStore for TestStore {
    async fn sqlite() -> Self {
        TestStore::Sqlite(sqlite_fixture())
    }

    async fn dynamo() -> Self {
        TestStore::Dynamo(Box::new(aws_fixture().await))
    }
}

impl OnStore for Api {
    async fn sqlite() -> Self {
        Api::new()
    }

    async fn dynamo() -> Self {
        Api::on_moto().await
    }
}

pub const ADMIN: &str = "admin-token-for-tests-0123456789";

pub struct Api {
    pub router: Router,
    pub store: Arc<dyn Store>,
    /// The SQLite store, when the API runs on one (its queue is a table).
    pub sqlite: Option<SqliteStore>,
    /// The SQS queue, when the API runs on moto.
    sqs: Option<SqsQueueReader>,
    /// What the router serves from, for [`Api::reconfigured`].
    state: AppState,
    _dir: Option<tempfile::TempDir>,
}

/// Reads an SQS queue for [`Api::queued_messages`], keeping what it took off (receiving
/// deletes).
struct SqsQueueReader {
    client: aws_sdk_sqs::Client,
    url: String,
    taken: std::sync::Mutex<Vec<Value>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl Reply {
    pub fn etag(&self) -> String {
        self.headers
            .get("etag")
            .expect("an ETag header")
            .to_str()
            .unwrap()
            .to_owned()
    }

    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts an error answer: `status`, and `code` in SPEC's error shape.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!((self.status, self.error_code()), (status, code), "{}", self.body);
    }

    pub fn error_fields(&self) -> Vec<String> {
        let mut fields: Vec<String> = self.body["error"]["details"]
            .as_array()
            .map(|d| d.iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        fields.sort();
        fields
    }
}

impl Default for Api {
    fn default() -> Self {
        Self::new()
    }
}

impl Api {
    /// The API on a fresh SQLite database file, as the standalone server serves it (with its
    /// pull interface).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("api.db")).unwrap();
        let state = AppState::new(
            Arc::new(store.clone()),
            Arc::new(InStoreQueue),
            Arc::new(StaticAdminToken::new(ADMIN)),
        )
        .with_pull(Arc::new(store.clone()));
        let mut api = Self::on_state(Arc::new(store.clone()), state);
        api.sqlite = Some(store);
        api._dir = Some(dir);
        api
    }

    /// The database file of the SQLite store `Api::new()` created, for a second connection.
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        self._dir.as_ref().map(|dir| dir.path().join("api.db"))
    }

    /// The router on a fresh DynamoDB table and SQS queue on moto.
    pub async fn on_moto() -> Self {
        let aws = aws_fixture().await;
        // The HTTP API's cases are about answers, not the queue's time budget (aws_push tests
        // that): generous budgets keep a slow moto on a loaded machine from turning QUEUED into
        // PENDING.
        let queue = aws
            .queue
            .with_send_budget(std::time::Duration::from_secs(60))
            .with_batch_timeout(std::time::Duration::from_secs(60));
        let mut api = Self::on(Arc::new(aws.store), Arc::new(queue));
        api.sqs = Some(SqsQueueReader {
            client: aws.sqs,
            url: aws.queues.deployments.url,
            taken: std::sync::Mutex::new(Vec::new()),
        });
        api
    }

    /// The API on any store and queue.
    pub fn on(store: Arc<dyn Store>, queue: Arc<dyn DeploymentQueue>) -> Self {
        Self::on_state(
            Arc::clone(&store),
            AppState::new(store, queue, Arc::new(StaticAdminToken::new(ADMIN))),
        )
    }

    /// The same API (store, queue, harness) with its state changed by `change`: other tenant
    /// limits, or the pull interface of the standalone server
    /// (`api.reconfigured(|s| s.with_pull(...))`).
    pub fn reconfigured(mut self, change: impl FnOnce(AppState) -> AppState) -> Self {
        self.state = change(self.state);
        self.router = full_router(self.state.clone());
        self
    }

    /// On SQLite, the same API serving pull consumers (lease, ack, nack, extend) from its store,
    /// as the standalone server does; on moto unchanged (AWS has no pull interface).
    pub fn serving_pull(self) -> Self {
        match self.sqlite.clone() {
            Some(store) => self.reconfigured(|state| state.with_pull(Arc::new(store))),
            None => self,
        }
    }

    /// The router on `state`, whose store is `store`.
    pub fn on_state(store: Arc<dyn Store>, state: AppState) -> Self {
        Self {
            router: full_router(state.clone()),
            state,
            store,
            sqlite: None,
            sqs: None,
            _dir: None,
        }
    }

    /// Every deployment request queued since the API was created, as sent (SPEC's message),
    /// in the order the queue hands them out: the queue table on SQLite, the SQS queue on moto
    /// (where each message's deduplication id and group are checked too, as
    /// [`message_ids`] does). Not for an API made with `on`.
    pub async fn queued_messages(&self) -> Vec<Value> {
        if let Some(store) = &self.sqlite {
            let queued = store.queued_messages(0, 10_000).await.unwrap();
            return queued
                .into_iter()
                .map(|(_, m)| serde_json::to_value(m).unwrap())
                .collect();
        }
        let sqs = self.sqs.as_ref().expect("an API on SQLite (new) or on moto (on_moto)");
        let received = receive_all(&sqs.client, &sqs.url).await;
        check_fifo_fields(&received);
        let mut taken = sqs.taken.lock().unwrap();
        taken.extend(received.into_iter().map(|m| m.body));
        taken.clone()
    }

    pub async fn raw(&self, req: Request<Body>) -> Reply {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let raw = res.into_body().collect().await.unwrap().to_bytes().to_vec();
        let body = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("non-JSON reply ({e}): {raw:?}"))
        };
        if status.is_client_error() || status.is_server_error() {
            // Every error has SPEC's shape.
            assert!(body["error"]["code"].is_string(), "{body}");
            assert!(body["error"]["message"].is_string(), "{body}");
            assert!(body["error"]["details"].is_array(), "{body}");
        }
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        if status.is_client_error() || status.is_server_error() {
            // A sentence for a person, ended by one period.
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.ends_with('.') && !message.ends_with(".."), "{body}");
        }
        if body["error"]["code"] == "VALIDATION_FAILED" {
            assert_error_form_of(&body, &body.to_string());
        }
        Reply {
            status,
            headers,
            body,
            raw,
        }
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        self.call_with(method, path, token, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty);
        self.raw(req.body(body).unwrap()).await
    }

    /// `GET path` as the admin, whatever the answer.
    pub async fn admin_get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, Some(ADMIN), None).await
    }

    pub async fn put_service(&self, org: &str, id: &str, body: Value) -> Reply {
        self.call(
            Method::PUT,
            &format!("/organization/{org}/services/{id}"),
            Some(ADMIN),
            Some(body),
        )
        .await
    }

    /// The service `id` of `org`, read with the admin token; it must exist.
    pub async fn get_service(&self, org: &str, id: &str) -> Reply {
        let r = self.admin_get(&format!("/organization/{org}/services/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r
    }

    pub async fn token(&self, org: &str, scopes: &[&str]) -> String {
        self.token_and_id(org, scopes).await.0
    }

    /// A new token of `org` with `scopes`: the token, and its id.
    pub async fn token_and_id(&self, org: &str, scopes: &[&str]) -> (String, String) {
        let r = self
            .call(
                Method::POST,
                &format!("/organization/{org}/tokens"),
                Some(ADMIN),
                Some(json!({"name": "t", "scopes": scopes})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        (
            r.body["token"].as_str().unwrap().to_owned(),
            r.body["id"].as_str().unwrap().to_owned(),
        )
    }
}

impl Api {
    /// Configure the organization's webhook secret for `provider`.
    pub async fn set_secret(&self, org: &str, provider: &str) {
        self.set_secret_to(org, provider, WEBHOOK_SECRET).await;
    }

    /// Configure the organization's webhook secret for `provider` to `secret`.
    pub async fn set_secret_to(&self, org: &str, provider: &str, secret: &str) {
        let r = self
            .call(
                Method::PUT,
                &format!("/organization/{org}/webhook-secrets/{provider}"),
                Some(ADMIN),
                Some(json!({"secret": secret})),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    }

    /// POST a webhook body with the given headers.
    pub async fn deliver(&self, path: &str, headers: &[(String, String)], body: Vec<u8>) -> Reply {
        let mut req = Request::post(path).header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        self.raw(req.body(Body::from(body)).unwrap()).await
    }

    /// A signed push of `body` to `org`'s `provider` webhook.
    pub async fn push(&self, org: &str, provider: &str, body: &[u8], delivery: &str) -> Reply {
        self.signed_push(
            &format!("/organization/{org}/webhooks/{provider}"),
            provider,
            body,
            delivery,
        )
        .await
    }

    /// The same signed push as a dry run (`?dry_run=true`).
    pub async fn dry_run_push(&self, org: &str, provider: &str, body: &[u8], delivery: &str) -> Reply {
        self.signed_push(
            &format!("/organization/{org}/webhooks/{provider}?dry_run=true"),
            provider,
            body,
            delivery,
        )
        .await
    }

    async fn signed_push(&self, uri: &str, provider: &str, body: &[u8], delivery: &str) -> Reply {
        let headers = provider_headers(provider, body, delivery);
        self.deliver(uri, &headers, body.to_vec()).await
    }

    /// Create an auto-deployed APPLICATION following `url` at `branch`.
    pub async fn app(&self, org: &str, id: &str, provider: &str, url: &str, branch: &str, extra: Value) -> Reply {
        let mut body = json!({
            "environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
            "git_repository": {"provider": provider, "url": url, "branch": branch},
        });
        json_patch::merge(&mut body, &extra);
        let r = self.put_service(org, id, body).await;
        assert!(r.status.is_success(), "{}", r.body);
        r
    }

    /// `(service_id, status)` of every deployment of `org`, sorted.
    pub async fn statuses(&self, org: &str) -> Vec<(String, String)> {
        let mut statuses = by_service(&self.deployments(org).await, "status");
        statuses.sort();
        statuses
    }

    /// The deployment log of `org`, newest first.
    pub async fn deployments(&self, org: &str) -> Vec<Value> {
        let r = self
            .admin_get(&format!("/organization/{org}/deployments?limit=100"))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        r.body["items"].as_array().unwrap().clone()
    }

    /// The outcomes of the newest hundred deliveries of `org`, newest first.
    pub async fn delivery_outcomes(&self, org: &str) -> Vec<String> {
        let r = self
            .admin_get(&format!("/organization/{org}/deliveries?limit=100"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let items = r.body["items"].as_array().unwrap();
        items
            .iter()
            .map(|d| d["outcome"].as_str().unwrap().to_owned())
            .collect()
    }

    /// `copies` requests made at once, the `i`th by `request(api, i)`; their replies in that
    /// order.
    pub async fn at_once<F, Fut>(self: &std::sync::Arc<Self>, copies: usize, request: F) -> Vec<Reply>
    where
        F: Fn(std::sync::Arc<Self>, usize) -> Fut,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let tasks: Vec<_> = (0..copies)
            .map(|i| tokio::spawn(request(std::sync::Arc::clone(self), i)))
            .collect();
        let mut replies = Vec::with_capacity(copies);
        for task in tasks {
            replies.push(task.await.unwrap());
        }
        replies
    }
}

/// SPEC "Errors": a `VALIDATION_FAILED` message reads `field: message.` for one bad field and
/// `N fields need attention: a, b.` for several; each detail is a lower-case phrase without a
/// trailing period.
pub fn assert_error_form(r: &Reply, context: &str) {
    assert_error_form_of(&r.body, context);
}

fn assert_error_form_of(body: &Value, context: &str) {
    let message = body["error"]["message"].as_str().unwrap();
    let details = body["error"]["details"].as_array().unwrap();
    for detail in details {
        let text = detail["message"].as_str().unwrap();
        assert!(!text.ends_with('.'), "{context}: a detail ends with a period: {text}");
        assert!(
            text.chars().next().is_some_and(|c| !c.is_uppercase()),
            "{context}: a detail is not a lower-case phrase: {text}"
        );
    }
    assert!(
        message.ends_with('.') && !message.ends_with(".."),
        "{context}: {message}"
    );
    match details.as_slice() {
        [one] => assert_eq!(
            message,
            format!(
                "{}: {}.",
                one["field"].as_str().unwrap(),
                one["message"].as_str().unwrap()
            ),
            "{context}"
        ),
        many => {
            let fields: Vec<&str> = many.iter().map(|d| d["field"].as_str().unwrap()).collect();
            assert_eq!(
                message,
                format!("{} fields need attention: {}.", many.len(), fields.join(", ")),
                "{context}"
            );
        }
    }
}

/// `(service_id, status)` of the `queued` entries and `(service_id, reason)` of the `skipped`.
/// `(service_id, status or reason)` pairs, sorted.
pub type Entries = Vec<(String, String)>;

pub fn outcome(reply: &Reply) -> (Entries, Entries) {
    let list = |key: &str, field: &str| {
        let mut v = reply.body[key]
            .as_array()
            .map(|items| by_service(items, field))
            .unwrap_or_default();
        v.sort();
        v
    };
    (list("queued", "status"), list("skipped", "reason"))
}

/// `(service_id, field)` of each of `items` (deployments, messages, outcome entries), in order.
pub fn by_service(items: &[Value], field: &str) -> Entries {
    let pair = |i: &Value| {
        let value = i[field].as_str().unwrap_or_else(|| panic!("no {field} in {i}"));
        (i["service_id"].as_str().unwrap().to_owned(), value.to_owned())
    };
    items.iter().map(pair).collect()
}

/// `deployment_id` of every `queued` entry, sorted.
pub fn deployment_ids(r: &Reply) -> Vec<String> {
    let mut v: Vec<String> = r.body["queued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["deployment_id"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

/// The deployment ids the messages carry, sorted, after checking that each message's
/// deduplication id is its deployment id and its group the service's (organization `acme`).
pub fn message_ids(messages: &[ReceivedMessage]) -> Vec<String> {
    check_fifo_fields(messages);
    for m in messages {
        assert_eq!(m.body["organization_id"], "acme", "{m:?}");
    }
    let mut v: Vec<String> = messages
        .iter()
        .map(|m| m.body["deployment_id"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

/// Each message's deduplication id is its deployment id, and its group the service's
/// (`{organization}/{service}`).
fn check_fifo_fields(messages: &[ReceivedMessage]) {
    for m in messages {
        assert_eq!(m.dedup, m.body["deployment_id"].as_str().unwrap(), "{m:?}");
        assert_eq!(
            m.group,
            format!(
                "{}/{}",
                m.body["organization_id"].as_str().unwrap(),
                m.body["service_id"].as_str().unwrap()
            ),
            "{m:?}"
        );
    }
}

/// Each of `messages` is in the deployment `log`, `QUEUED`, as the very request that was sent.
pub fn assert_logged_as_sent(log: &[Value], messages: &[Value]) {
    for m in messages {
        let mut logged = log
            .iter()
            .find(|d| d["deployment_id"] == m["deployment_id"])
            .expect("the message's deployment is in the log")
            .clone();
        assert_eq!(logged["status"], "QUEUED");
        // The log adds the lifecycle's fields to the request the queue carries.
        let fields = logged.as_object_mut().unwrap();
        for lifecycle in [
            "status",
            "attempts",
            "last_error",
            "next_attempt_at",
            "result",
            "updated_at",
        ] {
            fields.remove(lifecycle);
        }
        assert_eq!(&logged, m);
    }
}

/// The deployment ids of queued messages (as [`Api::queued_messages`] returns them), sorted.
pub fn sent_deployment_ids(messages: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = messages
        .iter()
        .map(|m| m["deployment_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}
