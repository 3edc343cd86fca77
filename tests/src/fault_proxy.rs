//! A fault-injecting HTTP proxy in front of moto, for proving the AWS side under real network
//! failures rather than mocked traits.
//!
//! [`FaultProxy::start`] listens on `127.0.0.1:0` and forwards every request to moto as it
//! came (same method, path, headers and body: moto routes on the signed `Authorization` and
//! `X-Amz-Target` headers, not on the host). [`FaultProxy::set`] switches it at run time to a
//! [`Fault`]: answer a 503 with an AWS-style JSON error, drop the connection, forward and then
//! lose the answer, or hold the request past the client's patience — for every request, only
//! for one action (`X-Amz-Target`, e.g. `AmazonSQS.SendMessageBatch`), after letting some
//! through, or a limited number of times. It counts requests per action, faulted or not.
//!
//! Build the faulted side's client with [`FaultProxy::sqs_client`] /
//! [`FaultProxy::dynamodb_client`]: they go through the proxy with an explicit retry
//! configuration (see [`SDK_ATTEMPTS`]) so that a test can count the SDK's attempts exactly;
//! [`FaultyAws`] is a whole fixture built that way.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use autodeploy_api::aws::{DynamoStore, SqsQueue};
use autodeploy_api::pipeline::{RelayReport, relay_pending};
use aws_config::SdkConfig;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::ReceivedMessage;

/// Attempts the proxy's clients make per call: the SDK's standard retry mode with its default
/// of 3 attempts, as in production. Backoff between attempts is shortened (a few ms instead of
/// about a second) so that tests are quick and their counts exact.
pub const SDK_ATTEMPTS: u32 = 3;

/// The `X-Amz-Target` of a request, or this for requests without one.
pub const NO_ACTION: &str = "-";

/// Common actions, as they appear in `X-Amz-Target`.
pub mod action {
    pub const SEND_MESSAGE_BATCH: &str = "AmazonSQS.SendMessageBatch";
    pub const TRANSACT_WRITE_ITEMS: &str = "DynamoDB_20120810.TransactWriteItems";
    pub const UPDATE_ITEM: &str = "DynamoDB_20120810.UpdateItem";
    pub const PUT_ITEM: &str = "DynamoDB_20120810.PutItem";
    pub const GET_ITEM: &str = "DynamoDB_20120810.GetItem";
    pub const QUERY: &str = "DynamoDB_20120810.Query";
}

/// What a faulted request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A 503 with an AWS-style JSON error body (`ServiceUnavailable`); the request never
    /// reaches moto. The SDK sees a retryable service error.
    Unavailable,
    /// The connection is closed without an answer; the request never reaches moto. The SDK
    /// sees a transport error.
    DropConnection,
    /// The request is forwarded to moto (so it takes effect), then the connection is closed
    /// without the answer.
    LoseResponse,
    /// The request is held this long, then answered with a 503; it never reaches moto. Longer
    /// than the client waits, it is a timeout.
    Delay(Duration),
    /// The request is held this long, then forwarded to moto and its answer passed on: a
    /// service that works, slowly.
    Slow(Duration),
}

/// When and how the proxy fails requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub failure: Failure,
    /// Only requests whose `X-Amz-Target` is this action; every request when `None`.
    pub action: Option<String>,
    /// Let this many matching requests through before failing.
    pub pass_first: usize,
    /// Fail at most this many matching requests, then pass again; forever when `None`.
    pub times: Option<usize>,
}

impl Fault {
    /// Fail every request with `failure`.
    pub fn new(failure: Failure) -> Self {
        Self {
            failure,
            action: None,
            pass_first: 0,
            times: None,
        }
    }

    /// Fail every request with a 503.
    pub fn unavailable() -> Self {
        Self::new(Failure::Unavailable)
    }

    /// Only requests for `action` (an `X-Amz-Target` value).
    pub fn only(mut self, action: &str) -> Self {
        self.action = Some(action.to_owned());
        self
    }

    /// Let the first `n` matching requests through.
    pub fn after(mut self, n: usize) -> Self {
        self.pass_first = n;
        self
    }

    /// Fail only `n` matching requests (after those let through), then pass again.
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, action: &str) -> bool {
        self.action.as_deref().is_none_or(|a| a == action)
    }
}

/// Requests seen for one action.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Every request, faulted or not.
    pub requests: usize,
    /// Those the proxy failed.
    pub failed: usize,
}

#[derive(Default)]
struct State {
    fault: Option<Fault>,
    /// Requests the current fault matched so far.
    matched: usize,
    counts: BTreeMap<String, Count>,
    /// The requests seen while recording: each action with its body.
    recorded: Option<Vec<(String, Bytes)>>,
}

