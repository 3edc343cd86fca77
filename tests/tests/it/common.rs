//! HTTP harness shared by the API test files: the real router, in-process, on a real store.
#![allow(dead_code, unused_macros)]

/// Runs each case — an `async fn(Api)` of the file — on both stores: SQLite (`Api::new`), and
/// DynamoDB and SQS on moto through the real AWS SDK (`Api::on_moto`). Declare the module with
/// `#[macro_use] mod common;` in `main.rs`.
macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$case(crate::common::Api::new()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dynamo() {
                super::$case(crate::common::Api::on_moto().await).await
            }
        }
    )*};
}

use std::sync::Arc;

use autodeploy_api::admin::StaticAdminToken;
use autodeploy_api::sqlite::SqliteStore;
use autodeploy_api::store::{DeploymentQueue, InStoreQueue, Store};
use autodeploy_api::web::{AppState, full_router};
use autodeploy_tests::fault_proxy::FaultyAws;
use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const ADMIN: &str = "admin-token-for-tests-0123456789";

/// The router on the AWS adapters of a [`FaultyAws`]: DynamoDB and SQS on moto, each behind a
/// fault proxy of its own. Each AWS test file adds its own methods.
pub struct AwsStack {
    pub aws: FaultyAws,
    pub api: Api,
}

impl AwsStack {
    pub async fn new() -> Self {
        let aws = FaultyAws::new().await;
        let api = Api::on(aws.store.clone(), aws.queue.clone());
        Self { aws, api }
    }

    /// As [`AwsStack::new`], with the organization `acme`'s GitHub webhook secret set.
    pub async fn with_github_secret() -> Self {
        let stack = Self::new().await;
        stack.api.set_secret("acme", "github").await;
        stack
    }

