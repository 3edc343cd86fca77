//! Cold-start time of Lambda function binaries, as `scripts/coldstart` runs it: the time from
//! starting the process to its first `GET /2018-06-01/runtime/invocation/next` on a local
//! Lambda Runtime API (`autodeploy_tests::fake_lambda`), which is when Lambda considers a
//! function's init done. Each binary is started `--runs` times, the binaries taking turns so
//! that a neighbour's load spreads over all of them; each start is a fresh process on a
//! fresh runtime API, killed once it has polled.
//!
//! The functions get what they need to start (`AUTODEPLOY_TABLE`, `AUTODEPLOY_QUEUE_URL`, the
//! admin token's secret ARN, region and static credentials) with every AWS endpoint pointed
//! at a local listener that counts connections: init must not call AWS, and a function that
//! connects there during init (or within 200 ms after its first poll) fails the run.
//!
//! Each binary is first copied into a fresh directory and started from there, as Lambda starts
//! a function from the files it unpacked from the deployment package: a function started
//! straight from the linker's output file starts slower than the same bytes written by a copy
//! or an unzip (docs/cold-start.md), which would measure how the file was written rather than
//! the function.
//!
//! Usage: coldstart [--runs N] [--env KEY=VALUE]... [--env-for NAME KEY=VALUE]... NAME=PATH...
//! (prints a Markdown table; the first NAME is the baseline the others are compared with;
//! `--env` adds a variable to every start, e.g. `SSL_CERT_FILE` to try another trust store,
//! and `--env-for` to the starts of one NAME, e.g. the step at which
//! `functions/push-webhook/examples/init_steps.rs` stops)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use autodeploy_tests::fake_lambda::{FakeLambdaRuntime, FunctionProcess, moto_env};

/// How long a start may take before the run fails.
const INIT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a function is watched after its first poll for late AWS calls.
const GRACE: Duration = Duration::from_millis(200);

