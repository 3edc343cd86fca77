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
//!
//! The `delivery_cost_*` tests count what the `dispatcher` function
//! (`autodeploy_api::aws::dispatcher`) calls per deployment it delivers, through the same
//! proxies: a batch of ten services delivered at once, and one delivery retried once. They
//! print `DELIVERY` and `SIZES` lines (the items' sizes, for DynamoDB's capacity units) for
//! `scripts/cost --deliveries` (infra/README.md, "Cost per million deliveries").
//!
//! `refusals_past_a_spent_budget_cost_no_write` counts what a flood of refused deliveries
//! writes to the history's budget counter.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::aws_dispatcher::{dispatcher_on, failures, next_batch, record, send, service_on_receiver};
use crate::aws_stack::AwsStack as Stack;
use autodeploy_api::aws::dispatcher::SqsDispatcher;
use autodeploy_api::aws::{DynamoStore, MARKS_PER_TRANSACTION, PUSH_RECORDS_PER_TRANSACTION, SqsQueue};
use autodeploy_api::metrics::DispatchTally;
use autodeploy_api::store::DeliveryHistory;
use autodeploy_core::deployment::DeploymentRequest;
use autodeploy_tests::fault_proxy::action;
use autodeploy_tests::latency_stub::{LatencyStub, Seed, seed, seeds, unrelated};
use autodeploy_tests::{Api, fixture};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use http::StatusCode;

/// The repository of the real fixture `github/gp-push.json` (branch `master`).
const FIXTURE_REPO: &str = "binkkatal/sample_app";
const SCAN: &str = "DynamoDB_20120810.Scan";
const CHANGE_MESSAGE_VISIBILITY_BATCH: &str = "AmazonSQS.ChangeMessageVisibilityBatch";

impl Stack {
    /// The stack with `acme`'s GitHub secret, its router's queue given a minute to send: what
    /// is counted here is the calls, and a moto slowed by the other suites must not leave the
    /// deployments of a push PENDING (the queue's own budget is the fault suites' subject).
    async fn counting() -> Self {
        let mut stack = Self::with_github_secret().await;
        let queue = stack
            .aws
            .queue
            .as_ref()
            .clone()
            .with_send_budget(Duration::from_secs(60))
            .with_batch_timeout(Duration::from_secs(60));
        // The secret is in the table, which the new router shares.
        stack.api = Api::on(stack.aws.store.clone(), Arc::new(queue));
        stack
    }

    async fn seed(&self, seeds: &[Seed]) {
        // Directly on moto: the seeding is not counted.
        seed(&self.aws.fixture.store, seeds).await;
    }

    /// One signed push of the real fixture, moved to `repo`: the AWS calls it made (store and
    /// queue, per `X-Amz-Target`), how many deployments it queued, and how long it took.
    async fn counted_push(&self, repo: &str, delivery: &str) -> Push {
        self.reset_counts();
        let (queued, pending, elapsed, cpu) = timed_push(&self.api, repo, delivery).await;
        Push {
            calls: self.calls(),
            queued,
            pending,
            elapsed,
            cpu,
        }
    }

    fn reset_counts(&self) {
        self.aws.store_proxy.reset_counts();
        self.aws.queue_proxy.reset_counts();
    }

