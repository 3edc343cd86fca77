//! The `dispatcher` function's work (`autodeploy_api::aws::dispatcher`) in-process, on real
//! parts: the table and both queues from the template on moto through the real AWS SDK, the
//! messages as SQS hands them out, and deploy targets that are local HTTPS receivers (the
//! test CA's certificate) answering what each case needs.

use std::sync::{Arc, Mutex};

use autodeploy_api::aws::dispatcher::SqsDispatcher;
use autodeploy_api::dispatch::Dispatcher;
use autodeploy_api::dispatch::send::{Sender, SenderConfig};
use autodeploy_api::metrics::DispatchTally;
use autodeploy_api::store::{
    AttemptEnd, AttemptStart, DeploymentLog, DeploymentQueue, Expected, Guard, Store, StoredService, StoredTarget,
    TenantLimits,
};
use autodeploy_core::deployment::{DeploymentRecord, DeploymentRequest, DeploymentStatus};
use autodeploy_core::model::{DeployTarget, GitRepository, Service, ServiceKind, ServiceSpec};
use autodeploy_core::provider::GitProvider;
use autodeploy_core::target::delivery::RetryPolicy;
use autodeploy_core::target::signature::{DEFAULT_TOLERANCE_SECS, verify, webhook_secret_from};
use autodeploy_core::target::{Secret, Target};
use autodeploy_tests::{AwsFixture, aws_fixture, receive_all};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::https_client::{test_ca_roots, test_tls_acceptor};
use crate::store_contract::push_request;

const NOW: &str = "2026-11-26T12:00:00Z";
/// Budget of the tests' own sends (their setup), far above any answer of a loaded moto.
const SETUP_BUDGET: std::time::Duration = std::time::Duration::from_secs(60);

/// A request a receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub webhook_id: String,
    pub timestamp: String,
    pub signature: String,
    pub authorization: String,
    pub body: Vec<u8>,
}

/// A deploy target: an HTTPS endpoint on 127.0.0.1 answering the `n`th request (from 0) with
/// `statuses[n]` (the last one after that), recording every request.
pub(crate) struct Receiver {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub(crate) async fn start(statuses: &[u16]) -> Receiver {
        Self::answering(statuses, false).await
    }

    /// [`Receiver::start`], its message repeating the `Authorization` and `webhook-signature`
    /// it got, upper- and lower-cased, as a careless target might.
    pub(crate) async fn echoing(statuses: &[u16]) -> Receiver {
        Self::answering(statuses, true).await
    }

    async fn answering(statuses: &[u16], echo: bool) -> Receiver {
        let statuses: Arc<Vec<u16>> = Arc::new(statuses.to_vec());
        let acceptor = test_tls_acceptor();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://localhost:{}/deploy", listener.local_addr().unwrap().port());
        let requests: Arc<Mutex<Vec<Received>>> = Arc::default();
        let recorded = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, recorded, statuses) = (acceptor.clone(), Arc::clone(&recorded), Arc::clone(&statuses));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        let (recorded, statuses) = (Arc::clone(&recorded), Arc::clone(&statuses));
                        async move {
                            let header = |name: &str| {
                                request
                                    .headers()
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned()
                            };
                            let (webhook_id, timestamp, signature, authorization) = (
                                header("webhook-id"),
                                header("webhook-timestamp"),
                                header("webhook-signature"),
                                header("authorization"),
                            );
                            let mut message = format!("answer {n}", n = recorded.lock().unwrap().len());
                            if echo {
                                for sent in [&authorization, &signature] {
                                    message.push_str(&format!(" {} {}", sent.to_uppercase(), sent.to_lowercase()));
                                }
                            }
                            let body = request.into_body().collect().await.unwrap().to_bytes().to_vec();
                            let n = {
                                let mut all = recorded.lock().unwrap();
                                all.push(Received {
                                    webhook_id,
                                    timestamp,
                                    signature,
                                    authorization,
                                    body,
                                });
                                all.len() - 1
                            };
                            let status = statuses.get(n).or(statuses.last()).copied().unwrap_or(200);
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(json!({ "message": message }).to_string())))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Receiver { url, requests, task }
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}

/// The secret every test target signs with.
pub(crate) fn secret() -> String {
    webhook_secret_from(&[0x42; 32])
}

