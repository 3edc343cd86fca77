//! Git push webhooks end to end on the AWS stack: the real router on DynamoDB and SQS FIFO
//! (moto, through the real AWS SDK), under real failures that a proxy in front of moto
//! injects (`autodeploy_tests::fault_proxy`): the queue down, failing after a batch, timing
//! out or losing its answers, and the store failing the record write. SPEC "Once only",
//! "Nothing recorded is lost", "Deployment request".
//!
//! The store and the queue each reach moto through a proxy of their own, so either can fail
//! while the other works. Their clients use the SDK's standard retry mode with
//! `SDK_ATTEMPTS` (3) attempts and millisecond backoff, so one failed SDK call is exactly
//! three requests at the proxy; no SDK timeout is set, as in production. What holds without
//! failures (the message and the log of a push, once-only, rollbacks, concurrent identical
//! deliveries) runs on both stores in `push_webhooks.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::aws_stack::{ATTEMPTS, AwsStack as Stack, assert_unavailable};
use autodeploy_api::admin::StaticAdminToken;
use autodeploy_api::aws::{MARKS_PER_TRANSACTION, PUSH_RECORDS_PER_TRANSACTION, SqsQueue};
use autodeploy_api::pipeline::{RelayReport, relay_pending};
use autodeploy_api::store::ServiceStore;
use autodeploy_api::web::AppState;
use autodeploy_tests::ReceivedMessage;
use autodeploy_tests::fault_proxy::{Count, Failure, Fault, action};
use autodeploy_tests::{Api, GITHUB_REPO, Reply, deployment_ids, fixture, fixture_json, message_ids, outcome};
use http::StatusCode;
use serde_json::{Value, json};

impl Stack {
    /// The GitHub secret set, and `n` applications following the fixture's repository and
    /// branch: the stack, and their ids.
    async fn with_services(n: usize) -> (Self, Vec<String>) {
        let stack = Self::with_github_secret().await;
        let services = ids("svc", n);
        stack.services(&services).await;
        (stack, services)
    }

    /// Auto-deployed applications following the fixture's repository and branch.
    async fn services(&self, ids: &[String]) {
        for id in ids {
            self.api
                .app("acme", id, "GITHUB", GITHUB_REPO, "master", json!({}))
                .await;
        }
    }

    async fn push(&self, body: &[u8], delivery: &str) -> Reply {
        self.api.push("acme", "github", body, delivery).await
    }

    /// The queue back: one relay run sends each of `r`'s PENDING deployments once, and every
    /// one of `services` ends QUEUED.
    async fn relay_delivers(&self, r: &Reply, services: &[String]) {
        self.aws.queue_proxy.pass_through();
        let n = services.len();
        assert_eq!(self.aws.relay().await, RelayReport { pending: n, sent: n });
        assert_eq!(message_ids(&self.aws.drain().await), deployment_ids(r));
        assert_eq!(self.log().await, each(services, "QUEUED"));
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:02}")).collect()
}

/// `(id, value)` for each id, sorted.
fn each(ids: &[String], value: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = ids.iter().map(|id| (id.clone(), value.to_owned())).collect();
    v.sort();
    v
}

/// A GitHub push of the real fixture, edited by `edit`.
fn github_push(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut body = fixture_json("github/gp-push.json");
    edit(&mut body);
    serde_json::to_vec(&body).unwrap()
}

/// What one push costs in AWS calls, per matched service and per push: the numbers to
/// multiply by traffic. A change here is a change of the bill. Twelve services fit in one
/// record transaction and one marking transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_calls_per_push() {
    let (stack, _) = Stack::with_services(12).await;
    stack.aws.store_proxy.reset_counts();
    stack.aws.queue_proxy.reset_counts();

    let r = stack.push(&fixture("github/gp-push.json"), "delivery-1").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let calls = |n: usize| Count { requests: n, failed: 0 };
    let store: Vec<(String, Count)> = stack.aws.store_proxy.counts().into_iter().collect();
    assert_eq!(
        store,
        vec![
            // The webhook secret and the delivery id.
            (action::GET_ITEM.to_owned(), calls(2)),
            // The delivery id remembered; the delivery recorded in the deliveries history.
            (action::PUT_ITEM.to_owned(), calls(2)),
            // The services following the repository, one index query; older deployments of
            // theirs still pending, another (an empty index partition outside outages).
            (action::QUERY.to_owned(), calls(2)),
            // Guard and record of each service, up to PUSH_RECORDS_PER_TRANSACTION services
            // a transaction; then marked QUEUED, up to MARKS_PER_TRANSACTION a transaction.
            (
                action::TRANSACT_WRITE_ITEMS.to_owned(),
                calls(12usize.div_ceil(PUSH_RECORDS_PER_TRANSACTION) + 12usize.div_ceil(MARKS_PER_TRANSACTION))
            ),
        ]
    );
    let queue: Vec<(String, Count)> = stack.aws.queue_proxy.counts().into_iter().collect();
    assert_eq!(queue, vec![(action::SEND_MESSAGE_BATCH.to_owned(), calls(2))]);
}

