//! A stand-in for AWS Lambda, to run a function binary as Lambda runs it: [`FakeLambdaRuntime`]
//! serves the Lambda Runtime API (`/2018-06-01/runtime/invocation/next`, `…/{id}/response`,
//! `…/{id}/error`, `/runtime/init/error`) on `127.0.0.1:0`, and [`FunctionProcess`] starts a
//! built binary pointed at it and at moto, with its output in a file the test can read.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use autodeploy_api::store::{DeploymentQueue, Store};

use crate::api::{ADMIN, Api};
use crate::webhooks::{fixture_bytes, github_signature};

/// How long [`FakeLambdaRuntime::invoke`] waits for the function's answer.
pub const INVOKE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the function answered to one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// `POST …/{id}/response`, the body as JSON.
    Response(Value),
    /// `POST …/{id}/error`: `{"errorType", "errorMessage"}`.
    Error(Value),
}

impl Invocation {
    pub fn response(self) -> Value {
        match self {
            Invocation::Response(v) => v,
            Invocation::Error(e) => panic!("the function failed: {e}"),
        }
    }

    pub fn error(self) -> Value {
        match self {
            Invocation::Error(e) => e,
            Invocation::Response(v) => panic!("the function answered instead of failing: {v}"),
        }
    }
}

struct Shared {
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, Value)>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Invocation>>>,
    init_errors: Mutex<Vec<Value>>,
    /// When the function first asked for an invocation: the end of its init.
    first_poll: std::sync::OnceLock<Instant>,
}

pub struct FakeLambdaRuntime {
    addr: SocketAddr,
    events: mpsc::UnboundedSender<(String, Value)>,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl FakeLambdaRuntime {
    pub async fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            events: tokio::sync::Mutex::new(rx),
            waiting: Mutex::new(HashMap::new()),
            init_errors: Mutex::new(Vec::new()),
            first_poll: std::sync::OnceLock::new(),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fake Lambda Runtime API");
        let addr = listener.local_addr().expect("its address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            events: tx,
            shared,
            server,
        }
    }

