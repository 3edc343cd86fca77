//! Cost growth on the AWS stack: what one git push costs in AWS API calls must depend on the
//! services it matches, never on how many services the table holds. Matching is one query on
//! the `gsi1` index (organization + normalized repository), never a scan.
//!
//! The router runs in-process on the real DynamoDB and SQS adapters, on moto, each through a
//! counting proxy (`autodeploy_tests::fault_proxy`) that tallies requests per `X-Amz-Target`.
//! Services are seeded with `DynamoStore::put_service`, the very write the settings API makes
//! (the item layout cannot drift from the store's), 32 at a time, directly on moto so that the
//! seeding is not counted.
//!
//! Wall times on moto say little (it serves one request at a time, in Python, and its queries
//! and transactions cost time in proportion to the table), so each push is also timed through
//! [`LatencyStub`] (`autodeploy_tests::latency_stub`), which gives every call an AWS-like latency and answers the deployment
//! writes itself.
//!
//! `push_cost_does_not_grow_with_stored_services` (10 vs 500 stored services) runs in the
//! default suite. `push_cost_10_vs_10000_services` is `#[ignore]`d (seeding 10,000 services on
//! moto takes about two minutes): `scripts/cost` runs it, and it also times pushes matching 1,
//! 10, 100 and 1,000 services (README, "Proof: cost growth and cold start").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::aws_stack::AwsStack as Stack;
use autodeploy_api::aws::{DynamoStore, MARKS_PER_TRANSACTION, PUSH_RECORDS_PER_TRANSACTION, SqsQueue};
use autodeploy_tests::fault_proxy::action;
use autodeploy_tests::latency_stub::{LatencyStub, Seed, seed, seeds, unrelated};
use autodeploy_tests::{Api, fixture};
use http::StatusCode;

/// The repository of the real fixture `github/gp-push.json` (branch `master`).
const FIXTURE_REPO: &str = "binkkatal/sample_app";
const SCAN: &str = "DynamoDB_20120810.Scan";

impl Stack {
    async fn seed(&self, seeds: &[Seed]) {
        // Directly on moto: the seeding is not counted.
        seed(&self.aws.fixture.store, seeds).await;
    }

    /// One signed push of the real fixture, moved to `repo`: the AWS calls it made (store and
    /// queue, per `X-Amz-Target`), how many deployments it queued, and how long it took.
    async fn counted_push(&self, repo: &str, delivery: &str) -> Push {
        self.aws.store_proxy.reset_counts();
        self.aws.queue_proxy.reset_counts();
        let (queued, pending, elapsed, cpu) = timed_push(&self.api, repo, delivery).await;
        let mut calls = BTreeMap::new();
        for (action, count) in self
            .aws
            .store_proxy
            .counts()
            .into_iter()
            .chain(self.aws.queue_proxy.counts())
        {
            assert_eq!(count.failed, 0, "{action}");
            *calls.entry(action).or_default() += count.requests;
        }
        Push {
            calls,
            queued,
            pending,
            elapsed,
            cpu,
        }
    }

    /// The router on the same table and queue, but through a [`LatencyStub`].
    async fn with_latency(&self) -> (LatencyStub, Api) {
        let stub = LatencyStub::start(&autodeploy_tests::moto_url()).await;
        let config = autodeploy_tests::aws_sdk_config(&stub.url).await;
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), &self.aws.fixture.table);
        let queue = SqsQueue::new(
            aws_sdk_sqs::Client::new(&config),
            &self.aws.fixture.queues.deployments.url,
        );
        (stub, Api::on(Arc::new(store), Arc::new(queue)))
    }
}

/// One signed push of the real fixture, moved to `repo`, through `api`: how many deployments
/// it sent to the queue (`QUEUED`) and left for the relay (`PENDING`), and how long it took.
async fn timed_push(api: &Api, repo: &str, delivery: &str) -> (usize, usize, Duration, Duration) {
    let body = String::from_utf8(fixture("github/gp-push.json"))
        .unwrap()
        .replace(FIXTURE_REPO, repo);
    let (started, cpu_before) = (Instant::now(), process_cpu());
    let r = api.push("acme", "github", body.as_bytes(), delivery).await;
    let (elapsed, cpu) = (started.elapsed(), process_cpu().saturating_sub(cpu_before));
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body["error"]);
    let statuses: Vec<&str> = r.body["queued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["status"].as_str().unwrap())
        .collect();
    let queued = statuses.iter().filter(|s| **s == "QUEUED").count();
    let pending = statuses.iter().filter(|s| **s == "PENDING").count();
    assert_eq!(queued + pending, statuses.len());
    (queued, pending, elapsed, cpu)
}