/// The queue refuses every request (503s, then dropped connections) for the whole push: the
/// push still answers 202 with every deployment PENDING; once the queue is back, the relay
/// sends each exactly once and marks it QUEUED, and a second run has nothing to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_down_leaves_deployments_pending_for_the_relay() {
    for failure in [Failure::Unavailable, Failure::DropConnection] {
        let (stack, services) = Stack::with_services(3).await;
        stack.aws.queue_proxy.set(Fault::new(failure));

        let r = stack.push(&fixture("github/gp-push.json"), "delivery-1").await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{failure:?}: {}", r.body);
        assert_eq!(outcome(&r).0, each(&services, "PENDING"), "{failure:?}");
        // One batch, tried by the SDK as many times as it retries.
        assert_eq!(
            stack.aws.queue_proxy.count(action::SEND_MESSAGE_BATCH),
            Count {
                requests: ATTEMPTS,
                failed: ATTEMPTS
            },
            "{failure:?}"
        );
        assert_eq!(stack.log().await, each(&services, "PENDING"), "{failure:?}");
        assert!(stack.aws.drain().await.is_empty(), "{failure:?}");

        // The queue is still down: the relay sends nothing and loses nothing.
        assert_eq!(stack.aws.relay().await, RelayReport { pending: 3, sent: 0 });
        assert_eq!(stack.log().await, each(&services, "PENDING"), "{failure:?}");

        stack.aws.queue_proxy.pass_through();
        stack.aws.queue_proxy.reset_counts();
        assert_eq!(stack.aws.relay().await, RelayReport { pending: 3, sent: 3 });
        assert_eq!(stack.aws.queue_proxy.requests(action::SEND_MESSAGE_BATCH), 1);
        let messages = stack.aws.drain().await;
        assert_eq!(message_ids(&messages), deployment_ids(&r), "{failure:?}");
        assert_eq!(stack.log().await, each(&services, "QUEUED"), "{failure:?}");

        assert_eq!(stack.aws.relay().await, RelayReport::default());
        assert_eq!(stack.aws.queue_proxy.requests(action::SEND_MESSAGE_BATCH), 1);
        assert!(stack.aws.drain().await.is_empty(), "{failure:?}");
    }
}