    /// The variables Lambda sets for a function (`AWS_LAMBDA_RUNTIME_API` pointing here).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_LAMBDA_RUNTIME_API", self.addr.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", "autodeploy-test".to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Hand `event` to the function and wait for its answer.
    pub async fn invoke(&self, event: Value) -> Invocation {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.shared
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), tx);
        self.events.send((id, event)).expect("the fake runtime is running");
        tokio::time::timeout(INVOKE_TIMEOUT, rx)
            .await
            .expect("the function did not answer in time")
            .expect("the fake runtime dropped the invocation")
    }

    /// When the function first asked for an invocation (`GET …/invocation/next`), the moment
    /// its init ended; waits at most `timeout` for it. For cold-start measurements
    /// (`tests/examples/coldstart.rs`).
    pub async fn first_poll(&self, timeout: Duration) -> Option<Instant> {
        let started = Instant::now();
        loop {
            if let Some(at) = self.shared.first_poll.get() {
                return Some(*at);
            }
            if started.elapsed() >= timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// What the function reported to `/runtime/init/error`.
    pub fn init_errors(&self) -> Vec<Value> {
        self.shared
            .init_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for FakeLambdaRuntime {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    let _ = shared.first_poll.set(Instant::now());
    let mut events = shared.events.lock().await;
    match events.recv().await {
        Some((id, event)) => {
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() + INVOKE_TIMEOUT.as_millis())
                .unwrap_or_default();
            (
                StatusCode::OK,
                [
                    ("content-type", "application/json".to_owned()),
                    ("lambda-runtime-aws-request-id", id),
                    ("lambda-runtime-deadline-ms", deadline.to_string()),
                    (
                        "lambda-runtime-invoked-function-arn",
                        "arn:aws:lambda:us-east-1:123456789012:function:autodeploy-test".to_owned(),
                    ),
                ],
                event.to_string(),
            )
                .into_response()
        }
        None => StatusCode::GONE.into_response(),
    }
}

fn finish(shared: &Shared, id: &str, outcome: Invocation) -> StatusCode {
    let waiter = shared.waiting.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    match waiter {
        Some(tx) => {
            let _ = tx.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::NOT_FOUND,
    }
}

fn json(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn response(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>, body: Bytes) -> StatusCode {
    finish(&shared, &id, Invocation::Response(json(&body)))
}

async fn error(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>, body: Bytes) -> StatusCode {
    finish(&shared, &id, Invocation::Error(json(&body)))
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    shared
        .init_errors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(json(&body));
    StatusCode::ACCEPTED
}

/// A function binary running as a child process, its stdout and stderr in one file. Killed
/// when dropped.
pub struct FunctionProcess {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl FunctionProcess {
    /// Start `exe` with only `env` (plus nothing inherited but `PATH`): no AWS profile or
    /// credentials of the developer's leak in.
    pub fn spawn(exe: impl AsRef<Path>, env: &[(String, String)]) -> Self {
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let out = log.reopen().expect("the log file");
        let err = log.reopen().expect("the log file");
        let mut command = Command::new(exe.as_ref());
        command.env_clear();
        if let Ok(path) = std::env::var("PATH") {
            command.env("PATH", path);
        }
        command
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.as_ref().display()));
        Self { child, log }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Wait (at most `timeout`) for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the function") {
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "the function is still running after {timeout:?}; its output:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything the process wrote so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `exe` with the SDK environment (an endpoint nothing listens on) and `vars`, expecting
/// it to refuse to start: asserts that it exits unsuccessfully, without a panic, and returns
/// what it wrote, for the caller to check that it names what is missing.
pub async fn start_up_failure(exe: impl AsRef<Path>, vars: &[(&str, &str)]) -> String {
    let mut env = moto_env("http://127.0.0.1:9");
    env.extend(env_vars(vars));
    let mut function = FunctionProcess::spawn(&exe, &env);
    let status = function.wait_exit(Duration::from_secs(30)).await;
    let logs = function.logs();
    assert!(!status.success(), "{} started: {logs}", exe.as_ref().display());
    assert!(!logs.contains("panicked"), "{logs}");
    logs
}

/// The SDK environment of a function on moto: endpoint, region and static test credentials.
pub fn moto_env(moto_url: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", moto_url),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A CI announcement of `image` at `tag` to organization `org`'s container endpoint, with
/// the `Authorization` header `authorization`, as an API Gateway event.
pub fn container_deploy_event(org: &str, authorization: &str, (image, tag): (&str, &str), base64: bool) -> Value {
    let body = serde_json::json!({"image_name": image, "tag": tag}).to_string();
    http_api_event(
        "POST",
        &format!("/organization/{org}/container/deploy"),
        &[("authorization", authorization), ("content-type", "application/json")],
        Some(body.as_bytes()),
        base64,
    )
}

/// An API Gateway HTTP API event (payload format 2.0) as API Gateway sends it to a function:
/// `path` may carry a `?query`; a body is sent as text, or base64-encoded when `base64`.
pub fn http_api_event(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>, base64: bool) -> Value {
    use base64::Engine;

    let (raw_path, query) = path.split_once('?').unwrap_or((path, ""));
    let mut header_map = serde_json::Map::new();
    header_map.insert("host".to_owned(), "abc123.execute-api.us-east-1.amazonaws.com".into());
    header_map.insert("user-agent".to_owned(), "autodeploy-tests".into());
    for (name, value) in headers {
        header_map.insert(name.to_ascii_lowercase(), (*value).into());
    }
    let body = body.map(|b| {
        if base64 {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        } else {
            Value::String(String::from_utf8(b.to_vec()).expect("a text body"))
        }
    });
    serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": query,
        "headers": header_map,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "autodeploy-tests"
            },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": "$default",
            "stage": "$default",
            "time": "26/Nov/2026:12:00:00 +0000",
            "timeEpoch": 1_795_694_400_000_u64
        },
        "body": body,
        "isBase64Encoded": base64
    })
}

/// An EventBridge "ECR Image Action" event for `repository:tag` in account 123456789012,
/// region us-east-2 (`action` is `PUSH` or `DELETE`).
pub fn ecr_event(action: &str, repository: &str, tag: &str) -> Value {
    serde_json::json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "ECR Image Action",
        "source": "aws.ecr",
        "account": "123456789012",
        "time": "2026-11-26T12:00:00Z",
        "region": "us-east-2",
        "resources": [],
        "detail": {
            "result": "SUCCESS",
            "repository-name": repository,
            "image-digest": "sha256:98c8b060bc7ba8fbf1c5d9d1aafc5e2d4ee3f0a0b7a1b2c3d4e5f60718293a4b",
            "action-type": action,
            "image-tag": tag
        }
    })
}

