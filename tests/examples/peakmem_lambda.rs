//! Peak memory of the `push-webhook` Lambda binary handling the largest push Lambda can be
//! handed, as `scripts/peakmem` runs it: the binary runs on a local Lambda Runtime API
//! (`autodeploy_tests::fake_lambda`) and on moto (`AUTODEPLOY_TEST_MOTO_URL`), and receives the
//! real fixture `github/gp-push.json`, then the same push with its `commits` repeated until the
//! API Gateway event is just under Lambda's 6 MB synchronous invocation payload (API Gateway's
//! own cap, 10 MB, is above it: a bigger push never reaches the function). Prints its peak RSS
//! (VmHWM) after init, after the small push and after the large one.
//!
//! Usage: peakmem_lambda PATH-TO-push-webhook

use std::time::Duration;

use autodeploy_tests::aws_fixture;
use autodeploy_tests::fake_lambda::{
    FakeLambdaRuntime, FunctionProcess, call_api, github_push_event, moto_env, response_body,
};
use autodeploy_tests::fixture_bytes;
use serde_json::{Value, json};

const SECRET: &str = "github-webhook-secret-0123456789";
/// Lambda's synchronous invocation payload limit, bytes.
const LAMBDA_PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let exe = std::env::args()
        .nth(1)
        .expect("usage: peakmem_lambda PATH-TO-push-webhook");
    let fx = aws_fixture().await;
    let store = std::sync::Arc::new(fx.store.clone());
    let queue = std::sync::Arc::new(fx.queue.clone());
    let (status, _) = call_api(
        store.clone(),
        queue.clone(),
        "PUT",
        "/organization/acme/webhook-secrets/github",
        Some(json!({"secret": SECRET})),
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = call_api(
        store,
        queue,
        "PUT",
        "/organization/acme/services/api",
        Some(json!({
            "environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
            "git_repository": {"provider": "GITHUB", "url": "https://github.com/binkkatal/sample_app.git", "branch": "master"},
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    let runtime = FakeLambdaRuntime::start().await;
    let mut env = runtime.env();
    env.extend(moto_env(&autodeploy_tests::moto_url()));
    env.push(("AUTODEPLOY_TABLE".to_owned(), fx.table.clone()));
    env.push(("AUTODEPLOY_QUEUE_URL".to_owned(), fx.queues.deployments.url.clone()));
    env.push(("RUST_LOG".to_owned(), "warn".to_owned()));
    let function = FunctionProcess::spawn(&exe, &env);
    runtime
        .first_poll(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("push-webhook did not start: {}", function.logs()));

    println!("| moment | event | answer | peak RSS (VmHWM) | RSS |");
    println!("|---|---|---|---|---|");
    println!(
        "| started | — | — | {} | {} |",
        status_kib(function.id(), "VmHWM"),
        status_kib(function.id(), "VmRSS")
    );

    let push: Value = serde_json::from_slice(&fixture_bytes("webhooks/github/gp-push.json")).unwrap();
    for (moment, after, largest) in [
        (
            "after the fixture push",
            "1111111111111111111111111111111111111111",
            false,
        ),
        (
            "after the largest push",
            "2222222222222222222222222222222222222222",
            true,
        ),
    ] {
        let mut push = push.clone();
        push["after"] = after.into();
        let event = if largest {
            largest_event(&mut push, after)
        } else {
            event(&push, after)
        };
        let size = event.to_string().len();
        let answer = runtime.invoke(event).await.response();
        let body = response_body(&answer);
        println!(
            "| {moment} ({} commits) | {size} bytes | {} ({} queued) | {} | {} |",
            push["commits"].as_array().map_or(0, Vec::len),
            answer["statusCode"],
            body["queued"].as_array().map_or(0, Vec::len),
            status_kib(function.id(), "VmHWM"),
            status_kib(function.id(), "VmRSS"),
        );
    }
}

/// The API Gateway event of a signed delivery of `push`.
fn event(push: &Value, delivery: &str) -> Value {
    github_push_event(SECRET, &serde_json::to_vec(push).unwrap(), delivery)
}

/// `push` with its commit repeated as often as fits in one invocation payload.
fn largest_event(push: &mut Value, delivery: &str) -> Value {
    let commit = push["commits"][0].clone();
    let (mut low, mut high) = (1, LAMBDA_PAYLOAD_LIMIT / commit.to_string().len() + 1);
    while low < high {
        let mid = (low + high).div_ceil(2);
        push["commits"] = Value::Array(vec![commit.clone(); mid]);
        if event(push, delivery).to_string().len() <= LAMBDA_PAYLOAD_LIMIT - 1024 {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    push["commits"] = Value::Array(vec![commit; low]);
    event(push, delivery)
}

fn status_kib(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_owned))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or_else(|| "?".to_owned(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0))
}