/// A push matching 25 services sends its three batches (10, 10 and 5 deployments) at once: it
/// holds one deployment per service, so no batch can overtake another's service. The queue
/// takes the first batch to arrive and fails the other two: that batch's deployments are
/// QUEUED, the rest PENDING, and the relay delivers those exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_failing_after_its_first_batch() {
    let (stack, services) = Stack::with_services(25).await;
    stack
        .aws
        .queue_proxy
        .set(Fault::unavailable().only(action::SEND_MESSAGE_BATCH).after(1));

    let r = stack.push(&fixture("github/gp-push.json"), "delivery-1").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let answered = outcome(&r).0;
    let queued: Vec<String> = answered
        .iter()
        .filter(|(_, status)| status == "QUEUED")
        .map(|(service, _)| service.clone())
        .collect();
    let batch = [&services[..10], &services[10..20], &services[20..]]
        .into_iter()
        .find(|batch| *batch == queued.as_slice())
        .unwrap_or_else(|| panic!("QUEUED is not one batch: {answered:?}"));
    let mut want = each(batch, "QUEUED");
    let rest: Vec<String> = services.iter().filter(|s| !batch.contains(s)).cloned().collect();
    want.extend(each(&rest, "PENDING"));
    want.sort();
    assert_eq!(answered, want);
    // One batch passed; the other two failed after the SDK's retries.
    assert_eq!(
        stack.aws.queue_proxy.count(action::SEND_MESSAGE_BATCH),
        Count {
            requests: 1 + 2 * ATTEMPTS,
            failed: 2 * ATTEMPTS
        }
    );
    assert_eq!(stack.log().await, want);
    let first = stack.aws.drain().await;
    assert_eq!(first.len(), batch.len());

    stack.aws.queue_proxy.pass_through();
    let pending = services.len() - batch.len();
    assert_eq!(stack.aws.relay().await, RelayReport { pending, sent: pending });
    let rest = stack.aws.drain().await;
    assert_eq!(rest.len(), pending);
    let mut all: Vec<ReceivedMessage> = first.into_iter().chain(rest).collect();
    all.sort_by(|a, b| a.group.cmp(&b.group));
    assert_eq!(message_ids(&all), deployment_ids(&r));
    assert_eq!(stack.log().await, each(&services, "QUEUED"));
    assert_eq!(stack.aws.relay().await, RelayReport::default());
    assert!(stack.aws.drain().await.is_empty());
}

/// A queue that holds requests and never answers is a queue that is down: the push answers
/// 202 PENDING well within the push function's 8-second timeout, and the relay sends later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_timing_out_is_a_queue_down() {
    let (stack, services) = Stack::with_services(3).await;
    stack
        .aws
        .queue_proxy
        .set(Fault::new(Failure::Delay(Duration::from_secs(60))));

    let started = Instant::now();
    let r = stack.push(&fixture("github/gp-push.json"), "delivery-1").await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(outcome(&r).0, each(&services, "PENDING"));
    // The queue answers after 60 s: a push answered before that gave up on it (its send
    // budget, measured in docs, not here: a loaded machine's moto is slow on its own).
    assert!(
        took < Duration::from_secs(60),
        "the push waited for the queue: {took:?}"
    );
    assert_eq!(stack.aws.queue_proxy.requests(action::SEND_MESSAGE_BATCH), 1);
    assert_eq!(stack.log().await, each(&services, "PENDING"));

    stack.relay_delivers(&r, &services).await;
}

/// The queue takes the messages but its answers are lost: the push cannot know, leaves the
/// deployments PENDING, and the relay sends them again. The resends carry the same
/// deduplication ids, so the queue holds each deployment once. (moto deduplicates against
/// messages still on the queue, so this drains only at the end.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_queue_answers_are_deduplicated() {
    let (stack, services) = Stack::with_services(3).await;
    stack
        .aws
        .queue_proxy
        .set(Fault::new(Failure::LoseResponse).only(action::SEND_MESSAGE_BATCH));

    let r = stack.push(&fixture("github/gp-push.json"), "delivery-1").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(outcome(&r).0, each(&services, "PENDING"));
    assert_eq!(
        stack.aws.queue_proxy.count(action::SEND_MESSAGE_BATCH),
        Count {
            requests: ATTEMPTS,
            failed: ATTEMPTS
        }
    );

    stack.relay_delivers(&r, &services).await;
}

/// The store fails the record write (every TransactWriteItems): 503, nothing recorded —
/// no deployment, no message, no push mark — so the redelivery of the same delivery id,
/// once the store is back, queues exactly one deployment per service. The three services
/// are one record transaction, which the SDK tries `SDK_ATTEMPTS` times; an unavailable
/// store is not retried further (only cancellations by conflicts or throttling are).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_store_refuses_is_a_503_and_a_clean_redelivery() {
    let (stack, services) = Stack::with_services(3).await;
    stack.refuse_record_transactions();

    let push = fixture("github/gp-push.json");
    let r = stack.push(&push, "delivery-1").await;
    assert_unavailable(&r);
    assert!(!String::from_utf8_lossy(&r.raw).contains("fault proxy"));
    stack.assert_record_transactions_refused(3usize.div_ceil(PUSH_RECORDS_PER_TRANSACTION));
    assert!(stack.log().await.is_empty());
    assert!(stack.aws.drain().await.is_empty());
    assert_eq!(stack.aws.queue_proxy.requests(action::SEND_MESSAGE_BATCH), 0);
    for id in &services {
        let stored = stack.aws.fixture.store.get_service("acme", id).await.unwrap().unwrap();
        assert_eq!(stored.last_push, None, "{id}");
    }

    stack.aws.store_proxy.pass_through();
    let r = stack.push(&push, "delivery-1").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(outcome(&r), (each(&services, "QUEUED"), vec![]));
    assert_eq!(stack.log().await, each(&services, "QUEUED"));
    assert_eq!(message_ids(&stack.aws.drain().await), deployment_ids(&r));
    // And now the delivery is remembered.
    let r = stack.push(&push, "delivery-1").await;
    assert_eq!(r.body["ignored"], "DUPLICATE_DELIVERY");
}