/// The registry host of [`ecr_event`]'s events.
pub const ECR_REGISTRY: &str = "123456789012.dkr.ecr.us-east-2.amazonaws.com";

/// The JSON body of an API Gateway v2 response as a function returns it.
pub fn response_body(response: &Value) -> Value {
    use base64::Engine;

    let body = response["body"].as_str().unwrap_or("");
    let bytes = if response["isBase64Encoded"].as_bool() == Some(true) {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("a base64 body")
    } else {
        body.as_bytes().to_vec()
    };
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("a JSON body ({e}): {body}"))
}

/// One request to the whole HTTP API over `store` and `queue` (admin token
/// [`crate::api::ADMIN`]), to set up what a function will read. Returns the status and
/// the JSON body (`null` when empty).
pub async fn call_api(
    store: Arc<dyn Store>,
    queue: Arc<dyn DeploymentQueue>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = http::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let reply = Api::on(store, queue).call(method, path, Some(ADMIN), body).await;
    (reply.status.as_u16(), reply.body)
}

/// As [`call_api`], with exactly `headers` and a raw body.
pub async fn call_api_with(
    store: Arc<dyn Store>,
    queue: Arc<dyn DeploymentQueue>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let mut request = http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(axum::body::Body::from(body.unwrap_or_default()))
        .expect("a request");
    let reply = Api::on(store, queue).raw(request).await;
    (reply.status.as_u16(), reply.body)
}

/// The API Gateway event of a GitHub push delivery of `body` to organization `acme`, signed
/// with `secret`.
pub fn github_push_event(secret: &str, body: &[u8], delivery: &str) -> Value {
    let signature = github_signature(secret, body);
    http_api_event(
        "POST",
        "/organization/acme/webhooks/github",
        &[
            ("content-type", "application/json"),
            ("x-github-event", "push"),
            ("x-github-delivery", delivery),
            ("x-hub-signature-256", &signature),
        ],
        Some(body),
        false,
    )
}

/// `(name, value)` pairs as the owned environment [`FunctionProcess::spawn`] takes.
pub fn env_vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Through the HTTP API over `store` and `queue`: the organization `acme`'s GitHub webhook
/// secret `secret`, and its application `api` following the repository and branch (`master`)
/// of the fixture `webhooks/github/gp-push.json`, which is returned.
pub async fn github_app_for_the_push_fixture(
    store: Arc<dyn Store>,
    queue: Arc<dyn DeploymentQueue>,
    secret: &str,
) -> Value {
    let (status, body) = call_api(
        store.clone(),
        queue.clone(),
        "PUT",
        "/organization/acme/webhook-secrets/github",
        Some(serde_json::json!({"secret": secret})),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let push: Value = serde_json::from_slice(&fixture_bytes("webhooks/github/gp-push.json")).expect("the fixture");
    let (status, body) = call_api(
        store,
        queue,
        "PUT",
        "/organization/acme/services/api",
        Some(serde_json::json!({
            "environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
            "git_repository": {"provider": "GITHUB", "url": push["repository"]["clone_url"], "branch": "master"},
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    push
}