    /// The calls both proxies counted since [`Stack::reset_counts`], per `X-Amz-Target`; none
    /// of them failed.
    fn calls(&self) -> BTreeMap<String, usize> {
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
        calls
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

/// On moto a large push may run past the queue's budget for one send, a minute here (moto answers one
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
    let small = Stack::counting().await;
    small.seed(&seeds("acme", "group10", &group_repo(10), 10)).await;
    let alone = small.counted_push(&group_repo(10), "delivery-10").await;
    check(&alone, 10, "10 services stored");

    let large = Stack::counting().await;
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
    // in the relay's queue budget, so it may take several.
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

// What a delivery costs: the `dispatcher` function's calls per deployment it delivers.

/// One batch of the deployment queue handed to the dispatcher, as the event source mapping
/// hands it over: the calls the function made (both counting proxies) and what it made of the
/// messages.
struct Dispatched {
    calls: BTreeMap<String, usize>,
    tally: DispatchTally,
    /// Messages in the batch.
    messages: usize,
    /// Messages reported in `batchItemFailures` (handed over again).
    reported: usize,
}

impl Stack {
    /// The dispatcher function's state on this stack: the table and SQS through the counting
    /// proxies, targets trusted through the test CA.
    async fn dispatcher(&self) -> SqsDispatcher {
        dispatcher_on(
            &self.aws.fixture,
            self.aws.store.clone(),
            self.aws.queue_proxy.sqs_client().await,
        )
    }

    /// The deployment queue's next batch through `dispatcher`, its calls counted. The event
    /// source mapping's own calls are made directly on moto, uncounted: the receive, and the
    /// delete of the messages not reported (as Lambda deletes them after the invocation).
    async fn dispatch_next_batch(&self, dispatcher: &SqsDispatcher) -> Dispatched {
        let fx = &self.aws.fixture;
        let (event, _) = next_batch(fx).await;
        let handles: Vec<(String, String)> = event
            .records
            .iter()
            .map(|m| (m.message_id.clone().unwrap(), m.receipt_handle.clone().unwrap()))
            .collect();
        self.reset_counts();
        let (response, tally) = dispatcher.handle(event, None).await;
        let calls = self.calls();
        let reported = failures(&response);
        let entries: Vec<DeleteMessageBatchRequestEntry> = handles
            .iter()
            .filter(|(id, _)| !reported.contains(id))
            .enumerate()
            .map(|(i, (_, handle))| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .receipt_handle(handle)
                    .build()
                    .unwrap()
            })
            .collect();
        if !entries.is_empty() {
            let deleted = fx
                .sqs
                .delete_message_batch()
                .queue_url(&fx.queues.deployments.url)
                .set_entries(Some(entries))
                .send()
                .await
                .unwrap();
            assert!(deleted.failed().is_empty(), "{deleted:?}");
        }
        Dispatched {
            calls,
            tally,
            messages: handles.len(),
            reported: reported.len(),
        }
    }

    /// The size, as DynamoDB bills it, of the item at `pk` / `sk`, read directly on moto.
    async fn item_size(&self, pk: String, sk: String) -> usize {
        let fx = &self.aws.fixture;
        let out = fx
            .dynamo
            .get_item()
            .table_name(&fx.table)
            .key("pk", AttributeValue::S(pk))
            .key("sk", AttributeValue::S(sk))
            .send()
            .await
            .unwrap();
        item_size(out.item().expect("the item exists"))
    }

    /// The sizes of the items a delivery of `request` to its service's target reads and
    /// writes, as they are now: its service, that service's target (`{service}-hook`) and the
    /// deployment. One `SIZES` line for `scripts/cost`.
    async fn report_sizes(&self, case: &str, request: &DeploymentRequest) {
        let (org, service) = (&request.organization_id, &request.service_id);
        let service_size = self.item_size(format!("ORG#{org}"), format!("SERVICE#{service}")).await;
        let target = self.item_size(format!("TARGET#{org}"), format!("{service}-hook")).await;
        let deployment = self
            .item_size(format!("ORG#{org}"), format!("DEPLOYMENT#{}", request.deployment_id))
            .await;
        println!("SIZES case={case} service={service_size} target={target} deployment={deployment}");
    }
}

/// An item's size as DynamoDB counts it for capacity units: each attribute's name and value,
/// in bytes (strings and binaries their length; numbers about one byte per two significant
/// digits, plus one; booleans and nulls one; lists and maps three, plus one per element and
/// the elements, a map's keys included).
fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(name, value)| name.len() + value_size(value)).sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(all) => all.iter().map(String::len).sum(),
        AttributeValue::Ns(all) => all.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(all) => all.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(all) => 3 + all.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(all) => 3 + all.iter().map(|(k, v)| 1 + k.len() + value_size(v)).sum::<usize>(),
        _ => 0,
    }
}

fn number_size(number: &str) -> usize {
    let mantissa = number.split(['e', 'E']).next().unwrap_or_default();
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len().max(1);
    significant.div_ceil(2) + 1
}

impl Dispatched {
    fn total(&self) -> usize {
        self.calls.values().sum()
    }

    /// One line for `scripts/cost`.
    fn report(&self, case: &str, batch: usize) {
        println!(
            "DELIVERY case={case} batch={batch} messages={} reported={} delivered={} retried={} calls={} detail={:?}",
            self.messages,
            self.reported,
            self.tally.delivered,
            self.tally.retried,
            self.total(),
            self.calls
        );
    }
}

/// The calls of one attempt at a deployment of a service with a deploy target, whatever its
/// outcome: three strongly consistent reads (the service, to know it has a target and to build
/// the request; the deployment, to begin; its target), one `gsi1` query (the service's waiting
/// deployments: latest wins), one conditional update that begins the attempt and answers the
/// deployment as begun (no older deployment waits, so there is nothing to supersede in a
/// transaction) and one update (the outcome). The function makes no SQS call for a deployment
/// that is done: the event source mapping deletes its message.
fn attempt_calls(attempts: usize) -> BTreeMap<String, usize> {
    BTreeMap::from([
        (action::GET_ITEM.to_owned(), 3 * attempts),
        (action::QUERY.to_owned(), attempts),
        (action::UPDATE_ITEM.to_owned(), 2 * attempts),
    ])
}