/// Webhook target `id` of `acme` at `url`.
pub(crate) async fn put_webhook_target(store: &dyn Store, id: &str, url: &str) {
    let target = StoredTarget {
        id: id.to_owned(),
        organization_id: "acme".to_owned(),
        spec: Target::Webhook {
            url: url.to_owned(),
            secret: Secret::new(secret()),
        },
        etag: uuid::Uuid::new_v4().simple().to_string(),
        version: 1,
        created_at: NOW.to_owned(),
        updated_at: NOW.to_owned(),
    };
    store.put_target(&target, Expected::Absent).await.unwrap().unwrap();
}

/// Application `id` of `acme`, delivered to `target` (pull consumers' when `None`).
pub(crate) async fn put_service(store: &dyn Store, id: &str, target: Option<&str>) {
    put_service_created(store, id, target, NOW).await;
}

/// [`put_service`], created at `created_at`.
async fn put_service_created(store: &dyn Store, id: &str, target: Option<&str>, created_at: &str) {
    let service = Service {
        id: id.to_owned(),
        organization_id: "acme".to_owned(),
        spec: ServiceSpec {
            environment_id: "production".to_owned(),
            name: id.to_owned(),
            kind: ServiceKind::Application,
            auto_deploy: true,
            git_repository: Some(GitRepository {
                provider: GitProvider::Github,
                url: format!("https://github.com/acme/{id}.git"),
                branch: "main".to_owned(),
                root_path: "/".to_owned(),
            }),
            deployment_restrictions: Vec::new(),
            image: None,
            tag_policy: None,
            deploy_target: target.map(|target_id| DeployTarget {
                target_id: target_id.to_owned(),
                external_id: None,
            }),
        },
        version: 1,
        created_at: created_at.to_owned(),
        updated_at: created_at.to_owned(),
    };
    let etag = uuid::Uuid::new_v4().simple().to_string();
    store
        .put_service(
            &StoredService::new(service, etag),
            Expected::Absent,
            TenantLimits::default(),
        )
        .await
        .unwrap();
}

/// Service `id` of `acme` with a webhook target (`{id}-hook`) on a new receiver answering
/// `statuses`.
pub(crate) async fn service_on_receiver(store: &dyn Store, id: &str, statuses: &[u16]) -> Receiver {
    let receiver = Receiver::start(statuses).await;
    let target = format!("{id}-hook");
    put_webhook_target(store, &target, &receiver.url).await;
    put_service(store, id, Some(&target)).await;
    receiver
}

/// Two message groups on the queue: `api`'s older deployment, taken by an instance that died
/// (its message comes back before the next one), `web`'s, then `api`'s newer one.
pub(crate) struct TwoGroups {
    pub api: Receiver,
    pub web: Receiver,
    pub older: DeploymentRequest,
    pub web_deployment: DeploymentRequest,
    pub newer: DeploymentRequest,
}

/// The attempt in progress on deployment `id` began longer ago than the dispatcher function
/// may run: the instance that began it is gone.
async fn died_long_ago(fx: &AwsFixture, id: &str) {
    use aws_sdk_dynamodb::types::AttributeValue;
    let began = autodeploy_api::util::unix_rfc3339(
        autodeploy_api::util::now_unix() - autodeploy_api::aws::STALE_ATTEMPT_SECS - 1,
    );
    fx.dynamo
        .update_item()
        .table_name(&fx.table)
        .key("pk", AttributeValue::S("ORG#acme".to_owned()))
        .key("sk", AttributeValue::S(format!("DEPLOYMENT#{id}")))
        .update_expression("SET updated_at = :began")
        .expression_attribute_values(":began", AttributeValue::S(began))
        .send()
        .await
        .unwrap();
}

pub(crate) async fn two_groups(fx: &AwsFixture, api_statuses: &[u16], web_statuses: &[u16]) -> TwoGroups {
    let store: &dyn Store = &fx.store;
    let api = service_on_receiver(store, "api", api_statuses).await;
    let web = service_on_receiver(store, "web", web_statuses).await;
    let older = record(store, "api", "a..b").await;
    store.begin_attempt("acme", &older.deployment_id).await.unwrap();
    died_long_ago(fx, &older.deployment_id).await;
    let web_deployment = record(store, "web", "a..b").await;
    let newer = record(store, "api", "b..c").await;
    send(fx, &[&older, &web_deployment, &newer]).await;
    TwoGroups {
        api,
        web,
        older,
        web_deployment,
        newer,
    }
}

