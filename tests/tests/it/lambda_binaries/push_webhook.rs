//! The `push-webhook` binary as Lambda runs it: configuration from the environment, events from
//! the Lambda Runtime API (a stand-in), state on moto.

use autodeploy_tests::functions::{function_env, function_exe};
use std::path::PathBuf;
use std::sync::Arc;

use autodeploy_tests::aws_fixture;
use autodeploy_tests::fake_lambda::{
    FakeLambdaRuntime, FunctionProcess, github_app_for_the_push_fixture, http_api_event, response_body,
    start_up_failure,
};
use autodeploy_tests::{github_signature, receive_all};

/// The function's executable.
fn exe() -> PathBuf {
    function_exe("push-webhook")
}
const SECRET: &str = "github-webhook-secret-0123456789";

#[tokio::test]
async fn without_its_table_it_stops_naming_the_variable() {
    let logs = start_up_failure(exe(), &[]).await;
    assert!(logs.contains("AUTODEPLOY_TABLE"), "{logs}");
}

#[tokio::test]
async fn outside_lambda_it_stops_with_a_message() {
    // No admin token configured: this function never needs one.
    let logs = start_up_failure(
        exe(),
        &[
            ("AUTODEPLOY_TABLE", "t"),
            ("AUTODEPLOY_QUEUE_URL", "http://127.0.0.1:9/q.fifo"),
        ],
    )
    .await;
    assert!(logs.contains("AWS_LAMBDA_RUNTIME_API"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_push_deliveries() {
    let fx = aws_fixture().await;
    let push = github_app_for_the_push_fixture(Arc::new(fx.store.clone()), Arc::new(fx.queue.clone()), SECRET).await;

    let runtime = FakeLambdaRuntime::start().await;
    let vars = function_env(
        &fx,
        &runtime,
        &[
            ("AUTODEPLOY_QUEUE_URL", &fx.queues.deployments.url),
            // Even at TRACE, no raw event reaches the log.
            ("RUST_LOG", "trace"),
        ],
    );
    let function = FunctionProcess::spawn(exe(), &vars);

    let body = serde_json::to_vec(&push).unwrap();
    let event = http_api_event(
        "POST",
        "/organization/acme/webhooks/github",
        &[
            ("content-type", "application/json"),
            ("x-github-event", "push"),
            ("x-github-delivery", "delivery-1"),
            ("x-hub-signature-256", &github_signature(SECRET, &body)),
        ],
        Some(&body),
        true,
    );
    let response = runtime.invoke(event).await.response();
    assert_eq!(response["statusCode"], 202, "{response}\n{}", function.logs());
    let reply = response_body(&response);
    assert_eq!(reply["queued"][0]["status"], "QUEUED", "{reply}");

    let messages = receive_all(&fx.sqs, &fx.queues.deployments.url).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].group, "acme/api");
    assert_eq!(messages[0].dedup, reply["queued"][0]["deployment_id"].as_str().unwrap());

    // The settings API is not served here.
    let list = http_api_event("GET", "/organization/acme/services", &[], None, false);
    let response = runtime.invoke(list).await.response();
    assert_eq!(response["statusCode"], 404, "{response}");

    let logs = function.logs();
    assert!(!logs.contains("raw JSON event"), "{logs}");
    // The event's host header and request context are in no log line, nor the webhook secret
    // the SDK read from DynamoDB (at TRACE, the SDK would log response bodies).
    assert!(!logs.contains("execute-api"), "{logs}");
    assert!(!logs.contains(SECRET), "{logs}");
    assert!(
        logs.contains("\"level\":\"DEBUG\""),
        "RUST_LOG=trace took effect: {logs}"
    );
    assert!(runtime.init_errors().is_empty());
}