/// The store writes the record transaction (the three services are one) but its answer is
/// lost. The SDK retries the transaction with the same client request token: on DynamoDB the
/// token makes the retry succeed, and the reply is 202 with every deployment QUEUED; moto
/// (no idempotency) finds every push mark already set, so every service is reported
/// ALREADY_QUEUED (a 200) and its deployment stays PENDING. Either way nothing is lost or
/// doubled: after the relay, one deployment and one message per service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_store_answer_loses_nothing() {
    let (stack, services) = Stack::with_services(3).await;
    stack.aws.store_proxy.set(
        Fault::new(Failure::LoseResponse)
            .only(action::TRANSACT_WRITE_ITEMS)
            .times(1),
    );

    let r = stack.push(&fixture("github/gp-push.json"), "delivery-1").await;
    let (queued, skipped) = outcome(&r);
    let expected = if queued.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    assert_eq!(r.status, expected, "{}", r.body);
    assert_eq!(queued.len() + skipped.len(), 3, "{}", r.body);
    assert!(
        skipped.iter().all(|(_, reason)| reason == "ALREADY_QUEUED"),
        "{skipped:?}"
    );
    // One transaction for all three: its retry answers for all of them alike.
    assert!(queued.is_empty() || skipped.is_empty(), "{}", r.body);
    let report = stack.aws.relay().await;
    assert_eq!(report.pending, skipped.len());
    assert_eq!(report.sent, skipped.len());
    assert_eq!(stack.log().await, each(&services, "QUEUED"));
    let messages = stack.aws.drain().await;
    assert_eq!(messages.len(), 3);
    let mut groups: Vec<String> = messages.iter().map(|m| m.group.clone()).collect();
    groups.sort();
    assert_eq!(groups, services.iter().map(|s| format!("acme/{s}")).collect::<Vec<_>>());
    // The relay ran once: a second run has nothing left.
    assert_eq!(stack.aws.relay().await, RelayReport { pending: 0, sent: 0 });
}

/// One more service than a record transaction holds: two record transactions. The store
/// takes the first that reaches it and refuses the other (each of the SDK's attempts), then
/// works again: 503; the batch recorded is sent and marked QUEUED, the other has nothing
/// written, and the redelivery completes it — one deployment and one message per service
/// in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failing_midway_is_completed_by_the_redelivery() {
    let n = PUSH_RECORDS_PER_TRANSACTION + 1;
    let (stack, services) = Stack::with_services(n).await;
    stack.refuse_the_second_record_transaction();

    let push = fixture("github/gp-push.json");
    let r = stack.push(&push, "delivery-1").await;
    assert_unavailable(&r);
    stack.assert_one_of_two_record_transactions_refused();
    let log = stack.log().await;
    // A whole batch: either the full one or the single service.
    assert!(log.len() == PUSH_RECORDS_PER_TRANSACTION || log.len() == 1, "{log:?}");
    assert!(log.iter().all(|(_, status)| status == "QUEUED"), "{log:?}");
    let recorded: Vec<String> = log.iter().map(|(id, _)| id.clone()).collect();
    let first = stack.aws.drain().await;
    assert_eq!(first.len(), recorded.len());
    // Nothing of the refused batch was written: not even its push marks.
    for id in services.iter().filter(|s| !recorded.contains(s)) {
        let stored = stack.aws.fixture.store.get_service("acme", id).await.unwrap().unwrap();
        assert_eq!(stored.last_push, None, "{id}");
    }

    stack.aws.store_proxy.pass_through();
    let r = stack.push(&push, "delivery-1").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let others: Vec<String> = services.iter().filter(|s| !recorded.contains(s)).cloned().collect();
    assert_eq!(
        outcome(&r),
        (each(&others, "QUEUED"), each(&recorded, "ALREADY_QUEUED"))
    );
    assert_eq!(stack.log().await, each(&services, "QUEUED"));
    let rest = stack.aws.drain().await;
    assert_eq!(message_ids(&rest), deployment_ids(&r));
    let mut groups: Vec<String> = first.iter().chain(&rest).map(|m| m.group.clone()).collect();
    groups.sort();
    assert_eq!(groups, services.iter().map(|s| format!("acme/{s}")).collect::<Vec<_>>());
    assert_eq!(stack.aws.relay().await, RelayReport { pending: 0, sent: 0 });
    // And now the delivery is remembered.
    let r = stack.push(&push, "delivery-1").await;
    assert_eq!(r.body["ignored"], "DUPLICATE_DELIVERY");
}