/// A push deployment of `service_id`, recorded (guarded by push `mark`), not yet sent.
pub(crate) async fn record(store: &dyn Store, service_id: &str, mark: &str) -> DeploymentRequest {
    let request = DeploymentRequest {
        // Recorded now: its age counts towards the retry policy's 24 hours.
        requested_at: autodeploy_api::util::now_rfc3339(),
        ..push_request("acme", service_id)
    };
    let guard = Guard::Push {
        mark: mark.to_owned(),
        before: mark.split_once("..").map_or("", |(b, _)| b).to_owned(),
    };
    store.record_deployment(&request, &guard).await.unwrap();
    request
}

/// Send `requests` to the deployment queue, as a webhook's request does, and mark them.
pub(crate) async fn send(fx: &AwsFixture, requests: &[&DeploymentRequest]) {
    let owned: Vec<DeploymentRequest> = requests.iter().map(|r| (*r).clone()).collect();
    // The product's send, with budgets for a loaded machine: setting the scene is not what
    // these tests time, and moto may answer slowly.
    let queue = fx
        .queue
        .clone()
        .with_send_budget(SETUP_BUDGET)
        .with_batch_timeout(SETUP_BUDGET);
    for result in queue.send(&owned).await {
        result.unwrap();
    }
    let ids: Vec<String> = owned.iter().map(|r| r.deployment_id.clone()).collect();
    fx.store.mark_queued("acme", &ids).await.unwrap();
}

/// The next batch of the deployment queue as the event source mapping hands it to the
/// function: up to 10 messages, with their system attributes, in Lambda's event shape. Waits
/// (long polls) while the queue hides them, for at most a minute.
pub(crate) async fn next_batch(fx: &AwsFixture) -> (SqsEvent, Value) {
    for _ in 0..6 {
        let received = fx
            .sqs
            .receive_message()
            .queue_url(&fx.queues.deployments.url)
            .max_number_of_messages(10)
            .wait_time_seconds(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        if received.messages().is_empty() {
            continue;
        }
        let records: Vec<Value> = received
            .messages()
            .iter()
            .map(|m| {
                let attributes: serde_json::Map<String, Value> = m
                    .attributes()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str().to_owned(), Value::String(v.clone())))
                    .collect();
                json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": attributes,
                    "messageAttributes": {},
                    "md5OfBody": m.md5_of_body(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": fx.queues.deployments.arn,
                    "awsRegion": "us-east-1",
                })
            })
            .collect();
        let event = json!({"Records": records});
        return (serde_json::from_value(event.clone()).unwrap(), event);
    }
    panic!("the deployment queue handed nothing over within a minute");
}

/// A deployment of `cli`, a service without a deploy target, on the queue.
async fn queued_without_target(fx: &AwsFixture) -> DeploymentRequest {
    put_service(&fx.store, "cli", None).await;
    let request = record(&fx.store, "cli", "a..b").await;
    send(fx, &[&request]).await;
    request
}

/// The message id of `request` in `event`.
pub(crate) fn message_of(event: &Value, request: &DeploymentRequest) -> String {
    event["Records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            serde_json::from_str::<Value>(r["body"].as_str().unwrap()).unwrap()["deployment_id"]
                == request.deployment_id
        })
        .and_then(|r| r["messageId"].as_str())
        .unwrap_or_else(|| panic!("{} is not in the batch {event}", request.deployment_id))
        .to_owned()
}