impl State {
    /// Count a request for `action` and decide its fate.
    fn admit(&mut self, action: &str) -> Option<Failure> {
        let failure = match &self.fault {
            Some(fault) if fault.matches(action) => {
                self.matched += 1;
                let index = self.matched - 1;
                let failing =
                    index >= fault.pass_first && fault.times.is_none_or(|times| index - fault.pass_first < times);
                failing.then_some(fault.failure)
            }
            _ => None,
        };
        let count = self.counts.entry(action.to_owned()).or_default();
        count.requests += 1;
        if failure.is_some() {
            count.failed += 1;
        }
        failure
    }
}

type ProxyError = Box<dyn std::error::Error + Send + Sync>;

/// The proxy; stops listening when dropped.
pub struct FaultProxy {
    url: String,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listen on `127.0.0.1:0`, forwarding to `target` (moto's URL), passing everything
    /// through until told otherwise.
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the fault proxy");
        let url = format!("http://{}", listener.local_addr().expect("the proxy's address"));
        let state = Arc::new(Mutex::new(State::default()));
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let target: Arc<str> = Arc::from(target.trim_end_matches('/'));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, client, target) = (Arc::clone(&shared), client.clone(), Arc::clone(&target));
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| handle(req, Arc::clone(&state), client.clone(), Arc::clone(&target)));
                    // An error here is a dropped connection: the point of some faults.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, state, task }
    }

    /// The proxy's URL, to use as an SDK endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fail requests as `fault` says, from now on (requests already held are not affected).
    pub fn set(&self, fault: Fault) {
        let mut state = self.lock();
        state.fault = Some(fault);
        state.matched = 0;
    }

    /// Forward every request again.
    pub fn pass_through(&self) {
        let mut state = self.lock();
        state.fault = None;
        state.matched = 0;
    }

    /// Requests seen for `action` (an `X-Amz-Target` value), faulted or not.
    pub fn requests(&self, action: &str) -> usize {
        self.count(action).requests
    }

    /// Requests for `action` that the proxy failed.
    pub fn failed(&self, action: &str) -> usize {
        self.count(action).failed
    }

    /// Both counts for `action`.
    pub fn count(&self, action: &str) -> Count {
        self.lock().counts.get(action).copied().unwrap_or_default()
    }

    /// Every action seen, with its counts.
    pub fn counts(&self) -> BTreeMap<String, Count> {
        self.lock().counts.clone()
    }

    /// Forget the counts (not the fault).
    pub fn reset_counts(&self) {
        self.lock().counts.clear();
    }

    /// Keep every request from now on, its action and its body, for [`FaultProxy::recorded`].
    pub fn record(&self) {
        self.lock().recorded = Some(Vec::new());
    }

    /// The requests kept since [`FaultProxy::record`] or the last call, each action with its
    /// body; recording goes on.
    pub fn recorded(&self) -> Vec<(String, Bytes)> {
        self.lock().recorded.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// An SDK configuration for the proxy: the harness's test credentials and region, and
    /// the standard retry mode with [`SDK_ATTEMPTS`] attempts and millisecond backoff. No
    /// timeout is set, as in production (the SDK sets only a connect timeout).
    pub async fn sdk_config(&self) -> SdkConfig {
        crate::aws_sdk_config(&self.url)
            .await
            .to_builder()
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(SDK_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(5))
                    .with_max_backoff(Duration::from_millis(20)),
            )
            .build()
    }

    /// An SQS client through the proxy, with its own retry token bucket: the SDK shares one
    /// bucket per service across a process, and the failures of one test must not use up the
    /// retries of another.
    pub async fn sqs_client(&self) -> aws_sdk_sqs::Client {
        let config = aws_sdk_sqs::config::Builder::from(&self.sdk_config().await)
            .retry_partition(aws_sdk_sqs::config::retry::RetryPartition::new(crate::unique_name(
                "fault-proxy-sqs",
            )))
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }

    /// A DynamoDB client through the proxy, with its own retry token bucket.
    pub async fn dynamodb_client(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::config::Builder::from(&self.sdk_config().await)
            .retry_partition(aws_sdk_dynamodb::config::retry::RetryPartition::new(
                crate::unique_name("fault-proxy-dynamodb"),
            ))
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    client: Client<HttpConnector, Full<Bytes>>,
    target: Arc<str>,
) -> Result<Response<Full<Bytes>>, ProxyError> {
    let action = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(NO_ACTION)
        .to_owned();
    let failure = state.lock().unwrap_or_else(PoisonError::into_inner).admit(&action);
    // A service error makes hyper close the connection without an answer: that is how the
    // faults below drop connections.
    // The whole request is read first, so that a failure is the answer's, not the upload's.
    let (mut parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    if let Some(recorded) = state.lock().unwrap_or_else(PoisonError::into_inner).recorded.as_mut() {
        recorded.push((action.clone(), body.clone()));
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("{target}{path}").parse()?;
    let forward = Request::from_parts(parts, Full::new(body));
    match failure {
        None => relay(&client, forward).await,
        Some(Failure::Unavailable) => Ok(unavailable()),
        Some(Failure::DropConnection) => Err(format!("fault proxy: dropped a {action} request").into()),
        Some(Failure::LoseResponse) => {
            relay(&client, forward).await?;
            Err(format!("fault proxy: lost the answer to a {action} request").into())
        }
        Some(Failure::Delay(hold)) => {
            tokio::time::sleep(hold).await;
            Ok(unavailable())
        }
        Some(Failure::Slow(hold)) => {
            tokio::time::sleep(hold).await;
            relay(&client, forward).await
        }
    }
}

/// Send `req` to moto and hand back its answer.
async fn relay(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<Response<Full<Bytes>>, ProxyError> {
    let (mut parts, body) = client.request(req).await?.into_parts();
    let body = body.collect().await?.to_bytes();
    // The body is re-framed with its length.
    parts.headers.remove(http::header::TRANSFER_ENCODING);
    parts.headers.remove(http::header::CONNECTION);
    Ok(Response::from_parts(parts, Full::new(body)))
}

/// The answer of an AWS JSON-protocol service that is unavailable.
fn unavailable() -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "__type": "ServiceUnavailable",
        "message": "The fault proxy refused this request.",
    });
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header(http::header::CONTENT_TYPE, "application/x-amz-json-1.0")
        .header("x-amzn-requestid", uuid::Uuid::new_v4().to_string())
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// A fresh table and queues on moto ([`crate::aws_fixture`]) with store and queue adapters
/// that each reach moto through a fault proxy of their own, so that either can fail while the
/// other works. `fixture` keeps its direct clients, to look behind the adapters' backs.
pub struct FaultyAws {
    pub fixture: crate::AwsFixture,
    /// In front of the store's DynamoDB client.
    pub store_proxy: FaultProxy,
    /// In front of the queue's SQS client.
    pub queue_proxy: FaultProxy,
    pub store: Arc<DynamoStore>,
    pub queue: Arc<SqsQueue>,
}

impl FaultyAws {
    /// The adapters as the functions build them, the queue with its production time budgets.
    pub async fn new() -> Self {
        Self::with_queue_budgets(None).await
    }

    /// The adapters with a queue that waits for SQS as long as a test could: for tests whose
    /// faults are refusals, never slowness, so that a slow moto on a loaded machine does not
    /// leave PENDING a deployment they expect QUEUED (the budgets have their own tests).
    pub async fn patient() -> Self {
        Self::with_queue_budgets(Some(std::time::Duration::from_secs(60))).await
    }

    async fn with_queue_budgets(budget: Option<std::time::Duration>) -> Self {
        let fixture = crate::aws_fixture().await;
        let store_proxy = FaultProxy::start(&crate::moto_url()).await;
        let queue_proxy = FaultProxy::start(&crate::moto_url()).await;
        let store = Arc::new(DynamoStore::new(store_proxy.dynamodb_client().await, &fixture.table));
        let mut queue = SqsQueue::new(queue_proxy.sqs_client().await, &fixture.queues.deployments.url);
        if let Some(budget) = budget {
            queue = queue.with_send_budget(budget).with_batch_timeout(budget);
        }
        let queue = Arc::new(queue);
        Self {
            fixture,
            store_proxy,
            queue_proxy,
            store,
            queue,
        }
    }

    /// One run of the relay over the adapters, as the scheduled function does it.
    pub async fn relay(&self) -> RelayReport {
        relay_pending(self.store.as_ref(), self.queue.as_ref(), 100)
            .await
            .expect("the relay reads the store")
    }

    /// Every message on the deployments queue, received (directly from moto) and deleted, in
    /// the order SQS hands them out: a FIFO group's next message once the previous one is
    /// deleted. moto deduplicates only against messages still on the queue, so a test of
    /// deduplication drains at its end.
    pub async fn drain(&self) -> Vec<ReceivedMessage> {
        crate::receive_all(&self.fixture.sqs, &self.fixture.queues.deployments.url).await
    }
}