/// Twelve pushes to the service `api` while the queue is down: twelve deployments PENDING,
/// two SQS batches for the relay. Returns their commits, oldest first.
async fn twelve_pending_pushes(stack: &Stack) -> Vec<Value> {
    stack.services(&["api".to_owned()]).await;
    stack.aws.queue_proxy.set(Fault::unavailable());
    let mut before = fixture_json("github/gp-push.json")["before"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut commits = Vec::new();
    for i in 1..=12 {
        let after = format!("{i:040x}");
        let body = github_push(|b| {
            b["before"] = json!(before);
            b["after"] = json!(after);
        });
        let r = stack.push(&body, &format!("delivery-{i}")).await;
        assert_eq!(outcome(&r).0, vec![("api".to_owned(), "PENDING".to_owned())], "{i}");
        commits.push(Value::from(after.clone()));
        before = after;
    }
    commits
}

/// The commits of every message on the queue, in the order SQS hands them out.
async fn queued_commits(stack: &Stack) -> Vec<Value> {
    stack
        .aws
        .drain()
        .await
        .into_iter()
        .map(|m| m.body["git_commit_id"].clone())
        .collect()
}

/// The relay keeps a service's deployments in order. Twelve deployments of one service are
/// two SQS batches; the queue fails the first batch once (the SDK's attempts at one call),
/// then works: the relay must not send the second batch ahead of the first, or the engine
/// would end on the tenth commit instead of the twelfth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_keeps_a_services_deployments_in_order() {
    let stack = Stack::with_github_secret().await;
    let commits = twelve_pending_pushes(&stack).await;

    stack
        .aws
        .queue_proxy
        .set(Fault::unavailable().only(action::SEND_MESSAGE_BATCH).times(ATTEMPTS));
    assert_eq!(stack.aws.relay().await, RelayReport { pending: 12, sent: 0 });
    assert_eq!(stack.aws.relay().await, RelayReport { pending: 12, sent: 12 });
    assert_eq!(queued_commits(&stack).await, commits);
}