pub(crate) fn failures(response: &SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

fn dispatcher(fx: &AwsFixture) -> SqsDispatcher {
    dispatcher_on(fx, Arc::new(fx.store.clone()), fx.sqs.clone())
}

/// The dispatcher on `fx`'s queues, reaching the table through `store` and SQS through `sqs`
/// (a counting proxy's clients, say), trusting the test CA's targets.
pub(crate) fn dispatcher_on(fx: &AwsFixture, store: Arc<dyn Store>, sqs: aws_sdk_sqs::Client) -> SqsDispatcher {
    let sender = Sender::trusting(SenderConfig::new(true), test_ca_roots()).unwrap();
    SqsDispatcher::new(
        Dispatcher {
            store,
            sender,
            policy: RetryPolicy::default(),
        },
        sqs,
        fx.queues.deployments.url.clone(),
        fx.queues.pull.url.clone(),
    )
}

async fn deployment(fx: &AwsFixture, request: &DeploymentRequest) -> DeploymentRecord {
    fx.store
        .get_deployment("acme", &request.deployment_id)
        .await
        .unwrap()
        .unwrap()
}

/// Each request was signed for the test secret, as a receiver verifies it.
fn assert_signed(received: &[Received]) {
    let now = u64::try_from(autodeploy_api::util::now_unix()).unwrap();
    for r in received {
        let checked = verify(
            &secret(),
            &r.webhook_id,
            &r.timestamp,
            &r.signature,
            &r.body,
            now,
            DEFAULT_TOLERANCE_SECS,
        );
        assert_eq!(checked, Ok(()), "{}", r.webhook_id);
    }
}

/// A batch with two groups: `api`'s first message fails (its attempt was in progress when an
/// earlier instance died, and the target answers 503), so it and `api`'s later message are
/// reported, in order; `web`'s is delivered. Handed over again, the older `api` deployment is
/// superseded by the newer one, which is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_fails_is_reported_from_its_failure_on_and_the_other_is_delivered() {
    let fx = aws_fixture().await;
    let TwoGroups {
        api,
        web,
        older,
        web_deployment,
        newer,
    } = two_groups(&fx, &[503, 200], &[204]).await;

    let dispatcher = dispatcher(&fx);
    let (event, raw) = next_batch(&fx).await;
    assert_eq!(event.records.len(), 3, "{raw}");
    let (response, tally) = dispatcher.handle(event, None).await;
    assert_eq!(
        failures(&response),
        vec![message_of(&raw, &older), message_of(&raw, &newer)],
        "the failed message and its later group-mate, in order"
    );
    assert_eq!(
        tally,
        DispatchTally {
            delivered: 1,
            retried: 1,
            ..DispatchTally::default()
        }
    );
    let delivered = deployment(&fx, &web_deployment).await;
    assert_eq!(delivered.status, DeploymentStatus::Delivered);
    let retried = deployment(&fx, &older).await;
    assert_eq!(retried.status, DeploymentStatus::Queued);
    assert_eq!(retried.attempts, 2);
    let error = retried.last_error.unwrap_or_default();
    assert!(error.starts_with("the target answered 503"), "{error}");
    assert!(retried.next_attempt_at.is_some());
    let untried = deployment(&fx, &newer).await;
    assert_eq!(untried.status, DeploymentStatus::Queued);
    assert_eq!(untried.attempts, 0, "not tried after its group-mate failed");
    let to_api: Vec<String> = api.received().iter().map(|r| r.webhook_id.clone()).collect();
    assert_eq!(to_api, vec![older.deployment_id.clone()]);
    let to_web: Vec<String> = web.received().iter().map(|r| r.webhook_id.clone()).collect();
    assert_eq!(to_web, vec![web_deployment.deployment_id.clone()]);
    assert_signed(&api.received());
    assert_signed(&web.received());

    // Handed over again once the retry is due (in one batch or more): latest wins.
    let mut tally = DispatchTally::default();
    while deployment(&fx, &newer).await.status != DeploymentStatus::Delivered {
        let (event, raw) = next_batch(&fx).await;
        let (response, handled) = dispatcher.handle(event, None).await;
        assert!(failures(&response).is_empty(), "{response:?} {raw}");
        tally.delivered += handled.delivered;
        assert_eq!(handled.retried + handled.failed + handled.errors, 0, "{handled:?}");
    }
    assert_eq!(tally.delivered, 1);
    assert_eq!(deployment(&fx, &older).await.status, DeploymentStatus::Superseded);
    assert_eq!(deployment(&fx, &newer).await.status, DeploymentStatus::Delivered);
    let to_api: Vec<String> = api.received().iter().map(|r| r.webhook_id.clone()).collect();
    assert_eq!(to_api, vec![older.deployment_id.clone(), newer.deployment_id.clone()]);
}

