//! The `dispatcher` binary as Lambda runs it: SQS batches from the Lambda Runtime API (a
//! stand-in), state and queues on moto, deploy targets on local HTTPS receivers trusted
//! through `SSL_CERT_FILE`.

use std::path::PathBuf;

use autodeploy_api::store::DeploymentLog;
use autodeploy_core::deployment::DeploymentStatus;
use autodeploy_tests::aws_fixture;
use autodeploy_tests::fake_lambda::{FakeLambdaRuntime, FunctionProcess, start_up_failure};
use autodeploy_tests::functions::{function_env, function_exe};
use serde_json::{Value, json};

use crate::aws_dispatcher::{TwoGroups, message_of, next_batch, two_groups};
use crate::https_client::test_ca_file;

fn exe() -> PathBuf {
    function_exe("dispatcher")
}

#[tokio::test]
async fn without_its_pull_queue_it_stops_naming_the_variable() {
    let logs = start_up_failure(exe(), &[("AUTODEPLOY_TABLE", "t"), ("AUTODEPLOY_QUEUE_URL", "q")]).await;
    assert!(logs.contains("AUTODEPLOY_PULL_QUEUE_URL"), "{logs}");
}

/// Two groups in one batch: the first message of one fails (503) and is reported with its
/// later group-mate; the other group is delivered. The answer is Lambda's partial batch
/// response, and the invocation prints its EMF line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_the_failed_group_and_delivers_the_other() {
    let fx = aws_fixture().await;
    let TwoGroups {
        api: busy,
        web: ok,
        older: first,
        web_deployment: web,
        newer: second,
    } = two_groups(&fx, &[503], &[200]).await;
    let (_, event) = next_batch(&fx).await;

    let runtime = FakeLambdaRuntime::start().await;
    let ca = test_ca_file();
    let vars = function_env(
        &fx,
        &runtime,
        &[
            ("AUTODEPLOY_QUEUE_URL", &fx.queues.deployments.url),
            ("AUTODEPLOY_PULL_QUEUE_URL", &fx.queues.pull.url),
            ("AUTODEPLOY_TARGETS_ALLOW_PRIVATE", "true"),
            ("AUTODEPLOY_METRICS", "emf"),
            ("AUTODEPLOY_STACK", "test-stack"),
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
        ],
    );
    let function = FunctionProcess::spawn(exe(), &vars);
    let response = runtime.invoke(event.clone()).await.response();
    assert_eq!(
        response,
        json!({"batchItemFailures": [
            {"itemIdentifier": message_of(&event, &first)},
            {"itemIdentifier": message_of(&event, &second)},
        ]}),
        "{}",
        function.logs()
    );
    for (request, status) in [
        (&web, DeploymentStatus::Delivered),
        (&first, DeploymentStatus::Queued),
        (&second, DeploymentStatus::Queued),
    ] {
        let record = fx.store.get_deployment("acme", &request.deployment_id).await.unwrap();
        assert_eq!(record.map(|r| r.status), Some(status), "{}", request.service_id);
    }
    assert_eq!(busy.received().len(), 1);
    assert_eq!(ok.received().len(), 1);

    let logs = function.logs();
    let emf: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 1, "{logs}");
    assert_eq!(emf[0]["Stack"], "test-stack");
    assert_eq!(emf[0]["DeploymentsDelivered"], 1);
    assert_eq!(emf[0]["DeploymentsRetried"], 1);
    assert!(!logs.contains("whsec_"), "a secret reached the logs: {logs}");
}