/// Order across pushes after an outage: a push while the queue is down leaves `api`'s
/// deployment PENDING. Once the queue is back, the next push does not send `api`'s newer
/// deployment ahead of it — it stays PENDING too, and the relay sends both, in order — while
/// `web`, which has nothing pending, is sent at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_after_an_outage_waits_behind_the_older_pending_deployment() {
    // Pending for longer than 200 ms is stranded here (15 s in production: see
    // `IN_FLIGHT_HORIZON`), so that the test need not wait.
    let horizon = Duration::from_millis(200);
    let mut stack = Stack::with_github_secret().await;
    stack.api = Api::on_state(
        stack.aws.store.clone(),
        AppState::new(
            stack.aws.store.clone(),
            stack.aws.queue.clone(),
            Arc::new(StaticAdminToken::new(autodeploy_tests::ADMIN)),
        )
        .with_in_flight_horizon(horizon),
    );
    stack.services(&["api".to_owned()]).await;
    let payload = fixture_json("github/gp-push.json");
    let first = payload["after"].clone();
    let second = json!(format!("{:040x}", 2));

    stack.aws.queue_proxy.set(Fault::unavailable());
    let r = stack.push(&fixture("github/gp-push.json"), "delivery-1").await;
    assert_eq!(outcome(&r).0, each(&["api".to_owned()], "PENDING"));

    stack.aws.queue_proxy.pass_through();
    stack.services(&["web".to_owned()]).await;
    tokio::time::sleep(horizon * 2).await;
    stack.aws.queue_proxy.reset_counts();
    let body = github_push(|b| {
        b["before"] = first.clone();
        b["after"] = second.clone();
    });
    let r = stack.push(&body, "delivery-2").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(
        outcome(&r).0,
        vec![
            ("api".to_owned(), "PENDING".to_owned()),
            ("web".to_owned(), "QUEUED".to_owned())
        ]
    );
    assert_eq!(stack.aws.queue_proxy.requests(action::SEND_MESSAGE_BATCH), 1);

    assert_eq!(stack.aws.relay().await, RelayReport { pending: 2, sent: 2 });
    let messages = stack.aws.drain().await;
    let commits = |group: &str| -> Vec<Value> {
        messages
            .iter()
            .filter(|m| m.group == group)
            .map(|m| m.body["git_commit_id"].clone())
            .collect()
    };
    assert_eq!(commits("acme/api"), vec![first, second.clone()]);
    assert_eq!(commits("acme/web"), vec![second]);
    assert_eq!(stack.aws.relay().await, RelayReport::default());
}

/// A deployment pending for less than the in-flight horizon may be in a concurrent request's
/// hands, about to be sent: a push does not wait behind it (concurrent pushes to one service
/// would otherwise wait a minute for the relay). Here the older one is stranded all the same
/// (the queue failed it a moment ago), and the newer one is sent at once; the consumer's
/// rule for ids older than the last applied one covers this window (README).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_does_not_wait_behind_a_deployment_pending_for_less_than_the_horizon() {
    let stack = Stack::with_github_secret().await;
    stack.services(&["api".to_owned()]).await;
    stack.aws.queue_proxy.set(Fault::unavailable());
    let r = stack.push(&fixture("github/gp-push.json"), "delivery-1").await;
    assert_eq!(outcome(&r).0, each(&["api".to_owned()], "PENDING"));

    stack.aws.queue_proxy.pass_through();
    let body = github_push(|b| {
        b["before"] = fixture_json("github/gp-push.json")["after"].clone();
        b["after"] = json!(format!("{:040x}", 2));
    });
    let r = stack.push(&body, "delivery-2").await;
    assert_eq!(outcome(&r).0, each(&["api".to_owned()], "QUEUED"));
    assert_eq!(stack.aws.relay().await, RelayReport { pending: 1, sent: 1 });
}

/// A queue that answers, but slowly, holds a send no longer than its budget: a batch not
/// started by then is not sent (it stays PENDING for the relay's next run), and the
/// service's second batch, which must wait for its first, is never sent ahead of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_queue_holds_a_send_no_longer_than_its_budget() {
    let stack = Stack::with_github_secret().await;
    let commits = twelve_pending_pushes(&stack).await;

    let budget = Duration::from_millis(300);
    let slow = SqsQueue::new(
        stack.aws.queue_proxy.sqs_client().await,
        &stack.aws.fixture.queues.deployments.url,
    )
    .with_send_budget(budget);
    stack
        .aws
        .queue_proxy
        .set(Fault::new(Failure::Slow(Duration::from_millis(600))).only(action::SEND_MESSAGE_BATCH));
    stack.aws.queue_proxy.reset_counts();
    let report = relay_pending(stack.aws.store.as_ref(), &slow, 100).await.unwrap();
    // The first batch took 600 ms, past the 300 ms budget: the second was not started.
    assert_eq!(report, RelayReport { pending: 12, sent: 10 });
    assert_eq!(stack.aws.queue_proxy.requests(action::SEND_MESSAGE_BATCH), 1);
    let mut log = vec![("api".to_owned(), "PENDING".to_owned()); 2];
    log.extend(vec![("api".to_owned(), "QUEUED".to_owned()); 10]);
    assert_eq!(stack.log().await, log);

    stack.aws.queue_proxy.pass_through();
    assert_eq!(stack.aws.relay().await, RelayReport { pending: 2, sent: 2 });
    assert_eq!(queued_commits(&stack).await, commits);
}