/// A 503 is retried through the queue with the same `webhook-id`; a 410 fails at once and is
/// not handed over again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_with_the_same_webhook_id_and_a_410_fails_at_once() {
    let fx = aws_fixture().await;
    let store: &dyn Store = &fx.store;
    let busy = service_on_receiver(store, "api", &[503, 202]).await;
    let gone = service_on_receiver(store, "old", &[410]).await;
    let retried = record(store, "api", "a..b").await;
    let refused = record(store, "old", "a..b").await;
    send(&fx, &[&retried, &refused]).await;

    let dispatcher = dispatcher(&fx);
    let (event, raw) = next_batch(&fx).await;
    let (response, tally) = dispatcher.handle(event, None).await;
    assert_eq!(failures(&response), vec![message_of(&raw, &retried)]);
    assert_eq!((tally.retried, tally.failed), (1, 1));
    let failed = deployment(&fx, &refused).await;
    assert_eq!(failed.status, DeploymentStatus::Failed);
    let error = failed.last_error.unwrap_or_default();
    assert!(error.contains("410"), "{error}");
    let waiting = deployment(&fx, &retried).await;
    assert_eq!(waiting.status, DeploymentStatus::Queued);
    assert!(waiting.last_error.unwrap_or_default().contains("503"));

    let (event, raw) = next_batch(&fx).await;
    assert_eq!(event.records.len(), 1, "only the retried message comes back: {raw}");
    let (response, tally) = dispatcher.handle(event, None).await;
    assert!(failures(&response).is_empty());
    assert_eq!(tally.delivered, 1);
    let delivered = deployment(&fx, &retried).await;
    assert_eq!(delivered.status, DeploymentStatus::Delivered);
    assert_eq!(delivered.attempts, 2);
    let ids: Vec<String> = busy.received().iter().map(|r| r.webhook_id.clone()).collect();
    assert_eq!(
        ids,
        vec![retried.deployment_id.clone(); 2],
        "one webhook-id on every attempt"
    );
    assert_signed(&busy.received());
    assert_eq!(gone.received().len(), 1);
}

/// A deployment whose service was deleted before the dispatcher reached it is cancelled, as
/// the standalone server cancels it: nothing sent to the target, nothing forwarded to the pull
/// queue, the message done with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_of_a_deleted_service_is_cancelled() {
    let fx = aws_fixture().await;
    let (receiver, request) = queued_then_deleted(&fx, "gone").await;
    handled_as_cancelled(&fx, &request).await;
    assert!(receiver.received().is_empty());
}

/// Service `id` on a new receiver, one deployment of it on the queue, then the service deleted:
/// the receiver, and the deployment.
async fn queued_then_deleted(fx: &AwsFixture, id: &str) -> (Receiver, DeploymentRequest) {
    let store: &dyn Store = &fx.store;
    let receiver = service_on_receiver(store, id, &[202]).await;
    let request = record(store, id, "a..b").await;
    send(fx, &[&request]).await;
    assert!(store.delete_service("acme", id, None).await.unwrap());
    (receiver, request)
}

/// The next batch handled: `request`'s deployment cancelled as its deleted service's (its
/// message done with), nothing forwarded to the pull queue.
async fn handled_as_cancelled(fx: &AwsFixture, request: &DeploymentRequest) {
    let (event, _) = next_batch(fx).await;
    let (response, tally) = dispatcher(fx).handle(event, None).await;
    assert!(failures(&response).is_empty());
    assert_eq!((tally.failed, tally.delivered, tally.forwarded), (1, 0, 0));
    let cancelled = deployment(fx, request).await;
    assert_eq!(cancelled.status, DeploymentStatus::Failed);
    assert_eq!(
        cancelled.last_error.as_deref(),
        Some(autodeploy_api::store::CANCELLED_SERVICE_DELETED)
    );
    assert!(receive_all(&fx.sqs, &fx.queues.pull.url).await.is_empty());
}

/// A service deleted and created again under its id before the dispatcher reached the deleted
/// one's deployment: the deployment is cancelled as the deleted service's, neither sent to the
/// new one's target nor forwarded to the pull queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_of_a_deleted_service_is_not_the_recreated_ones() {
    let fx = aws_fixture().await;
    let store: &dyn Store = &fx.store;
    let (old, request) = queued_then_deleted(&fx, "again").await;
    // Created again in a later second than the deployment was requested, on another target.
    let new = Receiver::start(&[202]).await;
    put_webhook_target(store, "again-new", &new.url).await;
    let requested = autodeploy_api::util::rfc3339_unix(&request.requested_at).unwrap();
    let later = autodeploy_api::util::unix_rfc3339(requested + 1);
    put_service_created(store, "again", Some("again-new"), &later).await;

    handled_as_cancelled(&fx, &request).await;
    assert!(old.received().is_empty() && new.received().is_empty());
}