    /// `(service_id, status)` of every deployment recorded, sorted.
    pub async fn log(&self) -> Vec<(String, String)> {
        let mut log: Vec<(String, String)> = self
            .api
            .deployments("acme")
            .await
            .iter()
            .map(|d| {
                (
                    d["service_id"].as_str().unwrap().to_owned(),
                    d["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        log.sort();
        log
    }
}

pub struct Api {
    pub router: Router,
    pub store: Arc<dyn Store>,
    /// The SQLite store, when the API runs on one (its queue is a table).
    pub sqlite: Option<SqliteStore>,
    /// The SQS queue, when the API runs on moto.
    sqs: Option<SqsQueueReader>,
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

    pub fn error_fields(&self) -> Vec<String> {
        let mut fields: Vec<String> = self.body["error"]["details"]
            .as_array()
            .map(|d| d.iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        fields.sort();
        fields
    }
}

impl Api {
    /// The API on a fresh SQLite database file.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("api.db")).unwrap();
        let mut api = Self::on(Arc::new(store.clone()), Arc::new(InStoreQueue));
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
        let aws = autodeploy_tests::aws_fixture().await;
        let mut api = Self::on(Arc::new(aws.store), Arc::new(aws.queue));
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

    /// The router on `state`, whose store is `store`.
    pub fn on_state(store: Arc<dyn Store>, state: AppState) -> Self {
        Self {
            router: full_router(state),
            store,
            sqlite: None,
            sqs: None,
            _dir: None,
        }
    }

    /// Every deployment request queued since the API was created, as sent (SPEC's message):
    /// the queue table on SQLite, the SQS queue on moto. Not for an API made with `on`.
    pub async fn queued_messages(&self) -> Vec<Value> {
        if let Some(store) = &self.sqlite {
            let queued = store.queued_messages(0, 10_000).await.unwrap();
            return queued
                .into_iter()
                .map(|(_, m)| serde_json::to_value(m).unwrap())
                .collect();
        }
        let sqs = self.sqs.as_ref().expect("an API on SQLite (new) or on moto (on_moto)");
        let received = autodeploy_tests::fake_lambda::receive_all(&sqs.client, &sqs.url).await;
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

    pub async fn put_service(&self, org: &str, id: &str, body: Value) -> Reply {
        self.call(
            Method::PUT,
            &format!("/organization/{org}/services/{id}"),
            Some(ADMIN),
            Some(body),
        )
        .await
    }

    pub async fn token(&self, org: &str, scopes: &[&str]) -> String {
        let r = self
            .call(
                Method::POST,
                &format!("/organization/{org}/tokens"),
                Some(ADMIN),
                Some(json!({"name": "t", "scopes": scopes})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["token"].as_str().unwrap().to_owned()
    }
}

/// Hex HMAC-SHA256 of `body` with `secret`, as the providers sign.
pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A real fixture from `tests/fixtures/webhooks/`.
pub fn fixture(path: &str) -> Vec<u8> {
    let full = format!("{}/fixtures/webhooks/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

pub fn fixture_json(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).unwrap()
}

pub const WEBHOOK_SECRET: &str = "webhook-secret-for-tests-0123";

/// The headers a provider sends with a push: event, delivery id and signature over `body`.
pub fn provider_headers(provider: &str, body: &[u8], delivery: &str) -> Vec<(String, String)> {
    let sig = hmac_hex(WEBHOOK_SECRET, body);
    let h = |pairs: &[(&str, String)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    match provider {
        "github" => h(&[
            ("x-github-event", "push".into()),
            ("x-github-delivery", delivery.into()),
            ("x-hub-signature-256", format!("sha256={sig}")),
        ]),
        "gitlab" => h(&[
            ("x-gitlab-event", "Push Hook".into()),
            ("x-gitlab-event-uuid", delivery.into()),
            ("x-gitlab-token", WEBHOOK_SECRET.into()),
        ]),
        "bitbucket" => h(&[
            ("x-event-key", "repo:push".into()),
            ("x-request-uuid", delivery.into()),
            ("x-hub-signature", format!("sha256={sig}")),
        ]),
        "bitbucket-server" => h(&[
            ("x-event-key", "repo:refs_changed".into()),
            ("x-request-id", delivery.into()),
            ("x-hub-signature", format!("sha256={sig}")),
        ]),
        "gitea" => h(&[
            ("x-gitea-event", "push".into()),
            ("x-gitea-delivery", delivery.into()),
            ("x-gitea-signature", sig),
        ]),
        "gogs" => h(&[
            ("x-gogs-event", "push".into()),
            ("x-gogs-delivery", delivery.into()),
            ("x-gogs-signature", sig),
        ]),
        "azure-devops" => {
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("azure:{WEBHOOK_SECRET}"));
            h(&[("authorization", format!("Basic {basic}"))])
        }
        other => panic!("no headers for {other}"),
    }
}

impl Api {
    /// Configure the organization's webhook secret for `provider`.
    pub async fn set_secret(&self, org: &str, provider: &str) {
        let r = self
            .call(
                Method::PUT,
                &format!("/organization/{org}/webhook-secrets/{provider}"),
                Some(ADMIN),
                Some(json!({"secret": WEBHOOK_SECRET})),
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
        let headers = provider_headers(provider, body, delivery);
        self.deliver(
            &format!("/organization/{org}/webhooks/{provider}"),
            &headers,
            body.to_vec(),
        )
        .await
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

    /// The deployment log of `org`, newest first.
    pub async fn deployments(&self, org: &str) -> Vec<Value> {
        let r = self
            .call(
                Method::GET,
                &format!("/organization/{org}/deployments?limit=100"),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        r.body["items"].as_array().unwrap().clone()
    }
}

/// `(service_id, status)` of the `queued` entries and `(service_id, reason)` of the `skipped`.
/// `(service_id, status or reason)` pairs, sorted.
pub type Entries = Vec<(String, String)>;

pub fn outcome(reply: &Reply) -> (Entries, Entries) {
    let list = |key: &str, field: &str| {
        let mut v: Entries = reply.body[key]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| {
                        (
                            i["service_id"].as_str().unwrap().to_owned(),
                            i[field].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    (list("queued", "status"), list("skipped", "reason"))
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
pub fn message_ids(messages: &[autodeploy_tests::fault_proxy::ReceivedMessage]) -> Vec<String> {
    for m in messages {
        assert_eq!(m.dedup, m.body["deployment_id"].as_str().unwrap(), "{m:?}");
        assert_eq!(
            m.group,
            format!("acme/{}", m.body["service_id"].as_str().unwrap()),
            "{m:?}"
        );
    }
    let mut v: Vec<String> = messages
        .iter()
        .map(|m| m.body["deployment_id"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}