/// CPU time this process has used (user + system, all threads), from `/proc/self/stat`, in
/// clock ticks of 10 ms. The push runs in this process: what it spends signing, encoding and
/// decoding requests, which Lambda's small memory sizes get a fraction of a vCPU for.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses: utime and stime are the
    // 12th and 13th of them.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

struct Push {
    calls: BTreeMap<String, usize>,
    queued: usize,
    pending: usize,
    elapsed: Duration,
    /// CPU time of the test process during the push.
    cpu: Duration,
}

impl Push {
    fn total(&self) -> usize {
        self.calls.values().sum()
    }

    /// One line for `scripts/cost`.
    fn report(&self, label: &str, matched: usize, stored: usize) {
        println!(
            "{label} matched={matched} stored={stored} calls={} queued={} pending={} wall_ms={} cpu_ms={} detail={:?}",
            self.total(),
            self.queued,
            self.pending,
            self.elapsed.as_millis(),
            self.cpu.as_millis(),
            self.calls
        );
    }
}

/// The calls a push matching `n` (at least one) services makes, whatever else the table
/// holds: the secret and the delivery id read, the delivery id remembered, the delivery
/// recorded in the deliveries history, TWO index queries (the services following the
/// repository; their older deployments still pending, which outside an outage is an empty
/// partition), one transaction per [`PUSH_RECORDS_PER_TRANSACTION`] services (guard + record
/// of each), one per [`MARKS_PER_TRANSACTION`] deployments (marked QUEUED), one SQS batch
/// per ten services. No scan, no single-item update.
fn expected_calls(n: usize) -> BTreeMap<String, usize> {
    BTreeMap::from([
        (action::GET_ITEM.to_owned(), 2),
        (action::PUT_ITEM.to_owned(), 2),
        (action::QUERY.to_owned(), 2),
        (action::TRANSACT_WRITE_ITEMS.to_owned(), transactions(n)),
        (action::SEND_MESSAGE_BATCH.to_owned(), n.div_ceil(10)),
    ])
}

/// The transactions of a push matching `n` services, all of them sent: the record batches,
/// then the marking batches.
fn transactions(n: usize) -> usize {
    n.div_ceil(PUSH_RECORDS_PER_TRANSACTION) + n.div_ceil(MARKS_PER_TRANSACTION)
}

fn check(push: &Push, n: usize, what: &str) {
    assert_eq!((push.queued, push.pending), (n, 0), "{what}");
    assert!(!push.calls.contains_key(SCAN), "{what}: a scan: {:?}", push.calls);
    assert_eq!(push.calls, expected_calls(n), "{what}");
}

/// On moto a large push may run past the queue's 4 s budget for one send (moto answers one
/// request at a time, slowly once it holds thousands of messages); the deployments not sent
/// then stay PENDING for the relay, and fewer batches are sent and marked. Everything up to
/// the queue still holds: two queries, no scan, every record batch written, and no more
/// marking transactions than the deployments sent need.
fn check_on_moto(push: &Push, n: usize, what: &str) {
    if push.pending == 0 {
        return check(push, n, what);
    }
    assert_eq!(push.queued + push.pending, n, "{what}");
    assert!(!push.calls.contains_key(SCAN), "{what}: a scan: {:?}", push.calls);
    assert!(
        !push.calls.contains_key(action::UPDATE_ITEM),
        "{what}: {:?}",
        push.calls
    );
    let expected = expected_calls(n);
    for action in [action::GET_ITEM, action::PUT_ITEM, action::QUERY] {
        assert_eq!(push.calls.get(action), expected.get(action), "{what}: {action}");
    }
    let records = n.div_ceil(PUSH_RECORDS_PER_TRANSACTION);
    let marks = push.queued.div_ceil(MARKS_PER_TRANSACTION);
    assert_eq!(
        push.calls.get(action::TRANSACT_WRITE_ITEMS),
        Some(&(records + marks)),
        "{what}: record and marking transactions"
    );
}