/// A service without a target: its message goes, unchanged, to the pull queue, with the same
/// group and deduplication id; the deployment stays QUEUED for the outside engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_a_target_is_forwarded_to_the_pull_queue() {
    let fx = aws_fixture().await;
    let request = queued_without_target(&fx).await;

    let (event, raw) = next_batch(&fx).await;
    let (response, tally) = dispatcher(&fx).handle(event, None).await;
    assert!(failures(&response).is_empty());
    assert_eq!(
        tally,
        DispatchTally {
            forwarded: 1,
            ..DispatchTally::default()
        }
    );
    let forwarded = receive_all(&fx.sqs, &fx.queues.pull.url).await;
    assert_eq!(forwarded.len(), 1, "{forwarded:?}");
    assert_eq!(forwarded[0].group, "acme/cli");
    assert_eq!(forwarded[0].dedup, request.deployment_id);
    let original: Value = serde_json::from_str(raw["Records"][0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(forwarded[0].body, original, "forwarded unchanged");
    let record = deployment(&fx, &request).await;
    assert_eq!(record.status, DeploymentStatus::Queued);
    assert_eq!(record.attempts, 0);
    // Nothing was delivered anywhere, and nothing else reached the pull queue.
    assert!(receive_all(&fx.sqs, &fx.queues.pull.url).await.is_empty());
}

/// A message that is not a deployment request is handed over again (and, its receives spent,
/// dead-lettered), without holding other groups back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_a_deployment_is_left_on_the_queue() {
    let fx = aws_fixture().await;
    queued_without_target(&fx).await;
    fx.sqs
        .send_message()
        .queue_url(&fx.queues.deployments.url)
        .message_body("not json")
        .message_group_id("acme/other")
        .message_deduplication_id("junk")
        .send()
        .await
        .unwrap();

    let (event, raw) = next_batch(&fx).await;
    assert_eq!(event.records.len(), 2, "{raw}");
    let junk = raw["Records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["body"] == "not json")
        .and_then(|r| r["messageId"].as_str())
        .unwrap()
        .to_owned();
    let (response, tally) = dispatcher(&fx).handle(event, None).await;
    assert_eq!(failures(&response), vec![junk]);
    assert_eq!((tally.errors, tally.forwarded), (1, 1));
}

/// A message handed back before its retry is due (its hiding failed, or the visibility
/// timeout ran out first) attempts nothing: it is hidden again until the retry is due, so the
/// target's `Retry-After` holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_back_before_its_retry_is_due_is_hidden_again_untried() {
    let fx = aws_fixture().await;
    let store: &dyn Store = &fx.store;
    let target = service_on_receiver(store, "api", &[202]).await;
    let request = record(store, "api", "a..b").await;
    send(&fx, &[&request]).await;
    let id = &request.deployment_id;
    assert!(matches!(
        store.begin_attempt("acme", id).await.unwrap(),
        AttemptStart::Started(_)
    ));
    let due = autodeploy_api::util::now_unix() + 3600;
    let later = AttemptEnd::Retry {
        error: "the target answered 429".to_owned(),
        next_attempt_unix: due,
    };
    store.end_attempt("acme", id, &later).await.unwrap();
    let waiting = deployment(&fx, &request).await;

    let (event, raw) = next_batch(&fx).await;
    let (response, tally) = dispatcher(&fx).handle(event, None).await;
    assert_eq!(failures(&response), vec![message_of(&raw, &request)]);
    assert_eq!(tally, DispatchTally::default());
    assert!(
        target.received().is_empty(),
        "nothing is attempted before the retry is due"
    );
    assert_eq!(deployment(&fx, &request).await, waiting);
    let visible = fx
        .sqs
        .receive_message()
        .queue_url(&fx.queues.deployments.url)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    assert!(
        visible.messages().is_empty(),
        "hidden until the retry is due: {visible:?}"
    );
}

/// With too little of the invocation left, no attempt starts: every message is handed over
/// again, untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_time_nothing_is_tried_and_everything_comes_back() {
    let fx = aws_fixture().await;
    let request = queued_without_target(&fx).await;
    let (event, raw) = next_batch(&fx).await;
    let (response, tally) = dispatcher(&fx).handle(event, Some(std::time::SystemTime::now())).await;
    assert_eq!(failures(&response), vec![message_of(&raw, &request)]);
    assert_eq!(tally, DispatchTally::default());
    assert!(receive_all(&fx.sqs, &fx.queues.pull.url).await.is_empty());
}
