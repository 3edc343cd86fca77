//! The `relay` binary as Lambda runs it: a scheduled event from the Lambda Runtime API (a
//! stand-in), state on moto.

use autodeploy_tests::functions::{function_env, function_exe};
use std::path::PathBuf;
use std::sync::Arc;

use autodeploy_api::aws::SqsQueue;
use autodeploy_tests::fake_lambda::{
    FakeLambdaRuntime, FunctionProcess, call_api, call_api_with, github_app_for_the_push_fixture, start_up_failure,
};
use autodeploy_tests::{aws_fixture, moto_url, unique_name};
use autodeploy_tests::{github_signature, receive_all};
use serde_json::{Value, json};

/// The function's executable.
fn exe() -> PathBuf {
    function_exe("relay")
}
const SECRET: &str = "github-webhook-secret-0123456789";

#[tokio::test]
async fn without_its_queue_it_stops_naming_the_variable() {
    let logs = start_up_failure(exe(), &[("AUTODEPLOY_TABLE", "t")]).await;
    assert!(logs.contains("AUTODEPLOY_QUEUE_URL"), "{logs}");
}

fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-26T12:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/autodeploy-relay"],
        "detail": {}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_what_was_recorded_while_sqs_was_down() {
    let fx = aws_fixture().await;
    // Record a deployment while the queue URL names no queue: it stays PENDING.
    let down = Arc::new(SqsQueue::new(
        fx.sqs.clone(),
        format!("{}/123456789012/{}.fifo", moto_url(), unique_name("missing")),
    ));
    let store = Arc::new(fx.store.clone());
    let push = github_app_for_the_push_fixture(store.clone(), down.clone(), SECRET).await;
    let body = serde_json::to_vec(&push).unwrap();
    let signature = github_signature(SECRET, &body);
    let (status, response) = call_api_with(
        store.clone(),
        down.clone(),
        "POST",
        "/organization/acme/webhooks/github",
        &[
            ("content-type", "application/json"),
            ("x-github-event", "push"),
            ("x-github-delivery", "delivery-while-down"),
            ("x-hub-signature-256", &signature),
        ],
        Some(body),
    )
    .await;
    assert_eq!(status, 202, "{response}");
    assert_eq!(response["queued"][0]["status"], "PENDING", "{response}");
    let deployment_id = response["queued"][0]["deployment_id"].as_str().unwrap().to_owned();
    let newest_status = async || {
        let (_, log) = call_api(
            store.clone(),
            down.clone(),
            "GET",
            "/organization/acme/deployments",
            None,
        )
        .await;
        log["items"][0]["status"].clone()
    };
    assert_eq!(newest_status().await, "PENDING");

    // The relay, with the working queue.
    let runtime = FakeLambdaRuntime::start().await;
    let vars = function_env(&fx, &runtime, &[("AUTODEPLOY_QUEUE_URL", &fx.queues.deployments.url)]);
    let function = FunctionProcess::spawn(exe(), &vars);
    let report = runtime.invoke(scheduled_event()).await.response();
    assert_eq!(report, json!({"pending": 1, "sent": 1}), "{}", function.logs());
    let messages = receive_all(&fx.sqs, &fx.queues.deployments.url).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].group, "acme/api");
    assert_eq!(messages[0].dedup, deployment_id);
    assert_eq!(newest_status().await, "QUEUED");

    // The next minute: nothing left.
    let report = runtime.invoke(scheduled_event()).await.response();
    assert_eq!(report, json!({"pending": 0, "sent": 0}));
    assert!(receive_all(&fx.sqs, &fx.queues.deployments.url).await.is_empty());

    // Each run's report is a JSON log line.
    let logs = function.logs();
    let reports: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "relay")
        .collect();
    assert_eq!(reports.len(), 2, "{logs}");
    assert_eq!(reports[0]["fields"]["pending"], 1, "{logs}");
    assert_eq!(reports[0]["fields"]["sent"], 1, "{logs}");
}
