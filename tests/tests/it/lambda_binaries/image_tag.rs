//! The `image-tag` binary as Lambda runs it: API Gateway requests and EventBridge ECR events
//! from the Lambda Runtime API (a stand-in), state on moto.

use autodeploy_tests::functions::{function_env, function_exe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use autodeploy_tests::fake_lambda::{
    ECR_REGISTRY, FakeLambdaRuntime, FunctionProcess, call_api, container_deploy_event, ecr_event, env_vars,
    http_api_event, response_body, start_up_failure,
};
use autodeploy_tests::receive_all;
use autodeploy_tests::{AwsFixture, aws_fixture};
use serde_json::{Value, json};

/// The function's executable.
fn exe() -> PathBuf {
    function_exe("image-tag")
}
const ADMIN: &str = "image-tag-admin-token-0123456789";
const DOCKERHUB_SECRET: &str = "dockerhub-secret-in-the-url-0123456789";

/// The function's environment on `fx`, served by `runtime`, plus `extra`.
fn image_tag_env(fx: &AwsFixture, runtime: &FakeLambdaRuntime, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars = function_env(
        fx,
        runtime,
        &[
            ("AUTODEPLOY_QUEUE_URL", &fx.queues.deployments.url),
            ("RUST_LOG", "trace"),
        ],
    );
    vars.extend(env_vars(extra));
    vars
}

async fn ecr_container(fx: &AwsFixture) {
    let (status, body) = call_api(
        Arc::new(fx.store.clone()),
        Arc::new(fx.queue.clone()),
        "PUT",
        "/organization/acme/services/api",
        Some(json!({
            "environment_id": "production", "kind": "CONTAINER", "auto_deploy": true,
            "image": {"registry": ECR_REGISTRY, "image_name": "team/api", "tag": "1.3.0"},
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn without_an_admin_token_it_stops_naming_the_variables() {
    let logs = start_up_failure(
        exe(),
        &[
            ("AUTODEPLOY_TABLE", "t"),
            ("AUTODEPLOY_QUEUE_URL", "http://127.0.0.1:9/q.fifo"),
        ],
    )
    .await;
    assert!(logs.contains("AUTODEPLOY_ADMIN_TOKEN"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_ecr_pushes_and_serves_http() {
    let fx = aws_fixture().await;
    ecr_container(&fx).await;
    let runtime = FakeLambdaRuntime::start().await;
    // The admin token from a secret that does not exist: it is read only when a request
    // needs it, so ECR events never touch it.
    let vars = image_tag_env(
        &fx,
        &runtime,
        &[
            (
                "AUTODEPLOY_ADMIN_TOKEN_SECRET_ARN",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:none",
            ),
            ("AUTODEPLOY_ECR_ORGANIZATION", "acme"),
            ("AUTODEPLOY_METRICS", "emf"),
            ("AUTODEPLOY_STACK", "test-stack"),
        ],
    );
    let function = FunctionProcess::spawn(exe(), &vars);

    let outcome = runtime.invoke(ecr_event("PUSH", "team/api", "1.4.0")).await.response();
    assert_eq!(outcome["status"], 202, "{outcome}\n{}", function.logs());
    assert_eq!(outcome["queued"][0]["service_id"], "api", "{outcome}");
    let messages = receive_all(&fx.sqs, &fx.queues.deployments.url).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].group, "acme/api");
    assert_eq!(messages[0].body["trigger"]["source"], "ECR");
    assert_eq!(messages[0].body["image_tag"], "1.4.0");

    let deleted = runtime
        .invoke(ecr_event("DELETE", "team/api", "1.4.0"))
        .await
        .response();
    assert_eq!(deleted["ignored"], "UNSUPPORTED_EVENT", "{deleted}");

    let unknown = runtime.invoke(json!({"Records": []})).await.error();
    assert_eq!(unknown["errorType"], "UnsupportedEvent", "{unknown}");

    // An HTTP request that needs the admin token: the secret is missing, so 503, not a crash.
    let deploy = container_deploy_event("acme", "Bearer some-token", ("team/api", "1.5.0"), false);
    let response = runtime.invoke(deploy).await.response();
    assert_eq!(response["statusCode"], 503, "{response}");
    assert_eq!(response_body(&response)["error"]["code"], "UNAVAILABLE");
    assert!(runtime.init_errors().is_empty());

    // One EMF line per delivery, ECR events included: the push queued one deployment, the
    // delete was ignored, the event of no known shape is no delivery, and the HTTP request
    // failed.
    let lines: Vec<Value> = function
        .logs()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line.get("_aws").is_some())
        .collect();
    let summary: Vec<(Value, Value, Value, Value, Value, Value)> = lines
        .iter()
        .map(|l| {
            let field = |name: &str| l[name].clone();
            (
                field("source"),
                field("status"),
                field("Queued"),
                field("Ignored"),
                field("Failed"),
                field("Stack"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                json!("ECR"),
                json!(202),
                json!(1),
                json!(0),
                json!(0),
                json!("test-stack")
            ),
            (
                json!("ECR"),
                json!(200),
                json!(0),
                json!(1),
                json!(0),
                json!("test-stack")
            ),
            (
                json!("API"),
                json!(503),
                json!(0),
                json!(0),
                json!(1),
                json!("test-stack")
            ),
        ],
        "{lines:#?}"
    );
    assert_eq!(lines[0]["organization"], "acme");
    assert_eq!(lines[0]["route"], "EventBridge aws.ecr Image Action");
    assert!(lines[0]["request_id"].is_string(), "{}", lines[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_ecr_organization_http_still_works() {
    let fx = aws_fixture().await;
    ecr_container(&fx).await;
    let (status, _) = call_api(
        Arc::new(fx.store.clone()),
        Arc::new(fx.queue.clone()),
        "PUT",
        "/organization/acme/webhook-secrets/dockerhub",
        Some(json!({"secret": DOCKERHUB_SECRET})),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call_api(
        Arc::new(fx.store.clone()),
        Arc::new(fx.queue.clone()),
        "PUT",
        "/organization/acme/services/hub",
        Some(json!({
            "environment_id": "production", "kind": "CONTAINER", "auto_deploy": true,
            "image": {"image_name": "acme/hub", "tag": "1.0.0"},
        })),
    )
    .await;
    assert_eq!(status, 201);
    let runtime = FakeLambdaRuntime::start().await;
    let function = FunctionProcess::spawn(
        exe(),
        &image_tag_env(&fx, &runtime, &[("AUTODEPLOY_ADMIN_TOKEN", ADMIN)]),
    );
    // Unset is the stack without ECR (the template's default): nothing to warn about at
    // every cold start.
    assert!(
        runtime.first_poll(Duration::from_secs(20)).await.is_some(),
        "{}",
        function.logs()
    );
    assert!(
        !function.logs().contains("AUTODEPLOY_ECR_ORGANIZATION"),
        "{}",
        function.logs()
    );

    let refused = runtime.invoke(ecr_event("PUSH", "team/api", "1.4.0")).await.error();
    assert_eq!(
        refused["errorType"],
        "EcrOrganizationNotConfigured",
        "{refused}\n{}",
        function.logs()
    );
    assert!(
        refused["errorMessage"]
            .as_str()
            .unwrap_or("")
            .contains("AUTODEPLOY_ECR_ORGANIZATION"),
        "{refused}"
    );

    let deploy = container_deploy_event("acme", &format!("Token {ADMIN}"), ("team/api", "1.4.0"), true);
    let response = runtime.invoke(deploy).await.response();
    assert_eq!(response["statusCode"], 202, "{response}\n{}", function.logs());

    // A Docker Hub notification: its URL carries the secret, which no log line shows.
    let push = serde_json::json!({
        "push_data": {"tag": "1.1.0", "pusher": "ci"},
        "repository": {"repo_name": "acme/hub"}
    });
    let hook = http_api_event(
        "POST",
        &format!("/organization/acme/registry-webhooks/dockerhub/{DOCKERHUB_SECRET}"),
        &[("content-type", "application/json")],
        Some(push.to_string().as_bytes()),
        false,
    );
    let response = runtime.invoke(hook).await.response();
    assert_eq!(response["statusCode"], 202, "{response}\n{}", function.logs());
    assert_eq!(receive_all(&fx.sqs, &fx.queues.deployments.url).await.len(), 2);

    let logs = function.logs();
    assert!(!logs.contains(DOCKERHUB_SECRET), "{logs}");
    assert!(logs.contains("/registry-webhooks/dockerhub/{secret}"), "{logs}");
    assert!(
        logs.contains("AUTODEPLOY_ECR_ORGANIZATION"),
        "the refused event logs the missing setting: {logs}"
    );
}

/// An invalid organization is a misconfiguration: logged at start-up, and ECR events refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_ecr_organization_is_logged_at_start() {
    let fx = aws_fixture().await;
    let runtime = FakeLambdaRuntime::start().await;
    let function = FunctionProcess::spawn(
        exe(),
        &image_tag_env(
            &fx,
            &runtime,
            &[
                ("AUTODEPLOY_ADMIN_TOKEN", ADMIN),
                ("AUTODEPLOY_ECR_ORGANIZATION", "not an organization"),
            ],
        ),
    );
    assert!(
        runtime.first_poll(Duration::from_secs(20)).await.is_some(),
        "{}",
        function.logs()
    );
    let logs = function.logs();
    assert!(
        logs.contains("ECR events are not configured") && logs.contains("is not an organization id"),
        "{logs}"
    );
    let refused = runtime.invoke(ecr_event("PUSH", "team/api", "1.4.0")).await.error();
    assert_eq!(refused["errorType"], "EcrOrganizationNotConfigured", "{refused}");
}
