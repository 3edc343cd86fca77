//! The sender against real receivers on 127.0.0.1, started by each test.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use autodeploy_core::deployment::DeploymentRequest;
use autodeploy_core::target::delivery::Verdict;
use autodeploy_core::target::request::build_request;
use autodeploy_core::target::signature::{DEFAULT_TOLERANCE_SECS, verify, webhook_secret_from};
use autodeploy_core::target::{Secret, Target, TargetSpec};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::*;

const COMMIT: &str = "9049f1265b7d61be4a8904a9a27120d2064dab3b";

/// The SPEC's example deployment request.
fn deployment(kind: &str) -> DeploymentRequest {
    serde_json::from_value(json!({
        "schema": "autodeploy.deployment-request.v1",
        "deployment_id": "0f8b8c1e4d2a4b7f9a6e3c2d1b0a9f8e",
        "organization_id": "acme", "environment_id": "production",
        "service_id": "api", "service_kind": kind,
        "git_commit_id": COMMIT, "image_tag": null,
        "trigger": {"type": "GIT_PUSH", "provider": "GITHUB", "repository": "github.com/acme/shop",
                    "branch": "main", "before": "0000000000000000000000000000000000000000",
                    "commit_sha": COMMIT, "delivery_id": "72d3162e", "pusher": "octocat"},
        "requested_at": "2026-11-26T12:00:00Z"
    }))
    .unwrap()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One request as the receiver got it.
#[derive(Debug, Clone)]
struct Captured {
    method: String,
    path: String,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Captured {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

type Requests = Arc<Mutex<Vec<Captured>>>;

/// How a receiver answers the n-th request (from 0), seeing it.
type Respond = Arc<dyn Fn(usize, &Captured) -> Response + Send + Sync>;

/// The receiver's state: what it got, and how it answers.
#[derive(Clone)]
struct Recorder {
    requests: Requests,
    respond: Respond,
}

#[derive(Clone)]
struct Receiver {
    url: String,
    requests: Requests,
}

impl Receiver {
    fn requests(&self) -> Vec<Captured> {
        self.requests.lock().unwrap().clone()
    }
}

/// An HTTP receiver on 127.0.0.1 that records every request and answers the n-th (from 0)
/// with `respond(n)`.
async fn receiver(respond: impl Fn(usize) -> Response + Send + Sync + 'static) -> Receiver {
    receiver_seeing(move |n, _| respond(n)).await
}

/// [`receiver`], answering each request from what it got (to echo it, say).
async fn receiver_seeing(respond: impl Fn(usize, &Captured) -> Response + Send + Sync + 'static) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Requests::default();
    let state = Recorder {
        requests: requests.clone(),
        respond: Arc::new(respond),
    };
    let app = axum::Router::new().fallback(record).with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, requests }
}

async fn record(State(Recorder { requests, respond }): State<Recorder>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec();
    let captured = Captured {
        method: parts.method.to_string(),
        path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: parts.headers,
        body,
    };
    let n = {
        let mut requests = requests.lock().unwrap();
        requests.push(captured.clone());
        requests.len() - 1
    };
    respond(n, &captured)
}

fn answer(status: u16) -> Response {
    Response::builder().status(status).body(Body::empty()).unwrap()
}

fn sender(allow_private: bool) -> Sender {
    Sender::new(SenderConfig::new(allow_private)).unwrap()
}

fn webhook(url: &str, secret: &str) -> TargetSpec {
    Target::Webhook {
        url: url.to_owned(),
        secret: Secret::new(secret),
    }
}

fn secret() -> String {
    webhook_secret_from(&[0x5a; 32])
}

/// One attempt to `target`, as the dispatcher makes it.
async fn deliver(sender: &Sender, target: &TargetSpec, external_id: Option<&str>) -> AttemptOutcome {
    let request = build_request(target, &deployment("APPLICATION"), external_id, unix_now()).unwrap();
    sender.send_to(target, request).await
}

/// One attempt to a webhook at `url`, signed with the test secret.
async fn to_webhook(sender: &Sender, url: &str) -> AttemptOutcome {
    deliver(sender, &webhook(url, &secret()), None).await
}

/// An attempt's verdict and `last_error`.
fn said(outcome: &AttemptOutcome) -> (Verdict, Option<&str>) {
    (outcome.verdict, outcome.error.as_deref())
}

#[tokio::test]
async fn a_2xx_is_delivered_signed() {
    let receiver = receiver(|_| answer(204)).await;
    let secret = secret();
    let target = webhook(&format!("{}/hooks/deploy?env=prod", receiver.url), &secret);
    let outcome = deliver(&sender(true), &target, None).await;
    assert_eq!(outcome.verdict, Verdict::Delivered);
    assert_eq!(outcome.status, Some(204));
    assert_eq!(outcome.error, None);

    let [got] = &receiver.requests()[..] else {
        panic!("{:?}", receiver.requests())
    };
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/hooks/deploy?env=prod");
    assert_eq!(got.header("content-type"), "application/json");
    assert_eq!(got.header("webhook-id"), "0f8b8c1e4d2a4b7f9a6e3c2d1b0a9f8e");
    let sent: DeploymentRequest = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(sent, deployment("APPLICATION"));
    assert_eq!(
        verify(
            &secret,
            got.header("webhook-id"),
            got.header("webhook-timestamp"),
            got.header("webhook-signature"),
            &got.body,
            unix_now(),
            DEFAULT_TOLERANCE_SECS
        ),
        Ok(())
    );
}

#[tokio::test]
async fn a_503_is_retried_and_the_next_attempt_delivered_with_the_same_id() {
    let receiver = receiver(|n| answer(if n == 0 { 503 } else { 200 })).await;
    let target = webhook(&receiver.url, &secret());
    let sender = sender(true);
    let first = deliver(&sender, &target, None).await;
    assert_eq!(first.verdict, Verdict::Retry);
    assert_eq!(first.status, Some(503));
    assert_eq!(
        first.error.as_deref(),
        Some("the target answered 503 Service Unavailable")
    );
    let second = deliver(&sender, &target, None).await;
    assert_eq!(second.verdict, Verdict::Delivered);
    let ids: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(ids, vec!["0f8b8c1e4d2a4b7f9a6e3c2d1b0a9f8e"; 2]);
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_after_it() {
    let receiver = receiver(|_| {
        Response::builder()
            .status(429)
            .header("retry-after", "120")
            .body(Body::empty())
            .unwrap()
    })
    .await;
    let outcome = to_webhook(&sender(true), &receiver.url).await;
    assert_eq!(outcome.verdict, Verdict::Retry);
    assert_eq!(outcome.retry_after, Some(Duration::from_secs(120)));
    assert_eq!(
        outcome.error.as_deref(),
        Some("the target answered 429 Too Many Requests")
    );
}

#[tokio::test]
async fn a_410_fails_at_once() {
    let receiver = receiver(|_| answer(410)).await;
    let outcome = to_webhook(&sender(true), &receiver.url).await;
    assert_eq!(said(&outcome), (Verdict::Failed, Some("the target answered 410 Gone")));
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let receiver = receiver(|n| {
        if n == 0 {
            Response::builder()
                .status(302)
                .header("location", "/elsewhere")
                .body(Body::empty())
                .unwrap()
        } else {
            answer(200)
        }
    })
    .await;
    let outcome = to_webhook(&sender(true), &format!("{}/hook", receiver.url)).await;
    assert_eq!(
        said(&outcome),
        (
            Verdict::Failed,
            Some("the target answered 302 Found: redirects are not followed")
        )
    );
    let paths: Vec<String> = receiver.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/hook"]);
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out_and_is_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    // Accept and hold every connection, never answering.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    // A short time limit, so that the test does not wait the real one.
    let sender = Sender::new(SenderConfig {
        timeout: Duration::from_millis(300),
        ..SenderConfig::new(true)
    })
    .unwrap();
    let outcome = to_webhook(&sender, &url).await;
    assert_eq!(outcome.status, None);
    assert_eq!(
        said(&outcome),
        (Verdict::Retry, Some("the target did not answer within 300 ms"))
    );
}

#[tokio::test]
async fn a_refused_connection_is_retried() {
    // A port nothing listens on any more.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let outcome = to_webhook(&sender(true), &format!("http://127.0.0.1:{port}/")).await;
    assert_eq!(outcome.verdict, Verdict::Retry);
    let error = outcome.error.unwrap();
    assert!(error.starts_with("could not connect to the target: "), "{error}");
    assert!(error.contains("refused"), "{error}");
}

#[tokio::test]
async fn an_https_url_gets_tls() {
    // A plain HTTP receiver cannot complete a TLS handshake: a connection error, retried, and
    // no request reaches it in clear text.
    let receiver = receiver(|_| answer(200)).await;
    let url = receiver.url.replace("http://127.0.0.1", "https://localhost");
    let outcome = to_webhook(&sender(true), &url).await;
    assert_eq!(outcome.verdict, Verdict::Retry);
    let error = outcome.error.unwrap();
    assert!(error.starts_with("could not connect to the target: "), "{error}");
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn qovery_gets_its_deploy_call() {
    let receiver = receiver(|_| answer(202)).await;
    let target = Target::Qovery {
        token: Secret::new("qov_t0ken"),
        api_url: receiver.url.clone(),
    };
    let outcome = deliver(&sender(true), &target, Some("7c5e8a9b-1b2c-4d3e-8f90-a1b2c3d4e5f6")).await;
    assert_eq!(outcome.verdict, Verdict::Delivered);
    let [got] = &receiver.requests()[..] else { panic!() };
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/application/7c5e8a9b-1b2c-4d3e-8f90-a1b2c3d4e5f6/deploy");
    assert_eq!(got.header("authorization"), "Token qov_t0ken");
    assert_eq!(got.header("content-type"), "application/json");
    assert!(got.header("user-agent").starts_with("autodeploy/"));
    assert_eq!(got.json(), json!({"git_commit_id": COMMIT}));
}

fn github_target(api_url: &str) -> TargetSpec {
    Target::GithubActions {
        token: Secret::new("github_pat_11TEST"),
        repository: "acme/deploy".to_owned(),
        workflow: "deploy.yml".to_owned(),
        git_ref: "main".to_owned(),
        api_url: api_url.to_owned(),
    }
}

/// GitHub's primary rate limit, answered as GitHub answers it: a 403 whose headers say the
/// limit is used up until a time; and a token refused for good, a 403 too.
#[tokio::test]
async fn a_github_rate_limit_answered_403_waits_for_its_reset() {
    let reset = unix_now() + 600;
    let receiver = receiver(move |n| {
        let refusal = if n == 0 {
            json!({"message": "API rate limit exceeded for installation ID 1.", "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"})
        } else {
            json!({"message": "Resource not accessible by personal access token"})
        };
        Response::builder()
            .status(403)
            .header("x-ratelimit-limit", "5000")
            .header("x-ratelimit-remaining", if n == 0 { "0" } else { "4999" })
            .header("x-ratelimit-reset", reset.to_string())
            .header("content-type", "application/json")
            .body(Body::from(refusal.to_string()))
            .unwrap()
    })
    .await;
    let target = github_target(&receiver.url);
    let limited = deliver(&sender(true), &target, None).await;
    assert_eq!(
        said(&limited),
        (
            Verdict::Retry,
            Some("the target answered 403 Forbidden: API rate limit exceeded for installation ID 1.")
        )
    );
    // Until the reset, whole: between 600 and 601 s from the answer.
    let wait = limited.retry_after.unwrap().as_secs();
    assert!((599..=601).contains(&wait), "{wait}");
    let refused = deliver(&sender(true), &target, None).await;
    assert_eq!(
        said(&refused),
        (
            Verdict::Failed,
            Some("the target answered 403 Forbidden: Resource not accessible by personal access token")
        )
    );
}

/// Qovery's 409 while the service is being deployed is waited for; a webhook's 409 fails.
#[tokio::test]
async fn a_qovery_deployment_in_progress_is_retried() {
    let receiver = receiver(|_| {
        Response::builder()
            .status(409)
            .header("content-type", "application/json")
            .body(Body::from(json!({"message": "Operation is in progress"}).to_string()))
            .unwrap()
    })
    .await;
    let qovery = Target::Qovery {
        token: Secret::new("qov_t0ken"),
        api_url: receiver.url.clone(),
    };
    let outcome = deliver(&sender(true), &qovery, Some("7c5e8a9b-1b2c-4d3e-8f90-a1b2c3d4e5f6")).await;
    assert_eq!(
        said(&outcome),
        (
            Verdict::Retry,
            Some("the target answered 409 Conflict: Operation is in progress")
        )
    );
    let webhook = to_webhook(&sender(true), &receiver.url).await;
    assert_eq!(webhook.verdict, Verdict::Failed);
}

#[tokio::test]
async fn github_actions_gets_its_workflow_dispatch() {
    let receiver = receiver(|_| answer(204)).await;
    let target = github_target(&format!("{}/api/v3", receiver.url));
    let outcome = deliver(&sender(true), &target, Some("api-prod")).await;
    assert_eq!(outcome.verdict, Verdict::Delivered);
    let [got] = &receiver.requests()[..] else { panic!() };
    assert_eq!(got.method, "POST");
    assert_eq!(
        got.path,
        "/api/v3/repos/acme/deploy/actions/workflows/deploy.yml/dispatches"
    );
    assert_eq!(got.header("authorization"), "Bearer github_pat_11TEST");
    assert_eq!(got.header("accept"), "application/vnd.github+json");
    assert_eq!(got.header("x-github-api-version"), "2022-11-28");
    assert!(got.header("user-agent").starts_with("autodeploy/"));
    assert_eq!(got.header("content-type"), "application/json");
    assert_eq!(
        got.json(),
        json!({"ref": "main", "inputs": {
            "deployment_id": "0f8b8c1e4d2a4b7f9a6e3c2d1b0a9f8e", "service_id": "api",
            "environment_id": "production", "git_commit_id": COMMIT, "external_id": "api-prod"}})
    );
}

#[tokio::test]
async fn a_targets_message_is_kept_without_the_token() {
    let receiver = receiver(|_| {
        Response::builder()
            .status(422)
            .header("content-type", "application/json")
            .body(Body::from(
                r#"{"message":"Unexpected inputs provided for Bearer github_pat_11TEST","documentation_url":"x"}"#,
            ))
            .unwrap()
    })
    .await;
    let target = github_target(&receiver.url);
    let outcome = deliver(&sender(true), &target, None).await;
    assert_eq!(
        said(&outcome),
        (
            Verdict::Failed,
            Some("the target answered 422 Unprocessable Entity: Unexpected inputs provided for [redacted]")
        )
    );
}

/// A webhook target's secret is never sent, but a target that repeats it (whole, or the key
/// after `whsec_`) does not get it into `last_error` either.
#[tokio::test]
async fn a_webhook_targets_message_is_kept_without_its_secret() {
    let secret = secret();
    let key = secret.strip_prefix("whsec_").unwrap().to_owned();
    let said_back = format!(r#"{{"error":"secret {secret} or key {key} refused"}}"#);
    let receiver = receiver(move |_| {
        Response::builder()
            .status(403)
            .header("content-type", "application/json")
            .body(Body::from(said_back.clone()))
            .unwrap()
    })
    .await;
    let outcome = deliver(&sender(true), &webhook(&receiver.url, &secret), None).await;
    assert_eq!(
        said(&outcome),
        (
            Verdict::Failed,
            Some("the target answered 403 Forbidden: secret [redacted] or key [redacted] refused")
        )
    );
}

/// A target that repeats what it was sent, in other cases than it was sent, gets none of it
/// into `last_error`: the token (whole header or alone), the webhook secret (whole or its
/// key) and the signature sent (whole or its value after `v1,`).
#[tokio::test]
async fn an_echoed_credential_is_redacted_whatever_its_case() {
    fn echo(got: &Captured, also: &[String]) -> Response {
        let mut sent = vec![got.header("authorization").to_owned()];
        let signature = got.header("webhook-signature").to_owned();
        sent.push(signature.strip_prefix("v1,").unwrap_or_default().to_owned());
        sent.push(signature);
        sent.extend(also.iter().cloned());
        let mut message = String::from("refused:");
        for value in sent.iter().filter(|v| !v.is_empty()) {
            let token = value.split_once(' ').map_or("", |(_, t)| t);
            for form in [value.to_uppercase(), value.to_lowercase(), token.to_uppercase()] {
                message.push(' ');
                message.push_str(&form);
            }
        }
        Response::builder()
            .status(400)
            .header("content-type", "application/json")
            .body(Body::from(json!({ "message": message }).to_string()))
            .unwrap()
    }
    let sender = sender(true);
    let qovery = receiver_seeing(|_, got| echo(got, &[])).await;
    let github = receiver_seeing(|_, got| echo(got, &[])).await;
    let secret = secret();
    let key = secret.strip_prefix("whsec_").unwrap().to_owned();
    let also = vec![secret.clone(), key.clone()];
    let hook = receiver_seeing(move |_, got| echo(got, &also)).await;
    let targets = [
        Target::Qovery {
            token: Secret::new("qov_Mixed.Case-Token_1"),
            api_url: qovery.url.clone(),
        },
        Target::GithubActions {
            token: Secret::new("github_pat_11MixedCase_token"),
            repository: "acme/deploy".to_owned(),
            workflow: "deploy.yml".to_owned(),
            git_ref: "main".to_owned(),
            api_url: github.url.clone(),
        },
        webhook(&hook.url, &secret),
    ];
    for (target, receiver) in targets.iter().zip([&qovery, &github, &hook]) {
        let outcome = deliver(&sender, target, Some("0b1c2d3e-5f60-4a7b-8c9d-0e1f2a3b4c5d")).await;
        assert_eq!(outcome.verdict, Verdict::Failed);
        let error = outcome.error.unwrap();
        assert!(
            error.starts_with("the target answered 400 Bad Request: refused: "),
            "{error}"
        );
        assert!(error.contains("[redacted]"), "{error}");
        let [got] = &receiver.requests()[..] else {
            panic!("{:?}", receiver.requests())
        };
        let signature = got.header("webhook-signature");
        let mut sent = target.secrets().iter().map(|s| s.to_owned()).collect::<Vec<_>>();
        sent.extend([signature, signature.strip_prefix("v1,").unwrap_or_default()]);
        let lowered = error.to_lowercase();
        for value in sent.into_iter().filter(|v| !v.is_empty()) {
            assert!(!lowered.contains(&value.to_lowercase()), "{value:?} in {error}");
        }
        // Bounded: the excerpt is at most 200 characters.
        let excerpt = error.trim_start_matches("the target answered 400 Bad Request: ");
        assert!(excerpt.chars().count() <= 201, "{error}");
    }
}

/// A TCP listener that counts the connections made to it.
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, connections)
}

#[tokio::test]
async fn private_addresses_are_refused_at_send_time_and_nothing_is_sent() {
    let (port, connections) = counting_listener().await;
    let sender = sender(false);
    // A name that resolves to the loopback address.
    let outcome = to_webhook(&sender, &format!("https://localhost:{port}/")).await;
    assert_eq!(
        said(&outcome),
        (
            Verdict::Failed,
            Some(
                "the target's host name resolves to an address that is not public, and private targets are not allowed"
            )
        )
    );
    // Literal addresses, IPv4 written in IPv6 too.
    for host in ["127.0.0.1", "[::ffff:127.0.0.1]"] {
        let outcome = to_webhook(&sender, &format!("https://{host}:{port}/")).await;
        assert_eq!(outcome.verdict, Verdict::Failed, "{host}");
        let error = outcome.error.unwrap();
        assert!(error.starts_with("the target's address "), "{error}");
    }
    // Plain http.
    let outcome = to_webhook(&sender, &format!("http://localhost:{port}/")).await;
    assert_eq!(
        said(&outcome),
        (
            Verdict::Failed,
            Some("the target URL must use https, and private targets are not allowed")
        )
    );
    assert_eq!(connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_same_name_is_reached_when_private_targets_are_allowed() {
    let receiver = receiver(|_| answer(200)).await;
    let url = receiver.url.replace("127.0.0.1", "localhost");
    let outcome = to_webhook(&sender(true), &url).await;
    assert_eq!(outcome.verdict, Verdict::Delivered, "{:?}", outcome.error);
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn hosts_are_checked_at_write_time() {
    assert!(matches!(
        check_host("localhost", false).await,
        Err(Refused::ResolvesTo(_))
    ));
    assert_eq!(
        check_host("127.0.0.1", false).await,
        Err(Refused::Address("127.0.0.1".parse().unwrap()))
    );
    assert_eq!(
        check_host("[::1]", false).await,
        Err(Refused::Address("::1".parse().unwrap()))
    );
    assert_eq!(check_host("8.8.8.8", false).await, Ok(()));
    assert_eq!(check_host("localhost", true).await, Ok(()));
}

#[test]
fn a_name_with_one_private_address_is_refused_whole() {
    let ips = |list: &[&str]| list.iter().map(|s| s.parse::<IpAddr>().unwrap()).collect::<Vec<_>>();
    assert_eq!(check_addresses(ips(&["8.8.8.8", "1.1.1.1"]), false), Ok(()));
    assert_eq!(
        check_addresses(ips(&["8.8.8.8", "10.0.0.1"]), false),
        Err(Refused::ResolvesTo("10.0.0.1".parse().unwrap()))
    );
    assert_eq!(check_addresses(ips(&["8.8.8.8", "10.0.0.1"]), true), Ok(()));
}

#[test]
fn credentials_of_a_request_are_its_sensitive_headers() {
    let target = Target::Qovery {
        token: Secret::new("qov_abc"),
        api_url: "https://api.qovery.com".to_owned(),
    };
    let request = build_request(&target, &deployment("APPLICATION"), Some("x"), 0).unwrap();
    assert_eq!(credentials(&request), vec!["Token qov_abc", "qov_abc"]);
    let request = build_request(
        &webhook("https://x.example.com/", &secret()),
        &deployment("APPLICATION"),
        None,
        0,
    )
    .unwrap();
    let signature = request.headers()["webhook-signature"].to_str().unwrap().to_owned();
    let base64 = signature.strip_prefix("v1,").unwrap().to_owned();
    assert_eq!(credentials(&request), vec![signature, base64]);
}

/// The reference implementation verifies what the sender signed: the Python `standardwebhooks`
/// package of the test virtualenv (`AUTODEPLOY_TEST_VENV`), through `tests/verify_webhook.py`.
#[tokio::test]
async fn the_reference_library_verifies_the_signature() {
    let Some(venv) = std::env::var_os("AUTODEPLOY_TEST_VENV") else {
        eprintln!("skipped: AUTODEPLOY_TEST_VENV is not set (scripts/test sets it to the test virtualenv)");
        return;
    };
    let receiver = receiver(|_| answer(200)).await;
    let secret = secret();
    let outcome = deliver(&sender(true), &webhook(&receiver.url, &secret), None).await;
    assert_eq!(outcome.verdict, Verdict::Delivered);
    let [got] = &receiver.requests()[..] else { panic!() };

    let dir = std::env::temp_dir().join(format!("autodeploy-standardwebhooks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body_path = dir.join("body");
    let headers_path = dir.join("headers.json");
    std::fs::write(&body_path, &got.body).unwrap();
    let headers: serde_json::Map<String, Value> = got
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_str().unwrap().to_owned())))
        .collect();
    std::fs::write(&headers_path, serde_json::to_vec(&headers).unwrap()).unwrap();

    let output = std::process::Command::new(std::path::Path::new(&venv).join("bin").join("python"))
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/verify_webhook.py"))
        .arg(&secret)
        .arg(&body_path)
        .arg(&headers_path)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec!["0f8b8c1e4d2a4b7f9a6e3c2d1b0a9f8e", "changed body refused"]
    );
}