/// Ten deployments of ten services, in one batch of ten messages, each delivered (2xx) at the
/// first attempt: six calls per delivery, none of them SQS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_cost_a_batch_of_ten_services() {
    let stack = Stack::new().await;
    let store = &stack.aws.fixture.store;
    let mut receivers = Vec::new();
    let mut requests = Vec::new();
    for i in 0..10 {
        let service = format!("svc{i}");
        receivers.push(service_on_receiver(store, &service, &[200]).await);
        requests.push(record(store, &service, "a..b").await);
    }
    send(&stack.aws.fixture, &requests.iter().collect::<Vec<_>>()).await;
    stack.report_sizes("queued", &requests[0]).await;

    let dispatcher = stack.dispatcher().await;
    let batch = stack.dispatch_next_batch(&dispatcher).await;
    assert_eq!((batch.messages, batch.reported), (10, 0), "one batch of ten, all done");
    assert_eq!(
        batch.tally,
        DispatchTally {
            delivered: 10,
            ..DispatchTally::default()
        }
    );
    assert_eq!(batch.calls, attempt_calls(10));
    for receiver in &receivers {
        assert_eq!(receiver.received().len(), 1);
    }
    batch.report("ten-services", 1);
    stack.report_sizes("delivered", &requests[0]).await;
}

/// One deployment whose target answers 503, then 2xx: the first batch's attempt is retried
/// (its message reported and hidden until the retry is due: one `ChangeMessageVisibilityBatch`),
/// the second delivers it. Two attempts' calls and the visibility change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_cost_one_retry() {
    let stack = Stack::new().await;
    let store = &stack.aws.fixture.store;
    let receiver = service_on_receiver(store, "api", &[503, 200]).await;
    let request = record(store, "api", "a..b").await;
    send(&stack.aws.fixture, &[&request]).await;

    let dispatcher = stack.dispatcher().await;
    let first = stack.dispatch_next_batch(&dispatcher).await;
    assert_eq!((first.messages, first.reported), (1, 1));
    assert_eq!(
        first.tally,
        DispatchTally {
            retried: 1,
            ..DispatchTally::default()
        }
    );
    let mut expected = attempt_calls(1);
    expected.insert(CHANGE_MESSAGE_VISIBILITY_BATCH.to_owned(), 1);
    assert_eq!(first.calls, expected);
    first.report("one-retry", 1);
    stack.report_sizes("retried", &request).await;

    let second = stack.dispatch_next_batch(&dispatcher).await;
    assert_eq!((second.messages, second.reported), (1, 0));
    assert_eq!(
        second.tally,
        DispatchTally {
            delivered: 1,
            ..DispatchTally::default()
        }
    );
    assert_eq!(second.calls, attempt_calls(1));
    assert_eq!(receiver.received().len(), 2);
    second.report("one-retry", 2);
}

/// A refusal past its minute's budget costs no write on DynamoDB: once one instance found the
/// budget spent (its conditional write failed), the minute's later refusals skip the counter,
/// whose write would fail too. 100 refusals of `acme` in one minute: 60 recorded, 61 writes.
#[tokio::test]
async fn refusals_past_a_spent_budget_cost_no_write() {
    let stack = Stack::with_github_secret().await;
    stack.aws.store_proxy.reset_counts();
    let mut recorded = 0;
    for _ in 0..100 {
        let refusal = autodeploy_core::delivery::DeliveryRecord {
            outcome: autodeploy_core::delivery::DeliveryOutcome::Rejected,
            http_status: 401,
            // One minute, whenever the test runs.
            received_at: "2026-01-01T12:00:30Z".to_owned(),
            ..crate::store_contract::delivery_record("acme", 0)
        };
        recorded += usize::from(stack.aws.store.record_delivery(&refusal).await.expect("record"));
    }
    assert_eq!(recorded, autodeploy_core::delivery::REJECTED_PER_MINUTE as usize);
    let counts = stack.aws.store_proxy.counts();
    let updates = counts.get(action::UPDATE_ITEM).map_or(0, |c| c.requests);
    assert_eq!(
        updates,
        autodeploy_core::delivery::REJECTED_PER_MINUTE as usize + 1,
        "{counts:?}"
    );
}
