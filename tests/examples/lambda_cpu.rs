//! Wall time and CPU of the `push-webhook` Lambda binary on a push matching 1, 10, 100 and
//! 1,000 services, as `scripts/lambda-cpu` runs it: each NAME=PATH is started (a cold start)
//! on a local Lambda Runtime API (`autodeploy_tests::fake_lambda`) and handed one signed
//! GitHub push per group of services, its AWS calls going through the
//! [`LatencyStub`](autodeploy_tests::latency_stub::LatencyStub) (AWS-like latency on every
//! call, reads served by moto). PATH may be a wrapper that puts the function in a CPU-limited
//! cgroup before `exec`ing it: that is how the script gives it the share of a vCPU that a
//! Lambda function of a given memory size gets. Prints a Markdown table: per binary, each
//! push's wall time and CPU time (the process's, all threads). Init is not timed here (moving
//! a process into a cgroup takes milliseconds of its own): `scripts/coldstart` measures it.
//!
//! Usage: lambda_cpu NAME=PATH...   (AUTODEPLOY_TEST_MOTO_URL: the moto server)

use std::time::{Duration, Instant};

use autodeploy_tests::aws_fixture;
use autodeploy_tests::fake_lambda::{
    FakeLambdaRuntime, FunctionProcess, call_api, github_push_event, moto_env, response_body,
};
use autodeploy_tests::fixture_bytes;
use autodeploy_tests::latency_stub::{LatencyStub, seed, seeds};
use serde_json::{Value, json};

const SECRET: &str = "github-webhook-secret-0123456789";
/// The repository of the real fixture `github/gp-push.json` (branch `master`).
const FIXTURE_REPO: &str = "binkkatal/sample_app";
/// The pushes: one to a repository followed by this many services each.
const GROUPS: [usize; 4] = [1, 10, 100, 1000];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let binaries: Vec<(String, String)> = std::env::args()
        .skip(1)
        .map(|arg| {
            let (name, path) = arg.split_once('=').expect("usage: lambda_cpu NAME=PATH...");
            (name.to_owned(), path.to_owned())
        })
        .collect();
    assert!(!binaries.is_empty(), "usage: lambda_cpu NAME=PATH...");

    let fx = aws_fixture().await;
    let (store, queue) = (
        std::sync::Arc::new(fx.store.clone()),
        std::sync::Arc::new(fx.queue.clone()),
    );
    let (status, _) = call_api(
        store,
        queue,
        "PUT",
        "/organization/acme/webhook-secrets/github",
        Some(json!({"secret": SECRET})),
    )
    .await;
    assert_eq!(status, 204);
    for n in GROUPS {
        seed(&fx.store, &seeds("acme", &format!("group{n}"), &group_repo(n), n)).await;
    }
    let stub = LatencyStub::start(&autodeploy_tests::moto_url()).await;

    print!("| binary |");
    for n in GROUPS {
        print!(" push, {n} service{} |", if n == 1 { "" } else { "s" });
    }
    println!();
    println!("|---|{}", "---|".repeat(GROUPS.len()));
    for (name, path) in &binaries {
        let runtime = FakeLambdaRuntime::start().await;
        let mut env = runtime.env();
        env.extend(moto_env(&stub.url));
        env.push(("AUTODEPLOY_TABLE".to_owned(), fx.table.clone()));
        env.push(("AUTODEPLOY_QUEUE_URL".to_owned(), fx.queues.deployments.url.clone()));
        env.push(("RUST_LOG".to_owned(), "warn".to_owned()));
        let function = FunctionProcess::spawn(path, &env);
        runtime
            .first_poll(Duration::from_secs(60))
            .await
            .unwrap_or_else(|| panic!("{name} did not start: {}", function.logs()));
        print!("| {name} |");
        for n in GROUPS {
            let event = push_event(&group_repo(n), &format!("{name}-{n}"));
            let (cpu_before, started) = (process_cpu(function.id()), Instant::now());
            let answer = runtime.invoke(event).await.response();
            let (wall, cpu) = (started.elapsed(), process_cpu(function.id()) - cpu_before);
            let body = response_body(&answer);
            assert_eq!(answer["statusCode"], 202, "{name}, {n} services: {body}");
            let queued = body["queued"]
                .as_array()
                .map_or(0, |q| q.iter().filter(|d| d["status"] == "QUEUED").count());
            assert_eq!(queued, n, "{name}, {n} services: every deployment sent: {body}");
            print!(
                " {:.2} s ({:.0} ms CPU) |",
                wall.as_secs_f64(),
                cpu.as_secs_f64() * 1000.0
            );
        }
        println!();
    }
}

fn group_repo(n: usize) -> String {
    format!("acme/group-{n}")
}

/// The API Gateway event of a signed delivery of the real fixture, moved to `repo`.
fn push_event(repo: &str, delivery: &str) -> Value {
    let body = String::from_utf8(fixture_bytes("webhooks/github/gp-push.json"))
        .unwrap()
        .replace(FIXTURE_REPO, repo)
        .into_bytes();
    github_push_event(SECRET, &body, delivery)
}

/// CPU time used so far by process `pid` (all its threads), from its CPU-time clock.
fn process_cpu(pid: u32) -> Duration {
    let mut clock: libc::clockid_t = 0;
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: both pointers are to live locals of the right types.
    let ok = unsafe {
        libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) == 0 && libc::clock_gettime(clock, &mut now) == 0
    };
    assert!(ok, "reading the CPU clock of process {pid}");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}
