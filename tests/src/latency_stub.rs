//! AWS-like latencies without AWS, and services seeded in bulk: what the cost and CPU
//! measurements (`tests/tests/it/aws_cost.rs`, `examples/lambda_cpu.rs`) share.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autodeploy_api::aws::DynamoStore;
use autodeploy_api::store::{Expected, ServiceStore, StoredService, TenantLimits};
use autodeploy_api::util::{new_etag, now_rfc3339};
use autodeploy_core::model::{Service, parse_service_document};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

use crate::fault_proxy::action;

/// How many services are written at once while seeding.
const SEED_CONCURRENCY: usize = 32;

/// One service to seed: `org`, its id, and the GitHub repository (`owner/name`) it follows
/// on `master`, auto-deployed.
pub struct Seed {
    pub org: &'static str,
    pub id: String,
    pub repo: String,
}

pub fn seeds(org: &'static str, prefix: &str, repo: &str, n: usize) -> Vec<Seed> {
    (0..n)
        .map(|i| Seed {
            org,
            id: format!("{prefix}-{i:05}"),
            repo: repo.to_owned(),
        })
        .collect()
}

/// Services following a repository of their own each.
pub fn unrelated(org: &'static str, prefix: &str, n: usize) -> Vec<Seed> {
    (0..n)
        .map(|i| Seed {
            org,
            id: format!("{prefix}-{i:05}"),
            repo: format!("acme/{prefix}-{i:05}"),
        })
        .collect()
}

/// Write every seed as the settings API's `PUT /organization/{org}/services/{id}` does: the
/// same document parsing and the same `put_service` call.
pub async fn seed(store: &DynamoStore, seeds: &[Seed]) {
    let started = Instant::now();
    let writes = seeds.iter().map(|seed| async move {
        let doc = json!({
            "environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
            "git_repository": {"provider": "GITHUB", "url": format!("https://github.com/{}.git", seed.repo), "branch": "master"},
        });
        let spec = parse_service_document(seed.org, &seed.id, &doc).expect("a valid service");
        let now = now_rfc3339();
        let service = Service {
            id: seed.id.clone(),
            organization_id: seed.org.to_owned(),
            spec,
            version: 1,
            created_at: now.clone(),
            updated_at: now,
        };
        let stored = StoredService::new(service, new_etag());
        store
            .put_service(&stored, Expected::Absent, TenantLimits::default())
            .await
            .unwrap_or_else(|e| panic!("seeding {}/{}: {e}", seed.org, seed.id));
    });
    futures::stream::iter(writes)
        .buffer_unordered(SEED_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    eprintln!("seeded {} services in {:.1?}", seeds.len(), started.elapsed());
}

/// Assumed AWS latencies, in-region, per call (DynamoDB documents single-digit milliseconds
/// for item reads and writes; a transaction is two writes; SQS batches take tens of ms).
/// Deliberately on the slow side.
pub fn aws_latency(action: &str) -> Duration {
    Duration::from_millis(match action {
        action::TRANSACT_WRITE_ITEMS => 25,
        action::SEND_MESSAGE_BATCH => 30,
        _ => 10,
    })
}

/// An AWS endpoint that takes [`aws_latency`] over every call, as AWS would, and then
/// forwards reads and the delivery id write to moto but answers the deployment writes
/// (`TransactWriteItems`, `UpdateItem`, `SendMessageBatch`) itself, with success: the wall time
/// of a push through it is the pipeline's own concurrency against AWS-like latencies, not
/// moto's (which serves one request at a time, in Python). Nothing of what the stub answers
/// is written.
pub struct LatencyStub {
    pub url: String,
    /// Requests per `X-Amz-Target`.
    counts: Arc<std::sync::Mutex<BTreeMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LatencyStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type StubError = Box<dyn std::error::Error + Send + Sync>;

impl LatencyStub {
    pub async fn start(moto: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let moto: Arc<str> = Arc::from(moto.trim_end_matches('/'));
        let counts = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let shared = Arc::clone(&counts);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (client, moto, counts) = (client.clone(), Arc::clone(&moto), Arc::clone(&shared));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        LatencyStub::handle(req, client.clone(), Arc::clone(&moto), Arc::clone(&counts))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, counts, task }
    }

    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.counts.lock().unwrap().clone()
    }

    pub fn reset_counts(&self) {
        self.counts.lock().unwrap().clear();
    }

    async fn handle(
        req: http::Request<Incoming>,
        client: Client<HttpConnector, Full<Bytes>>,
        moto: Arc<str>,
        counts: Arc<std::sync::Mutex<BTreeMap<String, usize>>>,
    ) -> Result<http::Response<Full<Bytes>>, StubError> {
        let action = req
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        *counts.lock().unwrap().entry(action.clone()).or_default() += 1;
        let (mut parts, body) = req.into_parts();
        let body = body.collect().await?.to_bytes();
        tokio::time::sleep(aws_latency(&action)).await;
        let answer = match action.as_str() {
            action::TRANSACT_WRITE_ITEMS | action::UPDATE_ITEM => json!({}),
            action::SEND_MESSAGE_BATCH => {
                let request: Value = serde_json::from_slice(&body)?;
                let successful: Vec<Value> = request["Entries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|entry| {
                        json!({"Id": entry["Id"], "MessageId": uuid::Uuid::new_v4().to_string(),
                               "MD5OfMessageBody": "00000000000000000000000000000000"})
                    })
                    .collect();
                json!({"Successful": successful, "Failed": []})
            }
            _ => {
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                parts.uri = format!("{moto}{path}").parse()?;
                let (mut parts, body) = client
                    .request(http::Request::from_parts(parts, Full::new(body)))
                    .await?
                    .into_parts();
                let body = body.collect().await?.to_bytes();
                parts.headers.remove(http::header::TRANSFER_ENCODING);
                parts.headers.remove(http::header::CONNECTION);
                return Ok(http::Response::from_parts(parts, Full::new(body)));
            }
        };
        Ok(http::Response::builder()
            .header(http::header::CONTENT_TYPE, "application/x-amz-json-1.0")
            .header("x-amzn-requestid", uuid::Uuid::new_v4().to_string())
            .body(Full::new(Bytes::from(answer.to_string())))?)
    }
}