struct Binary {
    name: String,
    path: String,
    /// Variables for this binary's starts only (`--env-for`).
    env: Vec<(String, String)>,
    init_ms: Vec<f64>,
    /// Peak resident memory (VmHWM) at the first poll, KiB.
    hwm_kib: Vec<u64>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut runs = 20;
    let mut binaries = Vec::new();
    let mut extra_env = Vec::new();
    let mut env_for: Vec<(String, String, String)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--runs" {
            runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N");
        } else if arg == "--env" {
            let pair = args.next().expect("--env KEY=VALUE");
            let (key, value) = pair.split_once('=').expect("--env KEY=VALUE");
            extra_env.push((key.to_owned(), value.to_owned()));
        } else if arg == "--env-for" {
            let name = args.next().expect("--env-for NAME KEY=VALUE");
            let pair = args.next().expect("--env-for NAME KEY=VALUE");
            let (key, value) = pair.split_once('=').expect("--env-for NAME KEY=VALUE");
            env_for.push((name, key.to_owned(), value.to_owned()));
        } else if let Some((name, path)) = arg.split_once('=') {
            binaries.push(Binary {
                name: name.to_owned(),
                path: path.to_owned(),
                env: Vec::new(),
                init_ms: Vec::new(),
                hwm_kib: Vec::new(),
            });
        } else {
            panic!("unknown argument {arg}: usage: coldstart [--runs N] NAME=PATH...");
        }
    }
    assert!(!binaries.is_empty(), "usage: coldstart [--runs N] NAME=PATH...");
    for (name, key, value) in env_for {
        let binary = binaries
            .iter_mut()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("--env-for {name}: no binary of that name"));
        binary.env.push((key, value));
    }

    // Started from copies, as from an unpacked deployment package (above).
    let unpacked = tempfile::tempdir().expect("a directory for the copies");
    for binary in &mut binaries {
        let copy = unpacked.path().join(&binary.name);
        std::fs::copy(&binary.path, &copy).unwrap_or_else(|e| panic!("copying {}: {e}", binary.path));
        binary.path = copy.to_string_lossy().into_owned();
    }

    // Every AWS endpoint: a listener that only counts connections.
    let aws = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a listener");
    let aws_url = format!("http://{}", aws.local_addr().expect("its address"));
    let aws_connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&aws_connections);
    tokio::spawn(async move {
        while let Ok((stream, _)) = aws.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });

    // One unmeasured start of each first: the binaries' pages into the page cache.
    for round in 0..=runs {
        for binary in &mut binaries {
            let env: Vec<_> = extra_env.iter().chain(&binary.env).cloned().collect();
            let (init, hwm) = start_once(&binary.path, &aws_url, &aws_connections, &binary.name, &env).await;
            if round > 0 {
                binary.init_ms.push(init.as_secs_f64() * 1000.0);
                binary.hwm_kib.push(hwm);
            }
        }
    }

    let baseline = median(&binaries[0].init_ms);
    println!("\n{runs} starts each; init = process start to first `GET …/invocation/next`; peak RSS at that moment\n");
    println!(
        "| binary | size | init median | init p90 | init min | median vs {} | peak RSS at init |",
        binaries[0].name
    );
    println!("|---|---|---|---|---|---|---|");
    for binary in &binaries {
        let size = std::fs::metadata(&binary.path).map(|m| m.len()).unwrap_or(0);
        let mut hwm = binary.hwm_kib.clone();
        hwm.sort_unstable();
        println!(
            "| {} | {:.1} MiB | {:.2} ms | {:.2} ms | {:.2} ms | {:.2}× | {:.1} MiB |",
            binary.name,
            size as f64 / 1024.0 / 1024.0,
            median(&binary.init_ms),
            percentile(&binary.init_ms, 0.9),
            percentile(&binary.init_ms, 0.0),
            median(&binary.init_ms) / baseline,
            hwm[hwm.len() / 2] as f64 / 1024.0,
        );
    }
    println!(
        "\nAWS endpoint connections during init and {} ms after: {}",
        GRACE.as_millis(),
        aws_connections.load(Ordering::SeqCst)
    );
}

/// One cold start: the time to the first poll and the peak RSS then.
async fn start_once(
    path: &str,
    aws_url: &str,
    aws_connections: &AtomicUsize,
    name: &str,
    extra_env: &[(String, String)],
) -> (Duration, u64) {
    let runtime = FakeLambdaRuntime::start().await;
    let mut env = runtime.env();
    env.extend(moto_env(aws_url));
    env.extend(
        [
            ("AUTODEPLOY_TABLE", "autodeploy".to_owned()),
            (
                "AUTODEPLOY_QUEUE_URL",
                format!("{aws_url}/123456789012/deployments.fifo"),
            ),
            ("AUTODEPLOY_PULL_QUEUE_URL", format!("{aws_url}/123456789012/pull.fifo")),
            (
                "AUTODEPLOY_ADMIN_TOKEN_SECRET_ARN",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:autodeploy-admin".to_owned(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v)),
    );
    env.extend(extra_env.iter().cloned());
    let before = aws_connections.load(Ordering::SeqCst);
    let started = Instant::now();
    let process = FunctionProcess::spawn(path, &env);
    let Some(polled) = runtime.first_poll(INIT_TIMEOUT).await else {
        panic!(
            "{name} did not poll within {INIT_TIMEOUT:?}; its output:\n{}",
            process.logs()
        );
    };
    let hwm = vm_hwm_kib(process.id());
    tokio::time::sleep(GRACE).await;
    assert!(
        runtime.init_errors().is_empty(),
        "{name} reported an init error: {:?}",
        runtime.init_errors()
    );
    assert_eq!(
        aws_connections.load(Ordering::SeqCst),
        before,
        "{name} connected to AWS during its init; its output:\n{}",
        process.logs()
    );
    (polled.duration_since(started), hwm)
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

/// The nearest-rank percentile (`p` in 0..=1).
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