/// A table of `total` services in which groups of `groups[i]` services follow repository
/// `acme/group-{groups[i]}` each; of the rest, half follow a repository of their own in the same
/// organization and half follow `acme/group-10` in another organization. A push to
/// `acme/group-{n}` in `acme` matches exactly its group.
fn table(groups: &[usize], total: usize) -> Vec<Seed> {
    let mut all = Vec::new();
    for &n in groups {
        all.extend(seeds("acme", &format!("group{n}"), &group_repo(n), n));
    }
    let others = total - all.len();
    all.extend(unrelated("acme", "other", others / 2));
    all.extend(seeds("globex", "group10", &group_repo(10), others - others / 2));
    assert_eq!(all.len(), total);
    all
}

fn group_repo(n: usize) -> String {
    format!("acme/group-{n}")
}

/// The same push, matching the same 10 services, in a table holding only those 10 services and
/// in one holding `total` (made by [`table`] with `groups`, which must include 10): the same
/// calls, action for action. Then a push to each other group of the large table, and each push
/// again through a [`LatencyStub`]. Prints one `COST` / `LATENCY` line per push for
/// `scripts/cost`.
async fn same_calls_with(groups: &[usize], total: usize) {
    let small = Stack::with_github_secret().await;
    small.seed(&seeds("acme", "group10", &group_repo(10), 10)).await;
    let alone = small.counted_push(&group_repo(10), "delivery-10").await;
    check(&alone, 10, "10 services stored");

    let large = Stack::with_github_secret().await;
    large.seed(&table(groups, total)).await;
    let crowded = large.counted_push(&group_repo(10), "delivery-10").await;
    check(&crowded, 10, &format!("10 of {total} services"));
    assert_eq!(alone.calls, crowded.calls);
    alone.report("COST", 10, 10);

    let mut crowded = Some(crowded);
    for &n in groups {
        let push = match crowded.take_if(|_| n == 10) {
            Some(push) => push,
            None => {
                let push = large.counted_push(&group_repo(n), &format!("delivery-{n}")).await;
                check_on_moto(&push, n, &format!("{n} of {total} services"));
                push
            }
        };
        push.report("COST", n, total);
    }

    // What moto was too slow to take stays PENDING; relay runs send it now (uncounted), or the
    // same services' pushes below would rightly wait behind it. On moto a run sends what fits
    // in the queue's 4 s budget, so it takes several.
    loop {
        let run = large.aws.relay().await;
        if run.pending == 0 {
            break;
        }
        assert!(run.sent > 0, "the relay makes progress: {run:?}");
    }

    // The same pushes against AWS-like latencies (reads still served by moto): every
    // deployment sent, the same calls.
    let (stub, api) = large.with_latency().await;
    for &n in groups {
        stub.reset_counts();
        let (queued, pending, elapsed, cpu) = timed_push(&api, &group_repo(n), &format!("latency-{n}")).await;
        let push = Push {
            calls: stub.counts(),
            queued,
            pending,
            elapsed,
            cpu,
        };
        check(&push, n, &format!("{n} of {total} services, AWS latencies"));
        // The wall time is reported, not asserted (timings belong to the benchmark):
        // `scripts/cost` sets it beside GitHub's 10 s.
        push.report("LATENCY", n, total);
    }
}

/// Default suite: 10 services stored vs 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_cost_does_not_grow_with_stored_services() {
    same_calls_with(&[10], 500).await;
}

/// `scripts/cost`: 10 services stored vs 10,000, and pushes matching 1, 10, 100 and 1,000 of
/// the 10,000, each with its calls and wall time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "seeds 10,000 services on moto (a minute or two): run by scripts/cost"]
async fn push_cost_10_vs_10000_services() {
    same_calls_with(&[1, 10, 100, 1000], 10_000).await;
}
